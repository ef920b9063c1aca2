"""ExploRLerCallback for Stable-Baselines3 (explorler_optim.sb3) and ObsNormalizer vs VecNormalize.

Tiny budgets on Pendulum-v1 (fixed 200-step episodes, so candidate step counts are exact).
"""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

import gymnasium as gym  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.logger import KVWriter, Logger  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize  # noqa: E402

from explorler_optim.rl import ObsNormalizer  # noqa: E402
from explorler_optim.sb3 import ExploRLerCallback, sb3_actor, sb3_actor_params  # noqa: E402

ENV = "Pendulum-v1"
N_STEPS = 64
NO_SEARCH = r"ExploRLerCallback: this learn\(\) runs"  # the warning of a call in which no search runs


def ppo(env=None, seed=0, **kwargs):
    env = env if env is not None else make_vec_env(ENV, n_envs=1, seed=seed)
    options = dict(n_steps=N_STEPS, batch_size=32, n_epochs=2, seed=seed, device="cpu")
    return PPO("MlpPolicy", env, **{**options, **kwargs})


def trpo(seed=0):
    env = make_vec_env(ENV, n_envs=1, seed=seed)
    return sb3_contrib.TRPO(
        "MlpPolicy", env, n_steps=N_STEPS, batch_size=32, n_critic_updates=2, seed=seed, device="cpu"
    )


def params_of(model):
    return [p.detach().clone() for p in model.policy.parameters()]


class Recorder(KVWriter):
    """Keeps every dumped row of SB3's logger."""

    def __init__(self):
        self.rows = []

    def write(self, key_values, key_excluded, step=0):
        self.rows.append((step, dict(key_values)))


def recording_logger():
    recorder = Recorder()
    return Logger(folder=None, output_formats=[recorder]), recorder


def pendulum_return(model, venv, seed):
    """One deterministic episode through SB3's own predict with the frozen VecNormalize stats."""
    env = gym.make(ENV)
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action[0])
        total += float(reward)
        done = terminated or truncated
    return total


# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_without_search_training_is_bit_identical_and_anchors_are_recorded(algo):
    build = ppo if algo == "ppo" else trpo
    iterations = 3
    plain = build()
    plain.learn(iterations * N_STEPS)

    model = build()
    callback = ExploRLerCallback(ENV, explore_every=100, max_anchors=1000)
    model.learn(iterations * N_STEPS, callback=callback)

    assert all(torch.equal(a, b) for a, b in zip(params_of(plain), params_of(model), strict=True))
    opt_a, opt_b = plain.policy.optimizer.state_dict(), model.policy.optimizer.state_dict()
    for key, state in opt_a["state"].items():
        assert all(torch.equal(state[k], opt_b["state"][key][k]) for k in ("exp_avg", "exp_avg_sq"))
    assert model.num_timesteps == plain.num_timesteps == iterations * N_STEPS
    per_iteration = model.n_epochs if algo == "ppo" else 1
    assert callback.iterations == iterations
    assert callback.explorer.num_anchors == iterations * per_iteration
    assert callback.searches == 0
    # the last anchor is the trained policy; the critic is never searched
    searched = {id(p) for p in callback.explorer.params}
    assert not searched & {id(p) for p in model.policy.value_net.parameters()}
    assert not searched & {id(p) for p in model.policy.mlp_extractor.value_net.parameters()}
    assert id(model.policy.log_std) in searched


def test_sb3_actor_matches_deterministic_predict():
    model = ppo()
    with torch.no_grad():
        model.policy.action_net.weight.mul_(200.0)  # push actions past the bounds: clipping matters
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    actor = sb3_actor(model.policy)
    assert isinstance(actor, torch.nn.Sequential)  # the evaluator's batched fast path
    assert {id(p) for p in actor.parameters()} <= {id(p) for p in sb3_actor_params(model.policy)}
    with torch.no_grad():
        mean = actor(torch.as_tensor(obs)).numpy()
    space = model.action_space
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(np.clip(mean, space.low, space.high), expected)


