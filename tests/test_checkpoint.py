"""Checkpoint helpers: exact env and RNG state round trips through torch.load(weights_only=True)."""

import io
import os
import pickle
import random
import stat

import gymnasium as gym
import numpy as np
import pytest
import torch

from explorler_optim.checkpoint import (
    env_state,
    load_env_state,
    load_rng_state,
    load_run_state,
    rng_state,
    run_state,
    save_checkpoint,
)


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def training_env(env_id):
    """The scripts' wrapper stack: every kind of state (running stats, queues, lambdas, RNG)."""
    env = gym.make(env_id, max_episode_steps=60)
    env = gym.wrappers.FlattenObservation(env)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = gym.wrappers.ClipAction(env)
    env = gym.wrappers.NormalizeObservation(env)
    env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
    env = gym.wrappers.NormalizeReward(env, gamma=0.99)
    return gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))


def vector_env(env_id):
    return gym.vector.SyncVectorEnv(
        [lambda: training_env(env_id)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Pendulum-v1"])
def test_a_restored_env_continues_exactly_mid_episode_and_across_resets(env_id):
    envs = vector_env(env_id)
    envs.reset(seed=1)
    envs.action_space.seed(1)
    for _ in range(25):  # mid-episode
        envs.step(envs.action_space.sample())
    saved = roundtrip([env_state(env) for env in envs.envs])
    actions = [envs.action_space.sample() for _ in range(200)]  # crosses several 60-step episodes
    expected = [envs.step(action) for action in actions]

    restored = vector_env(env_id)
    restored.reset(seed=12345)  # different start: everything must come from the saved state
    for env, state in zip(restored.envs, saved, strict=True):
        load_env_state(env, state)
    for action, (obs, reward, terminated, truncated, info) in zip(actions, expected, strict=True):
        obs2, reward2, terminated2, truncated2, info2 = restored.step(action)
        assert np.array_equal(obs, obs2) and np.array_equal(reward, reward2)
        assert np.array_equal(terminated, terminated2) and np.array_equal(truncated, truncated2)
        if "episode" in info:
            assert np.array_equal(info["episode"]["r"], info2["episode"]["r"])


def test_loading_into_differently_wrapped_env_is_a_clear_error():
    env = training_env("Pendulum-v1")
    env.reset(seed=0)
    saved = env_state(env)
    with pytest.raises(ValueError, match="same wrappers"):
        load_env_state(gym.make("Pendulum-v1"), saved)


def test_an_attribute_that_is_not_plain_data_is_named():
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    env.unwrapped.socket = object()
    with pytest.raises(TypeError, match="PendulumEnv.socket"):
        env_state(env)


def test_rng_state_round_trip():
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    saved = roundtrip(rng_state())
    draws = (random.random(), np.random.rand(3), torch.rand(3))
    load_rng_state(saved)
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert draws[0] == again[0] and np.array_equal(draws[1], again[1]) and torch.equal(draws[2], again[2])


def test_save_checkpoint_is_atomic_and_readable_by_others(tmp_path):
    path = tmp_path / "deep" / "run.pt"
    save_checkpoint(path, {"step": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_checkpoint(path, {"bad": lambda: 0})  # torch.save cannot pickle a lambda
    assert torch.load(path, weights_only=True) == {"step": 1}  # the old file survived the failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt"]  # no temp file left behind


def _normalized_vector_env(n=2):
    def make():
        return gym.wrappers.NormalizeReward(gym.wrappers.NormalizeObservation(gym.make("Pendulum-v1")))

    return gym.vector.SyncVectorEnv([make] * n)


def test_run_state_resumes_vector_env_and_generators_exactly(tmp_path):
    envs = _normalized_vector_env()
    obs, _ = envs.reset(seed=3)
    for _ in range(5):
        obs = envs.step(np.ones((2, 1)))[0]
    path = tmp_path / "run.pt"
    save_checkpoint(path, run_state(envs, torch.as_tensor(obs), torch.tensor([0.0, 1.0])))
    expected = [envs.step(np.ones((2, 1)))[0] for _ in range(3)], torch.rand(3)

    saved = torch.load(path, weights_only=True)
    assert {"obs_rms", "return_rms", "envs", "rng", "next_obs", "next_done"} <= saved.keys()
    fresh = _normalized_vector_env()
    fresh.reset(seed=99)
    next_obs, next_done = load_run_state(fresh, saved)
    assert torch.equal(next_obs, torch.as_tensor(obs)) and next_done.tolist() == [0.0, 1.0]
    got = [fresh.step(np.ones((2, 1)))[0] for _ in range(3)], torch.rand(3)
    assert all(np.array_equal(a, b) for a, b in zip(expected[0], got[0], strict=True))
    assert torch.equal(expected[1], got[1])


def test_run_state_takes_the_numpy_arrays_a_ctrl_c_right_after_envs_step_leaves():
    # the scripts convert envs.step's arrays on the next line; an interrupt in between must still save
    envs = _normalized_vector_env()
    obs, _ = envs.reset(seed=3)
    obs, _, terminations, truncations, _ = envs.step(np.ones((2, 1)))
    saved = roundtrip(run_state(envs, obs, np.logical_or(terminations, truncations)))
    next_obs, next_done = load_run_state(_normalized_vector_env(), saved)
    assert next_obs.dtype == next_done.dtype == torch.float32
    assert torch.equal(next_obs, torch.Tensor(obs)) and next_done.tolist() == [0.0, 0.0]


def test_load_run_state_names_the_fix_for_old_checkpoints_and_other_env_counts():
    envs = _normalized_vector_env()
    obs, _ = envs.reset(seed=0)
    state = run_state(envs, torch.as_tensor(obs), torch.zeros(2))
    with pytest.raises(KeyError, match="load_normalization_state"):
        load_run_state(envs, {k: v for k, v in state.items() if k != "envs"})
    with pytest.raises(ValueError, match="build as many"):
        load_run_state(_normalized_vector_env(3), state)


def test_another_scripts_checkpoint_is_refused_by_name(tmp_path):
    from types import SimpleNamespace

    from explorler_optim.rl.harness import RunCheckpoint

    path = tmp_path / "trpo.pt"
    torch.save({"format": "explorler-trpo-continuous/1", "envs": [], "run_name": "r", "global_step": 0}, path)
    args = SimpleNamespace(
        resume=str(path),
        init_from=None,
        checkpoint_path=None,
        exp_name="ppo",
        env_id="Hopper-v5",
        seed=1,
        save_model=False,
    )
    with pytest.raises(
        SystemExit, match="is a 'explorler-trpo-continuous/1' checkpoint and this script reads"
    ):
        RunCheckpoint(args, "explorler-ppo-continuous/1")
    assert RunCheckpoint(args, "explorler-trpo-continuous/1").run_name == "r"
    fork = SimpleNamespace(**{**vars(args), "resume": None, "init_from": str(path)})
    with pytest.raises(SystemExit, match="--init-from: .* use the script that wrote it"):
        RunCheckpoint(fork, "explorler-ppo-continuous/1").restore({}, None, None, print)
