"""Tests for explorler_optim.rl: PolicyEvaluator, ObsNormalizer, racing, workers and Ray."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from explorler_optim.rl import ObsNormalizer, PolicyEvaluator, racing_schedule
from tests.conftest import HANG_GUARD_S

torch.set_num_threads(1)

PENDULUM = functools.partial(gym.make, "Pendulum-v1", max_episode_steps=20)


class CountEnv(gym.Env):
    """Tiny env with known returns: episode length 2 + seed % 5, reward = action + noise(seed).

    obs = [t / 10, 1]; the reward of each step is the (clipped) action plus a per-episode offset
    drawn from the reset seed, so episodes of one candidate differ but every candidate sees the
    same offsets (common random numbers).
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, noise: float = 0.0):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.noise = noise
        self.t = 0
        self.length = 2
        self.offset = 0.0

    def _obs(self):
        return np.array([self.t / 10.0, 1.0])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed == 999:
            raise RuntimeError("boom: CountEnv cannot reset with seed 999")
        self.t = 0
        self.length = 2 + (seed % 5)
        self.offset = self.noise * float(self.np_random.standard_normal())
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=np.float32))
        self.t += 1
        reward = float(action[0]) + self.offset
        return self._obs(), reward, self.t >= self.length, False, {}


def count_env(noise: float = 0.0):
    return CountEnv(noise)


def bias_policy():
    """Linear(2, 1) whose action is its bias (weights zero): easy to reason about."""
    pol = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        pol[0].weight.zero_()
        pol[0].bias.zero_()
    return pol


def pendulum_policy(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def make_candidates(params, n, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [p.detach()[None] + scale * torch.randn((n,) + p.shape, generator=g) for p in params]


def sequential_scores(policy, make_env, params, candidates, episodes, seed=0, normalizer=None):
    """The plain in-place loop: load each candidate, run episodes one by one on one env."""
    env = make_env()
    saved = [p.detach().clone() for p in params]
    out = []
    try:
        for i in range(candidates[0].shape[0]):
            with torch.no_grad():
                for p, c in zip(params, candidates, strict=True):
                    p.copy_(c[i])
            total = 0.0
            for k in range(episodes):
                obs, _ = env.reset(seed=seed + k)
                done = False
                while not done:
                    x = normalizer(obs) if normalizer is not None else np.float32(obs)
                    with torch.no_grad():
                        a = policy(torch.as_tensor(x)[None])[0].numpy()
                    a = np.clip(a, env.action_space.low, env.action_space.high)
                    obs, r, term, trunc, _ = env.step(a)
                    total += float(r)
                    done = term or trunc
            out.append(total / episodes)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return np.array(out)


# ------------------------------------------------------------------------------------ basics


def test_imports_stay_light():
    """`import explorler_optim` does not import rl/gymnasium/ray; rl itself does not import ray."""
    code = (
        "import sys, explorler_optim\n"
        "assert 'explorler_optim.rl' not in sys.modules\n"
        "assert 'gymnasium' not in sys.modules and 'ray' not in sys.modules\n"
        "import explorler_optim.rl\n"
        "assert 'ray' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=HANG_GUARD_S)


def test_known_returns_and_exact_env_steps():
    pol = bias_policy()
    params = list(pol.parameters())
    biases = torch.tensor([-0.5, 0.25, 0.75, 2.0])  # 2.0 is clipped to 1.0
    cands = [torch.zeros(4, 1, 2), biases[:, None]]
    ev = PolicyEvaluator(pol, count_env, episodes=3, seed=7)
    scores = ev.evaluate_many(params, cands)
    lengths = np.array([2 + (7 + k) % 5 for k in range(3)])  # 4, 5, 6
    expected = np.clip(biases.numpy(), -1, 1) * lengths.mean()
    assert scores.dtype == torch.float64 and scores.shape == (4,)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6)
    assert ev.last_env_steps == 4 * lengths.sum()
    assert ev.last_episodes == 12
    first = ev.last_env_steps
    # __call__ scores the current parameters (bias 0 -> return 0) over the same episodes
    assert ev() == pytest.approx(0.0)
    assert ev.last_env_steps == lengths.sum()
    assert ev.total_env_steps == first + lengths.sum()
    assert ev.last_seconds > 0
    # max_episode_steps caps episodes; settable seed changes the episodes
    ev2 = PolicyEvaluator(pol, count_env, episodes=3, seed=7, max_episode_steps=5)
    ev2.evaluate_many(params, cands)
    assert ev2.last_env_steps == 4 * np.minimum(lengths, 5).sum()
    ev2.seed = 0
    ev2.evaluate_many(params, cands)
    assert ev2.last_env_steps == 4 * np.minimum([2, 3, 4], 5).sum()
    ev.close()
    ev2.close()


def test_time_limit_wrapper_is_honoured():
    pol = bias_policy()
    ev = PolicyEvaluator(pol, lambda: gym.wrappers.TimeLimit(CountEnv(), 3), episodes=2, seed=3)
    ev.evaluate_many(list(pol.parameters()), [torch.zeros(2, 1, 2), torch.ones(2, 1)])
    assert ev.last_env_steps == 2 * (3 + 3)  # lengths 5 and 6 cut to 3
    ev.close()


def test_batched_matches_sequential_loop_and_call():
    pol = pendulum_policy()
    params = list(pol.parameters())
    cands = make_candidates(params, 5, 0.3)
    before = [p.detach().clone() for p in params]
    seq = sequential_scores(pol, PENDULUM, params, cands, episodes=2, seed=3)
    ev = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=3)
    fast = ev.evaluate_many(params, cands).numpy()
    np.testing.assert_allclose(fast, seq, rtol=1e-4, atol=1e-3)
    assert ev.last_env_steps == 5 * 2 * 20
    ev_vmap = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=3, fast_path=False)
    np.testing.assert_allclose(ev_vmap.evaluate_many(params, cands).numpy(), seq, rtol=1e-4, atol=1e-3)
    # parameters are untouched by evaluate_many
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)
    # __call__ == evaluate_many of the current parameters as one candidate
    one = ev.evaluate_many(params, [p.detach()[None] for p in params])
    assert ev() == pytest.approx(float(one[0]), abs=1e-9)
    ev.close()
    ev_vmap.close()