def test_search_scores_with_frozen_vecnormalize_logs_and_counts_candidate_steps():
    venv = VecNormalize(make_vec_env(ENV, n_envs=1, seed=0), clip_obs=0.5)
    model = ppo(venv)
    logger, recorder = recording_logger()
    model.set_logger(logger)
    # 4 anchors per cycle, count_eval_steps=True, no budget rule (a search costs 7x this budget)
    callback = ExploRLerCallback(ENV, explore_every=2, budget_tolerance=None)
    model.learn(4 * N_STEPS, callback=callback)

    # the search after iteration 2 scored 8 candidates (4 anchors: 4 ESA agents x 2) + the incumbent,
    # one 200-step episode each, counted in num_timesteps; that used up the budget, so the third
    # rollout stopped at its first step
    assert callback.searches == 1
    result = callback.last_result
    assert result.num_candidates == 8 and result.num_anchors == 4
    assert callback.eval_env_steps == callback.counted_eval_steps == 9 * 200
    assert model.num_timesteps == 2 * N_STEPS + 1 + 9 * 200
    assert callback.iterations == 2
    logged = {}
    for _, row in recorder.rows:
        logged.update(row)
    for key in ("best_score", "incumbent_score", "gain", "committed", "num_candidates", "distance"):
        assert f"explorler/{key}" in logged
    assert logged["explorler/eval_env_steps"] == 9 * 200
    assert logged["explorler/best_score"] == result.best_score

    # frozen statistics with VecNormalize's clip: the candidate evaluator's normaliser is a copy
    norm = callback.evaluator.obs_normalizer
    assert norm.clip == 0.5 and norm.mean is not venv.obs_rms.mean


def test_paper_accounting_search_at_end_of_learn_uses_frozen_stats(tmp_path):
    venv = VecNormalize(make_vec_env(ENV, n_envs=1, seed=1), clip_obs=0.5)
    model = ppo(venv, seed=1)
    state_file = tmp_path / "ckpt" / "explorler.pt"
    callback = ExploRLerCallback(ENV, explore_every=2, count_eval_steps=False, save_path=str(state_file))
    model.learn(2 * N_STEPS, callback=callback)
    saved = torch.load(state_file, weights_only=True)  # written at the end of learn() too
    assert saved["iterations"] == 2 and saved["searches"] == 1 and not saved["pending"]
    assert callback.searches == 1  # due after the last iteration: run at the end of learn()
    assert model.num_timesteps == 2 * N_STEPS  # the paper's accounting: candidates not counted
    assert callback.counted_eval_steps == 0 and callback.eval_env_steps == 9 * 200
    # no rollout after the search: the evaluator's statistics are the training env's now
    norm = callback.evaluator.obs_normalizer
    np.testing.assert_array_equal(norm.mean, venv.obs_rms.mean)
    np.testing.assert_array_equal(norm.var, venv.obs_rms.var)
    # the evaluator scores the policy exactly as SB3's own predict does with the frozen statistics
    callback.evaluator.seed = 123
    assert callback.evaluator() == pytest.approx(pendulum_return(model, venv, 123), rel=1e-6)


def test_save_load_continue_keeps_parameters_optimizer_state_and_anchors(tmp_path):
    model = ppo()
    callback = ExploRLerCallback(ENV, explore_every=3, max_anchors=10, budget_tolerance=None)
    model.learn(2 * N_STEPS, callback=callback)
    assert callback.explorer.num_anchors == 4 and callback.searches == 0
    model.save(tmp_path / "ppo")
    callback.save(tmp_path / "ppo.explorler.pt")
    anchors = callback.explorer.anchors().clone()

    loaded = PPO.load(tmp_path / "ppo", env=make_vec_env(ENV, n_envs=1, seed=5), device="cpu")
    resumed = ExploRLerCallback(ENV, explore_every=3, max_anchors=10, budget_tolerance=None)
    resumed.load(tmp_path / "ppo.explorler.pt")  # before learn(): applied once the model is known
    assert resumed.iterations == 2 and resumed.explorer is None  # counters at once, anchors at learn()
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), params_of(loaded), strict=True))
    saved_opt = model.policy.optimizer.state_dict()["state"]
    loaded_opt = loaded.policy.optimizer.state_dict()["state"]
    assert all(torch.equal(saved_opt[k]["exp_avg"], loaded_opt[k]["exp_avg"]) for k in saved_opt)

    loaded.learn(N_STEPS, callback=resumed, reset_num_timesteps=False)
    assert resumed.iterations == 3 and resumed.searches == 1
    assert resumed.last_result.num_anchors == 6  # the 4 saved anchors + 2 of the third iteration
    state = torch.load(tmp_path / "ppo.explorler.pt", weights_only=True)
    assert torch.equal(state["explorer"]["origin"] + state["explorer"]["deltas"], anchors)


def test_bad_evaluation_env_restores_parameters_and_keeps_anchors():
    calls = {"n": 0}

    def flaky_env():
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("simulator crashed")
        return gym.make(ENV)

    plain = ppo()
    plain.learn(2 * N_STEPS)
    model = ppo()
    callback = ExploRLerCallback(flaky_env, explore_every=2, count_eval_steps=False)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        model.learn(2 * N_STEPS, callback=callback)
    assert all(torch.equal(a, b) for a, b in zip(params_of(plain), params_of(model), strict=True))
    assert callback.explorer.num_anchors == 4 and callback._pending and callback.searches == 0


def test_obs_normalizer_honours_vecnormalize_clip_obs():
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV)] * 2), clip_obs=0.5)
    venv.seed(0)
    venv.reset()
    for _ in range(50):
        venv.step(np.random.default_rng(0).uniform(-2, 2, size=(2, 1)).astype(np.float32))
    obs = np.random.default_rng(1).normal(scale=3.0, size=(64, 3)).astype(np.float32)
    for env in (venv, VecMonitor(venv)):  # found through other VecEnvWrappers too
        norm = ObsNormalizer.from_env(env)
        assert norm.clip == 0.5
        np.testing.assert_array_equal(norm(obs), venv.normalize_obs(obs))
    assert np.abs(venv.normalize_obs(obs)).max() == np.float32(0.5)
    assert ObsNormalizer.from_env(venv, clip=None).clip is None  # an explicit clip wins
    # gymnasium's NormalizeObservation has no clip: the default stays 10 (the scripts' wrapper)
    wrapped = gym.wrappers.NormalizeObservation(gym.make(ENV))
    assert ObsNormalizer.from_env(wrapped).clip == 10.0


def test_callback_is_built_from_plain_yaml_values_and_warns_once_at_the_users_line():
    yaml_kwargs = {"eval_env": ENV, "explore_every": 20, "eval_episodes": 1, "count_eval_steps": False}
    callback = ExploRLerCallback(**yaml_kwargs)
    assert "explore_every=20" in repr(callback)
    model = ppo()  # n_epochs=2: the README's explore_every=20 searches one iteration's 2 epochs: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=NO_SEARCH)  # a 1-iteration learn() has no search
        model.learn(N_STEPS, callback=callback)
    model = ppo(n_epochs=3)
    dropping = ExploRLerCallback(ENV, explore_every=20, max_anchors=2, count_eval_steps=False)
    with pytest.warns(UserWarning, match="records 60 anchors .* only the last 2 are searched") as caught:
        model.learn(N_STEPS, callback=dropping)
    assert {w.filename for w in caught} == {__file__}  # points at the user's learn() line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=NO_SEARCH)
        model.learn(N_STEPS, callback=dropping, reset_num_timesteps=False)  # said once
    assert dropping.iterations == 2


@pytest.mark.parametrize("name", [None, "esa", "random-walk", "gaussian"])
def test_every_default_search_of_the_callback_makes_10_candidates_from_10_anchors(name):
    assert ExploRLerCallback(ENV, search=name).search.num_candidates(10) == 10
    options = {"num_candidates": 20} if name == "gaussian" else {"snapshot_every": 20}
    assert ExploRLerCallback(ENV, search=name, search_kwargs=options).search.num_candidates(10) == 20
    with pytest.raises(ValueError, match="its options are"):
        ExploRLerCallback(ENV, search=name, search_kwargs={"snapshots": 20})