class TwoHead(nn.Module):
    """Not a Sequential: exercises the torch.func.functional_call + vmap path."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 8)
        self.head = nn.Linear(8, 1)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        return self.head(torch.relu(self.body(x))) * self.scale


def test_partial_params_ignored_params_and_generic_module():
    torch.manual_seed(0)
    pol = TwoHead()
    logstd = nn.Parameter(torch.zeros(1, 1))  # explored but unused by the policy: ignored
    params = [pol.head.weight, pol.head.bias, logstd]
    g = torch.Generator().manual_seed(0)
    cands = [
        pol.head.weight.detach()[None] + 0.5 * torch.randn(3, 1, 8, generator=g),
        pol.head.bias.detach()[None] + 0.5 * torch.randn(3, 1, generator=g),
        torch.randn(3, 1, 1, generator=g),
    ]
    ev = PolicyEvaluator(pol, PENDULUM, episodes=1, seed=0)
    got = ev.evaluate_many(params, cands).numpy()
    seq = sequential_scores(pol, PENDULUM, params[:2], cands[:2], episodes=1, seed=0)
    np.testing.assert_allclose(got, seq, rtol=1e-4, atol=1e-3)
    # unexplored params use their current values: changing body changes the scores
    with torch.no_grad():
        pol.body.weight.mul_(-1)
    seq2 = sequential_scores(pol, PENDULUM, params[:2], cands[:2], episodes=1, seed=0)
    np.testing.assert_allclose(ev.evaluate_many(params, cands).numpy(), seq2, rtol=1e-4, atol=1e-3)
    ev.close()


def test_errors_name_the_fix():
    pol = bias_policy()
    other = nn.Linear(2, 1)
    ev = PolicyEvaluator(pol, count_env, episodes=1)
    with pytest.raises(ValueError, match="actor_mean"):
        ev.evaluate_many(list(other.parameters()), [torch.zeros(2, 1, 2), torch.zeros(2, 1)])
    with pytest.raises(ValueError, match=r"\(N, 1, 2\)"):
        ev.evaluate_many([pol[0].weight], [torch.zeros(2, 2, 1)])
    with pytest.raises(ValueError, match="same N"):
        ev.evaluate_many(list(pol.parameters()), [torch.zeros(2, 1, 2), torch.zeros(3, 1)])
    with pytest.raises(TypeError):
        PolicyEvaluator(lambda x: x, count_env)
    assert ev.evaluate_many(list(pol.parameters()), [torch.zeros(0, 1, 2), torch.zeros(0, 1)]).shape == (0,)
    ev.close()
    ev.close()  # idempotent


# ---------------------------------------------------------------------------- normalisation


def test_obs_normalizer_from_env_is_frozen_and_matches_training_transform():
    env = gym.wrappers.NormalizeObservation(PENDULUM())
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(30):
        env.step(env.action_space.sample())
    norm = ObsNormalizer.from_env(env)
    mean0, var0 = env.obs_rms.mean.copy(), env.obs_rms.var.copy()
    np.testing.assert_array_equal(norm.mean, mean0)
    assert norm.epsilon == env.epsilon and norm.clip == 10.0
    # same transform as NormalizeObservation + TransformObservation(clip 10)
    obs = np.array([0.3, -0.9, 7.5])
    expected = np.clip(np.float32((obs - mean0) / np.sqrt(var0 + env.epsilon)), -10, 10)
    np.testing.assert_array_equal(norm(obs), expected)
    # works through outer wrappers and for vector envs (envs.envs[0])
    outer = gym.wrappers.ClipAction(env)
    assert np.array_equal(ObsNormalizer.from_env(outer).var, var0)
    with pytest.raises(ValueError, match="NormalizeObservation"):
        ObsNormalizer.from_env(PENDULUM())

    pol = pendulum_policy()
    params = list(pol.parameters())
    cands = make_candidates(params, 3, 0.3)
    ev = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=5, obs_normalizer=norm)
    got = ev.evaluate_many(params, cands).numpy()
    seq = sequential_scores(pol, PENDULUM, params, cands, episodes=2, seed=5, normalizer=norm)
    np.testing.assert_allclose(got, seq, rtol=1e-4, atol=1e-3)
    ev()
    # evaluation never changes the statistics (neither the wrapper's nor the normaliser's)
    np.testing.assert_array_equal(env.obs_rms.mean, mean0)
    np.testing.assert_array_equal(env.obs_rms.var, var0)
    np.testing.assert_array_equal(norm.mean, mean0)
    np.testing.assert_array_equal(norm.var, var0)
    # a normaliser changes the scores vs raw observations, and is a settable attribute
    ev.obs_normalizer = ObsNormalizer(torch.zeros(3), torch.ones(3) * 4.0)
    raw = ev.evaluate_many(params, cands).numpy()
    assert not np.allclose(raw, got)
    ev.close()


# ---------------------------------------------------------------------------- parallel paths


def test_workers_match_single_process():
    pol = pendulum_policy(2)
    params = list(pol.parameters())
    cands = make_candidates(params, 5, 0.3, seed=4)
    norm = ObsNormalizer(np.zeros(3), np.ones(3) * 2.0)
    ev1 = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=1, obs_normalizer=norm)
    with PolicyEvaluator(pol, PENDULUM, episodes=2, seed=1, obs_normalizer=norm, workers=2) as ev2:
        a = ev1.evaluate_many(params, cands).numpy()
        b = ev2.evaluate_many(params, cands).numpy()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)
        assert ev2.last_env_steps == ev1.last_env_steps == 5 * 2 * 20
        # the pool persists across calls; unexplored params are sent with every call
        pool = ev2._pool
        with torch.no_grad():
            pol[2].bias.add_(0.5)
        sub = [pol[0].weight, pol[0].bias]
        c = ev1.evaluate_many(sub, cands[:2]).numpy()
        d = ev2.evaluate_many(sub, cands[:2]).numpy()
        np.testing.assert_allclose(d, c, rtol=1e-5, atol=1e-4)
        assert ev2._pool is pool
        assert ev2() == pytest.approx(ev1(), rel=1e-5, abs=1e-4)
        procs = list(pool.procs)
    assert ev2._pool is None and not any(p.is_alive() for p in procs)
    ev1.close()


def test_workers_count_env_steps_exactly_and_race():
    pol = bias_policy()
    params = list(pol.parameters())
    n = 12
    biases = torch.linspace(-0.9, 0.9, n)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    cands = [torch.zeros(n, 1, 2), biases[:, None]]
    make = functools.partial(count_env, 0.05)
    ev1 = PolicyEvaluator(pol, make, episodes=3, seed=2, racing=True)
    ev2 = PolicyEvaluator(pol, make, episodes=3, seed=2, racing=True, workers=2)
    try:
        a = ev1.evaluate_many(params, cands)
        b = ev2.evaluate_many(params, cands)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
        assert ev1.last_env_steps == ev2.last_env_steps
        assert torch.equal(ev1.last_episode_counts, ev2.last_episode_counts)
        # an error inside a worker is raised here (with its traceback), it does not hang, and
        # the pool stays usable
        ev2.seed = 999
        with pytest.raises(RuntimeError, match="boom"):
            ev2.evaluate_many(params, cands)
        ev2.seed = 2
        np.testing.assert_allclose(ev2.evaluate_many(params, cands).numpy(), a.numpy(), rtol=1e-6)
    finally:
        ev1.close()
        ev2.close()


# ---------------------------------------------------------------------------------- racing


def test_racing_schedule_budget():
    sched = racing_schedule(21, 3)
    assert sched[0] == (21, 1) and sched[-1][1] == 3
    cost = sched[0][0] + sum(s * (e - pe) for (s, e), (_, pe) in zip(sched[1:], sched[:-1], strict=True))
    assert cost <= 0.5 * 21 * 3
    for n, e in [(21, 3), (21, 10), (11, 3), (5, 3), (40, 5)]:
        sched = racing_schedule(n, e, eta=2.0)
        surv = [s for s, _ in sched]
        assert surv == sorted(surv, reverse=True) and surv[-1] >= 1
        assert racing_schedule(n, 1) == [(n, 1)]
    assert racing_schedule(2, 3) == [(2, 3)]


def test_racing_finds_exhaustive_winner_with_fewer_episodes():
    pol = bias_policy()
    params = list(pol.parameters())
    n = 21
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    biases = torch.linspace(-0.95, 0.95, n)[perm]  # well separated (gap 0.095 per step)
    cands = [torch.zeros(n, 1, 2), biases[:, None]]
    make = functools.partial(count_env, 0.3)  # episode noise, common to all candidates
    full = PolicyEvaluator(pol, make, episodes=3, seed=11)
    race = PolicyEvaluator(pol, make, episodes=3, seed=11, racing=True)
    s_full = full.evaluate_many(params, cands)
    s_race = race.evaluate_many(params, cands)
    best = int(torch.argmax(s_full))
    assert int(torch.argmax(s_race)) == best == int(torch.argmax(biases))
    counts = race.last_episode_counts
    assert int(counts[best]) == 3 == int(counts.max())
    assert race.last_episodes <= 0.5 * full.last_episodes
    assert race.last_env_steps < full.last_env_steps
    # finalists' scores equal their exhaustive scores (same seeds: common random numbers)
    final = counts == 3
    np.testing.assert_allclose(s_race[final].numpy(), s_full[final].numpy(), rtol=1e-9)
    # an eliminated candidate reports its mean over the episodes it played (or less)
    assert bool((s_race[~final] < s_race[best]).all())
    full.close()
    race.close()


def test_racing_winner_always_played_most_episodes():
    # the last episode is bad for everyone: finalists' 3-episode means fall below the means of
    # candidates eliminated after 1-2 episodes; those are capped so a finalist still wins
    class BadLastEpisode(CountEnv):
        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            return obs, r - (10.0 if self.np_random_seed == 2 else 0.0), term, trunc, info

    pol = bias_policy()
    params = list(pol.parameters())
    biases = torch.tensor([0.1, 0.2, 0.3, -0.9, 0.15, 0.05, 0.25, 0.0, -0.1, 0.12, -0.3, 0.02])
    assert racing_schedule(12, 3, eta=2) == [(12, 1), (4, 2), (2, 3)]
    ev = PolicyEvaluator(pol, BadLastEpisode, episodes=3, seed=0, racing=True, racing_eta=2)
    scores = ev.evaluate_many(params, [torch.zeros(12, 1, 2), biases[:, None]])
    counts = ev.last_episode_counts
    assert int(counts.min()) < int(counts.max()) == 3
    best = int(torch.argmax(scores))
    assert best == 2 and int(counts[best]) == 3
    # without the cap, a candidate eliminated after 1-2 episodes would have the top mean
    means = np.nanmean(ev.last_returns.numpy(), axis=1)
    assert counts[int(np.argmax(means))] < 3
    # a single survivor ends the race early (more episodes would not change the pick)
    assert racing_schedule(9, 3, eta=2)[-1][0] == 1
    scores = ev.evaluate_many(params, [torch.zeros(9, 1, 2), biases[:9, None]])
    assert int(ev.last_episode_counts.max()) == 2 == int(ev.last_episode_counts[int(scores.argmax())])
    ev.close()


# --------------------------------------------------------------------------------- Ray


@pytest.mark.slow
@pytest.mark.ray
def test_ray_backend_matches_local():
    ray = pytest.importorskip("ray", reason="Ray is optional (`pip install ray`)")
    pol = pendulum_policy(5)
    params = list(pol.parameters())
    cands = make_candidates(params, 3, 0.3, seed=9)
    local = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=4)
    expected = local.evaluate_many(params, cands).numpy()
    local.close()
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ev = PolicyEvaluator(pol, PENDULUM, episodes=2, seed=4, workers=2, backend="ray")
        got = ev.evaluate_many(params, cands).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
        assert ev.last_env_steps == 3 * 2 * 20
        ev.close()
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------- with the core optimizer


def test_evaluate_many_drives_explore():
    import explorler_optim as core

    pol = bias_policy()
    logstd = nn.Parameter(torch.zeros(1, 1))
    explore_params = list(pol.parameters()) + [logstd]
    opt = core.ExploRLerOptimizer(
        torch.optim.SGD(explore_params, lr=0.1), explore_params=explore_params, seed=0
    )
    for k in range(4):
        with torch.no_grad():
            pol[0].bias.fill_(0.1 * k)
            pol[0].weight.fill_(0.01 * k)
            logstd.fill_(-0.1 * k)
        opt.record()
    with torch.no_grad():
        pol[0].bias.fill_(0.0)
    ev = PolicyEvaluator(pol, count_env, episodes=2, seed=0)
    t0 = time.perf_counter()
    result = opt.explore(ev)
    assert time.perf_counter() - t0 < 30
    assert result.num_candidates == len(result.scores) > 0
    assert ev.last_env_steps > 0
    # scores are mean returns: bias b clipped to [-1, 1] times mean episode length (2 + 3) / 2
    assert result.best_score == pytest.approx(float(result.scores.max()))
    if result.committed:
        assert ev() == pytest.approx(result.best_score, abs=1e-4)
    ev.close()