def test_callback_searches_in_rounds_and_selects_by_tournament():
    # pbt over 4 anchors: the 4 anchors, then 2 children; one 200-step episode each + the incumbent
    callback = ExploRLerCallback(
        ENV, explore_every=2, budget_tolerance=None, search="pbt", selection="tournament",
        selection_kwargs={"size": 2},
    )  # fmt: skip
    assert callback.selection.size == 2
    ppo().learn(2 * N_STEPS, callback=callback)
    result = callback.last_result
    assert callback.searches == 1 and result.num_candidates == 6 and result.round_sizes == (4, 2)
    assert callback.eval_env_steps == 7 * 200
    assert ExploRLerCallback(ENV, search="cma-es").search.num_candidates(10) == 10
    with pytest.raises(ValueError, match="selection_kwargs applies"):
        ExploRLerCallback(ENV, selection=callback.selection, selection_kwargs={"size": 3})


def test_docstring_examples(tmp_path, monkeypatch):
    import doctest

    import explorler_optim.sb3

    monkeypatch.chdir(tmp_path)  # the examples save files
    for module in ("actor", "checks", "callback", "checkpoints"):
        module = getattr(explorler_optim.sb3, module)
        failures, tried = doctest.testmod(module, extraglobs={"torch": torch}, verbose=False)
        assert tried > 0 and failures == 0, module.__name__


def test_importing_the_package_does_not_import_sb3():
    code = "import sys, explorler_optim, explorler_optim.rl; assert 'stable_baselines3' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_benchmark_runner_with_the_callback_logs_training_and_total_steps(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from benchmarks import sb3_runner

    monkeypatch.chdir(tmp_path)

    argv = ["--algo", "ppo", "--env-id", ENV, "--total-timesteps", "256", "--num-steps", "128"]
    argv += ["--eval-every", "1", "--heldout-episodes", "1", "--explorler", "--explore-every", "1"]
    assert sb3_runner.main([*argv, "--no-count-eval-steps"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    acc = EventAccumulator(str(run))
    acc.Reload()
    training = [e.step for e in acc.Scalars("eval/episodic_return")]
    total = [e.step for e in acc.Scalars("eval/episodic_return_vs_total_steps")]
    assert training[-1] == 256  # the paper's accounting: all 256 budget steps are training steps
    assert total[-1] > training[-1]  # plus the candidates' steps


def test_trpo_script_takes_sb3_contribs_policy_step_with_the_kl_averaged():
    """On sb3-contrib's own rollout and weights, one policy step of the TRPO script's
    `NaturalGradientOptimizer` (`explorler_optim.rl.trpo`) equals sb3-contrib's TRPO step when the KL
    is averaged over action dimensions (`--kl-reduction mean`, as sb3-contrib does) and differs with
    the textbook sum. The README's TRPO section cites this (it was
    `benchmarks/bench_trpo_peer.py --step-check`)."""
    from stable_baselines3.common.logger import configure

    from benchmarks.common import load_script
    from benchmarks.protocols import SCRIPTS
    from explorler_optim.rl.trpo import NaturalGradientOptimizer

    script = load_script(SCRIPTS["trpo"])  # its objective, surrogate_and_kl
    venv = VecNormalize(make_vec_env("Hopper-v5", n_envs=1, seed=1), clip_obs=10.0, epsilon=1e-8)
    model = sb3_contrib.TRPO("MlpPolicy", venv, n_steps=256, seed=1, device="cpu")
    model.set_logger(configure(None, [""]))
    _, callback = model._setup_learn(2 * model.n_steps, None)
    callback.on_training_start(locals(), globals())
    for update in range(2):  # the step under test starts from weights that sb3-contrib has updated once
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        if update == 0:
            model.train()
    buffer, policy = model.rollout_buffer, model.policy
    obs_dim, act_dim = buffer.observations.shape[-1], buffer.actions.shape[-1]
    theirs = [
        *policy.mlp_extractor.policy_net[0].parameters(),
        *policy.mlp_extractor.policy_net[2].parameters(),
        *policy.action_net.parameters(),
        policy.log_std,
    ]
    obs = torch.as_tensor(buffer.observations.reshape(-1, obs_dim)).float()
    actions = torch.as_tensor(buffer.actions.reshape(-1, act_dim)).float()
    old_logprobs = torch.as_tensor(buffer.log_probs.reshape(-1)).float()
    advantages = torch.as_tensor(buffer.advantages.reshape(-1)).float()
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    before = torch.cat([p.detach().reshape(-1) for p in theirs])

    def our_step(kl_reduction):
        agent = script.Agent(obs_dim, act_dim)
        actor = [*agent.actor_mean.parameters(), agent.actor_logstd]
        with torch.no_grad():
            for mine, source in zip(actor, theirs, strict=True):
                mine.copy_(source.view_as(mine))
            old_dist = agent.get_distribution(obs)
        optimizer = NaturalGradientOptimizer(actor)
        optimizer.step(
            lambda: script.surrogate_and_kl(
                agent, obs, actions, old_logprobs, advantages, old_dist, kl_reduction
            )
        )
        return torch.cat([p.detach().reshape(-1) for p in actor]) - before

    steps = {reduction: our_step(reduction) for reduction in ("mean", "sum")}
    model.train()  # sb3-contrib's own step on the same batch
    step_sb3 = torch.cat([p.detach().reshape(-1) for p in theirs]) - before
    assert step_sb3.norm() > 0
    assert (steps["mean"] - step_sb3).norm() / step_sb3.norm() < 1e-4  # 4e-6 when written
    assert (steps["sum"] - step_sb3).norm() / step_sb3.norm() > 0.1  # 0.33 when written


# ------------------------------------------------------------------------------------------------
# issue 23: the default eval env, the budget rule, early errors, checkpoints, rl-zoo3


class NoSpec(gym.Wrapper):
    """A user wrapper gymnasium cannot recreate (not RecordConstructorArgs)."""


@pytest.mark.parametrize("how", ["make_vec_env", "subproc", "id_string"])
def test_default_eval_env_works_with_every_env_sb3_builds(how):
    from stable_baselines3.common.vec_env import SubprocVecEnv

    if how == "make_vec_env":
        rescale = {"min_action": -1.0, "max_action": 1.0}  # a user wrapper: the eval env needs it too
        env = make_vec_env(
            ENV, n_envs=1, seed=0, wrapper_class=gym.wrappers.RescaleAction, wrapper_kwargs=rescale
        )
    elif how == "subproc":
        env = make_vec_env(ENV, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
    else:
        env = ENV  # PPO("MlpPolicy", "Pendulum-v1"): SB3 wraps it in Monitor and DummyVecEnv itself
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu")
    callback = ExploRLerCallback(explore_every=2, count_eval_steps=False)  # eval_env=None
    model.learn(2 * 32 * model.n_envs, callback=callback)
    assert callback.searches == 1 and callback.eval_env_steps > 0
    eval_env = callback.evaluator.make_env()
    chain = []
    while isinstance(eval_env, gym.Wrapper):
        chain.append(type(eval_env).__name__)
        eval_env = eval_env.env
    assert "Monitor" not in chain
    assert ("RescaleAction" in chain) == (how == "make_vec_env")  # a recreatable user wrapper is kept
    model.env.close()
    callback.close()


def test_default_eval_env_drops_a_wrapper_it_cannot_recreate_and_says_so():
    model = ppo(make_vec_env(ENV, n_envs=1, seed=0, wrapper_class=NoSpec))
    callback = ExploRLerCallback(explore_every=100, count_eval_steps=False)
    with pytest.warns(UserWarning, match="without NoSpec") as caught:
        model.learn(N_STEPS, callback=callback)
    assert [w.filename for w in caught if "NoSpec" in str(w.message)] == [__file__]


def budget_case(algo):
    """(model, explore_every, total_timesteps): searches fit early in the budget, a late one does not."""
    env = make_vec_env(ENV, n_envs=1, seed=0)
    if algo == "ppo":
        return ppo(env), 2, 4000
    if algo == "a2c":
        from stable_baselines3 import A2C

        return A2C("MlpPolicy", env, seed=0, device="cpu"), 40, 5000  # A2C's own 5-step rollouts
    return trpo(), 2, 2500


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo"])
def test_budget_rule_keeps_total_env_steps_within_the_tolerance(algo):
    model, every, total = budget_case(algo)
    logger, recorder = recording_logger()
    model.set_logger(logger)
    callback = ExploRLerCallback(ENV, explore_every=every)  # counted candidates, tolerance 0.01
    with pytest.warns(UserWarning, match="search skipped") as caught:
        model.learn(total, callback=callback)
    rollout = model.n_steps * model.n_envs
    plain_end = -(-total // rollout) * rollout  # where plain SB3 stops: whole rollouts
    assert model.num_timesteps <= plain_end + int(0.01 * total)
    assert callback.searches >= 1 and callback.skipped_searches >= 1
    assert callback.counted_eval_steps == callback.eval_env_steps > 0
    assert model.num_timesteps == callback.counted_eval_steps + (
        model.num_timesteps - callback.eval_env_steps
    )
    assert len([w for w in caught if "search skipped" in str(w.message)]) == 1  # said once
    logged = {}
    for _, row in recorder.rows:
        logged.update(row)
    assert logged["explorler/skipped_searches"] == callback.skipped_searches


def test_without_the_budget_rule_the_same_run_overshoots():
    """The rule is what keeps the test above in budget: off, the A2C run ends past the tolerance."""
    model, every, total = budget_case("a2c")
    callback = ExploRLerCallback(ENV, explore_every=every, budget_tolerance=None)
    model.learn(total, callback=callback)
    assert model.num_timesteps > total + int(0.01 * total)


def test_explore_every_auto_scales_with_the_rollout_and_spaces_a2cs_anchors():
    from stable_baselines3 import A2C

    model = A2C("MlpPolicy", make_vec_env(ENV, n_envs=1, seed=0), seed=0, device="cpu")
    callback = ExploRLerCallback(ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults drop no anchors
        warnings.filterwarnings("ignore", message=NO_SEARCH)  # 820 iterations: none of A2C's 4,096
        model.learn(5 * 820, callback=callback)
    assert (callback.schedule.explore_every, callback.schedule.anchor_stride) == (4096, 410)
    assert callback.explorer.num_anchors == 2  # after iterations 410 and 820, not one per iteration


class DictObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-1, 1, (2,))})
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        return {"x": np.zeros(2, dtype=np.float32)}, {}

    def step(self, action):
        return {"x": np.zeros(2, dtype=np.float32)}, 0.0, False, False, {}


def unwrapped_pendulum():
    from gymnasium.envs.classic_control import PendulumEnv

    return PendulumEnv()  # no TimeLimit: episodes have no bound


@pytest.mark.parametrize(
    ("build", "callback_kwargs", "error", "match"),
    [
        (ppo, {"eval_env": "Pendulm-v1"}, ValueError, r"eval_env='Pendulm-v1' could not be made"),
        (ppo, {"eval_env": "MountainCarContinuous-v0"}, ValueError, r"observation_space Box.*training env"),
        (ppo, {"eval_env": unwrapped_pendulum}, ValueError, r"no time limit.*max_episode_steps"),
        (
            lambda: PPO("MultiInputPolicy", DictObsEnv(), n_steps=64, device="cpu"),
            {},
            TypeError,
            r"Box observations; this env's are Dict: wrap .*FlattenObservation",
        ),
        (
            lambda: sb3_contrib.MaskablePPO("MlpPolicy", "CartPole-v1", n_steps=64, device="cpu"),
            {},
            TypeError,
            r"MaskablePPO uses action masks",
        ),
        (
            lambda: sb3_contrib.RecurrentPPO("MlpLstmPolicy", ENV, n_steps=64, device="cpu"),
            {},
            TypeError,
            r"RecurrentPPO is recurrent",
        ),
    ],
    ids=["mistyped-id", "other-spaces", "no-time-limit", "dict-obs", "maskable", "recurrent"],
)
def test_what_can_be_checked_fails_at_learn_start_before_any_env_step(build, callback_kwargs, error, match):
    model = build()
    with pytest.raises(error, match=match) as caught:
        model.learn(N_STEPS, callback=ExploRLerCallback(**callback_kwargs))
    assert model.num_timesteps == 0
    assert "off-policy or recurrent" not in str(caught.value)


def test_a_policy_with_nothing_to_search_is_refused_in_words_of_the_callback():
    model = ppo()
    for p in sb3_actor_params(model.policy):
        p.requires_grad_(False)
    with pytest.raises(TypeError, match="no trainable actor parameters to search"):
        model.learn(N_STEPS, callback=ExploRLerCallback(ENV))
    assert model.num_timesteps == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"explore_every": None}, r"explore_every must be a positive integer or 'auto', got None"),
        ({"explore_every": "20"}, r"explore_every must be a positive integer or 'auto', got '20'"),
        ({"max_anchors": "10"}, r"max_anchors must be a positive integer, got '10'"),
        ({"max_anchors": 1}, r"max_anchors must be >= 2"),
        ({"budget_tolerance": -0.1}, r"budget_tolerance must be a number >= 0 or None"),
    ],
)
def test_argument_types_are_checked_when_the_callback_is_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExploRLerCallback(ENV, **kwargs)


def test_checkpoints_pair_model_and_state_by_step_and_load_shows_the_state_at_once(tmp_path):
    from explorler_optim.sb3 import ExploRLerCheckpointCallback, state_path

    model = ppo()
    explorler = ExploRLerCallback(ENV, explore_every=100, count_eval_steps=False)
    checkpoints = ExploRLerCheckpointCallback(explorler, save_freq=N_STEPS, save_path=str(tmp_path))
    model.learn(3 * N_STEPS, callback=[explorler, checkpoints])
    zips = sorted(tmp_path.glob("rl_model_*_steps.zip"))
    assert [z.name for z in zips] == [f"rl_model_{s}_steps.zip" for s in (128, 192, 64)]
    for z in zips:
        step = int(z.name.split("_")[2])
        state = torch.load(state_path(z), weights_only=True)
        assert state["num_timesteps"] == step and state["iterations"] == step // N_STEPS - 1
        loaded = PPO.load(z, device="cpu")
        resumed = ExploRLerCallback(ENV, explore_every=100)
        resumed.load(state_path(z), model=loaded)  # visible now, not after learn()
        assert resumed.iterations == state["iterations"]
        assert resumed.explorer.num_anchors == model.n_epochs * state["iterations"]
        # the anchors' last row is the loaded model's actor (the state is the model's own)
        if resumed.explorer.num_anchors:
            actor = torch.cat([p.detach().reshape(-1) for p in sb3_actor_params(loaded.policy)])
            torch.testing.assert_close(resumed.explorer.anchors()[-1], actor)

    wrong_step = PPO.load(zips[0], device="cpu")  # 128 steps
    with pytest.raises(ValueError, match=r"saved at num_timesteps=192 but the model is at 128"):
        ExploRLerCallback(ENV).load(state_path(zips[1]), model=wrong_step)
    other_net = ppo(policy_kwargs={"net_arch": [16]})
    other_net.num_timesteps = 128
    with pytest.raises(ValueError, match=r"shapes .* it belongs to another model"):
        ExploRLerCallback(ENV).load(state_path(zips[0]), model=other_net)


def test_a_state_loaded_before_learn_is_refused_when_learn_resets_the_step(tmp_path):
    model = ppo()
    callback = ExploRLerCallback(ENV, explore_every=100, count_eval_steps=False)
    model.learn(2 * N_STEPS, callback=callback)
    callback.save(tmp_path / "state.pt")
    resumed = ExploRLerCallback(ENV, explore_every=100)
    resumed.load(tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"reset_num_timesteps=False"):
        model.learn(N_STEPS, callback=resumed)  # reset_num_timesteps=True: step 0, state at 128


def test_state_travels_inside_the_model_file_and_resumes_on_a_loaded_model(tmp_path):
    model = ppo()
    callback = ExploRLerCallback(ENV, explore_every=100, count_eval_steps=False)
    model.learn(2 * N_STEPS, callback=callback)
    model.save(tmp_path / "ppo")
    anchors = callback.explorer.anchors().clone()

    loaded = PPO.load(tmp_path / "ppo", env=make_vec_env(ENV, n_envs=1, seed=3), device="cpu")
    resumed = ExploRLerCallback(ENV, explore_every=100, count_eval_steps=False)
    loaded.learn(N_STEPS, callback=resumed)  # as rl-zoo3's --trained-agent does: step reset to 0
    assert resumed.iterations == 3
    assert torch.equal(resumed.explorer.anchors()[: anchors.shape[0]], anchors)
    fresh = ExploRLerCallback(ENV, explore_every=100, count_eval_steps=False, state_in_model=False)
    PPO.load(tmp_path / "ppo", env=make_vec_env(ENV, n_envs=1), device="cpu").learn(N_STEPS, callback=fresh)
    assert fresh.iterations == 1


@pytest.mark.slow
def test_rl_zoo3_trains_with_the_callback_and_resumes_its_state(tmp_path):
    pytest.importorskip("rl_zoo3")
    import os
    from pathlib import Path

    from stable_baselines3.common.save_util import load_from_zip_file

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "conf.yml").write_text(
        f"{ENV}:\n  policy: 'MlpPolicy'\n  n_timesteps: 128\n  n_steps: 64\n  batch_size: 32\n"
        "  n_epochs: 2\n  callback:\n    - explorler_optim.sb3.ExploRLerCallback:\n"
        "        explore_every: 100\n        count_eval_steps: false\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", ENV, "-conf", "conf.yml"]
    base += ["-f", "logs", "--eval-freq", "-1", "--seed", "0", "--device", "cpu"]
    subprocess.run(base, cwd=tmp_path, env=env, check=True, capture_output=True)
    first = tmp_path / "logs" / "ppo" / f"{ENV}_1" / f"{ENV}.zip"
    subprocess.run(
        [*base, "--trained-agent", str(first)], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    states = []
    for run in (1, 2):
        data, _, _ = load_from_zip_file(
            tmp_path / "logs" / "ppo" / f"{ENV}_{run}" / f"{ENV}.zip", device="cpu"
        )
        states.append(data["explorler_state"])
    assert states[0]["iterations"] == 2
    assert states[1]["iterations"] == 4  # continued from the first run's 2, not restarted
    assert states[1]["explorer"]["cycles"] == states[0]["explorer"]["cycles"]


# ------------------------------------------------------------------ no silent no-op


def test_a_learn_call_in_which_no_search_can_run_says_so_and_what_to_change():
    model = ppo()
    callback = ExploRLerCallback(ENV, explore_every=50, count_eval_steps=False)
    with pytest.warns(UserWarning, match=NO_SEARCH) as caught:
        model.learn(4 * N_STEPS, callback=callback)  # 4 iterations, a search due after 50
    message = str(next(w.message for w in caught if "this learn()" in str(w.message)))
    assert "plain PPO" in message and "learn(3,200)" in message and "explore_every=4 or less" in message
    assert callback.searches == 0
    model, callback = ppo(), ExploRLerCallback(ENV, explore_every=4, count_eval_steps=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the suggested setting searches: no warning
        model.learn(4 * N_STEPS, callback=callback)
    assert callback.searches == 1


def test_the_default_schedule_warns_on_a_learn_call_shorter_than_one_search():
    model = ppo(n_steps=2048, batch_size=2048, n_epochs=1)  # "auto": a search every 20 iterations
    callback = ExploRLerCallback(ENV, count_eval_steps=False)
    with pytest.warns(UserWarning, match=NO_SEARCH + r" 1 iteration\(s\) of 2,048 .* learn\(40,960\)"):
        model.learn(2048, callback=callback)  # one iteration: SB3 collects 2,048 steps, no search


def test_learn_that_restarts_the_step_count_of_a_run_with_explorer_state_warns():
    model = ppo()
    callback = ExploRLerCallback(ENV, explore_every=2, count_eval_steps=False)
    model.learn(2 * N_STEPS, callback=callback)
    assert callback.searches == 1
    with pytest.warns(UserWarning, match=r"restarted model.num_timesteps at 0 .* reset_num_timesteps=False"):
        model.learn(2 * N_STEPS, callback=callback)  # SB3's default: reset_num_timesteps=True
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.learn(2 * N_STEPS, callback=callback, reset_num_timesteps=False)  # continues: no warning


def test_learn_on_a_loaded_model_whose_state_travels_in_it_warns_when_the_steps_restart(tmp_path):
    model = ppo()
    model.learn(2 * N_STEPS, callback=ExploRLerCallback(ENV, explore_every=2, count_eval_steps=False))
    model.save(tmp_path / "model")
    loaded = PPO.load(tmp_path / "model", env=make_vec_env(ENV, n_envs=1, seed=0), device="cpu")
    with pytest.warns(UserWarning, match=r"restarted model.num_timesteps at 0 .* 2 iteration\(s\)"):
        loaded.learn(2 * N_STEPS, callback=ExploRLerCallback(ENV, explore_every=2, count_eval_steps=False))
