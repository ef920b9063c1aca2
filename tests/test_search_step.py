"""SearchStep: when a search is due, the budget rule, env-step accounting, logging, state."""

import pytest
import torch

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import SearchStep


class Writer:
    def __init__(self):
        self.scalars, self.histograms = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_histogram(self, tag, values, step):
        self.histograms.append((tag, list(values), step))


class Score:
    """A PolicyEvaluator stand-in: 7 env steps per policy scored."""

    episodes = 2

    def __init__(self, policy):
        self.policy, self.obs_normalizer, self.seed, self.total_env_steps, self.seeds = policy, None, 0, 0, []

    def prepare(self, obs_normalizer, seed=None, batch=None):
        self.obs_normalizer = obs_normalizer
        if seed is not None:
            self.seed = seed

    def __call__(self):
        self.total_env_steps += 7
        self.seeds.append(self.seed)
        return -self.policy.weight.square().sum().item()


def _optimizer(anchors):
    policy = torch.nn.Linear(2, 1)
    opt = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), seed=0)
    for _ in range(anchors):
        policy.weight.data.add_(1.0)
        opt.record()
    return policy, opt


def test_due_follows_schedule_start_step_and_anchor_count():
    policy, opt = _optimizer(2)
    search = SearchStep(opt, Score(policy), candidate_seed=lambda c: c, every=2, start_step=100)
    assert not search.due(1, global_step=200, counted_steps=0)  # not a multiple of every
    assert not search.due(2, global_step=50, counted_steps=0)  # before start_step
    assert search.due(2, global_step=200, counted_steps=0)
    assert not SearchStep(_optimizer(1)[1], Score(policy), candidate_seed=lambda c: c).due(1, 0, 0)
    assert not SearchStep(opt, None, candidate_seed=lambda c: c).due(2, 200, 0)  # disabled


def test_a_search_that_could_overrun_the_budget_is_skipped_counted_and_announced_once():
    policy, opt = _optimizer(2)
    writer, messages = Writer(), []
    search = SearchStep(
        opt,
        Score(policy),
        candidate_seed=lambda c: c,
        budget_limit=1000,  # the optimizer's default search: 2 anchors, 2 agents x 2 snapshots + incumbent
        episode_cap=50,
        writer=writer,
        say=messages.append,
    )
    assert search.due(1, 0, counted_steps=500)  # 500 + 5 x 2 x 50 = 1000 fits
    assert not search.due(2, 10, counted_steps=501)
    assert not search.due(3, 20, counted_steps=600)
    assert search.skipped_searches == 2
    assert writer.scalars == [("explorler/skipped_searches", 1, 10), ("explorler/skipped_searches", 2, 20)]
    assert len(messages) == 1 and "500 env steps (5 policies x 2 episode(s) x 50 steps)" in messages[0]


def test_run_counts_env_steps_advances_the_cycle_and_logs():
    policy, opt = _optimizer(3)
    score, writer = Score(policy), Writer()
    search = SearchStep(opt, score, candidate_seed=lambda c: 100 + c, writer=writer)
    anchors = opt.anchors().cpu()
    result, used = search.run(obs_normalizer="stats", global_step=64)
    assert used == 7 * len(score.seeds) == search.eval_env_steps and search.cycle == 1
    assert score.obs_normalizer == "stats" and set(score.seeds) == {100}
    assert torch.equal(search.last_anchors, anchors) and search.last_gain == result.gain
    search.log(result, global_step=64)
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"explorler/eval_env_steps", *(f"explorler/{name}" for name in result.scalars())} == tags
    assert writer.histograms[0][0] == "explorler/candidate_scores"
    for _ in range(2):
        policy.weight.data.add_(1.0)
        opt.record()
    search.run(obs_normalizer="stats", global_step=128)
    assert set(score.seeds) == {100, 101}


def test_state_dict_round_trip_and_old_checkpoints():
    policy, opt = _optimizer(2)
    search = SearchStep(opt, Score(policy), candidate_seed=lambda c: c)
    search.run(None, 0)
    state = search.state_dict()
    assert set(state) == {
        "cycle",
        "eval_env_steps",
        "last_cycle_anchors",
        "last_gain",
        "skipped_searches",
        "search_pending",
    }
    other = SearchStep(opt, Score(policy), candidate_seed=lambda c: c)
    other.load_state_dict(state)
    assert other.state_dict().keys() == state.keys() and other.cycle == 1
    other.load_state_dict({"cycle": 4, "eval_env_steps": 9})  # an earlier release's checkpoint
    assert (other.cycle, other.last_gain, other.skipped_searches, other.last_anchors) == (4, None, 0, None)
    assert other.pending is False


def test_errors_name_the_fix():
    policy, opt = _optimizer(2)
    with pytest.raises(ValueError, match="episode_cap"):
        SearchStep(opt, Score(policy), candidate_seed=lambda c: c, budget_limit=10)
    with pytest.raises(ValueError, match="truth_seed and audit_path"):
        SearchStep(opt, Score(policy), candidate_seed=lambda c: c, audit=object())
    with pytest.raises(RuntimeError, match="build it with one"):
        SearchStep(opt, None, candidate_seed=lambda c: c).run(None, 0)
    with pytest.raises(RuntimeError, match="writer="):
        SearchStep(opt, Score(policy), candidate_seed=lambda c: c).log(None, 0)


def test_summary_names_skipped_searches_and_close_closes_the_evaluators():
    policy, opt = _optimizer(2)
    closed = []

    class Closing(Score):
        def close(self):
            closed.append(self)

    search = SearchStep(opt, Closing(policy), candidate_seed=lambda c: c)
    search.skipped_searches, search.eval_env_steps = 2, 30
    line = search.summary(130, 100, 200, counted=False)
    assert line.startswith("130 counted env steps of the 200 budget: 100 training + 30 candidate-evaluation")
    assert "(not counted); 2 search(es) skipped" in line
    search.close()
    assert closed == [search.evaluator]


def test_run_evaluators_builds_what_the_flags_ask_for_and_closes_them():
    import gymnasium as gym

    from explorler_optim.rl import RunEvaluators

    def make():
        return gym.make("Pendulum-v1", max_episode_steps=5)

    stats_env = gym.wrappers.NormalizeObservation(make())
    policy = torch.nn.Linear(3, 1)
    plain = RunEvaluators.build(policy, make, stats_env, heldout_episodes=1, heldout_seed=7)
    assert (plain.candidate, plain.paper, plain.audit) == (None, None, None) and plain.heldout.seed == 7
    paper_only = RunEvaluators.build(
        policy, make, stats_env, heldout_episodes=1, heldout_seed=7, truth_episodes=2
    )  # no candidates (no ExploRLer): the paper's evaluator, no audit
    assert paper_only.paper is not None and paper_only.audit is None
    full = RunEvaluators.build(
        policy,
        make,
        stats_env,
        heldout_episodes=1,
        heldout_seed=7,
        candidate_episodes=2,
        candidate_seed=3,
        paper_metric=True,
        paper_seed=11,
        truth_episodes=4,
    )
    assert (full.candidate.episodes, full.candidate.seed, full.paper.seed) == (2, 3, 11)
    assert full.audit.selector is full.candidate and full.audit.audits["paper"] is full.paper
    assert full.audit.audits["truth"].episodes == 4
    for evaluators in (plain, paper_only, full):
        evaluators.close()


def unreachable(total, num_steps=1024, every=2, start=0, tolerance=0.01, cap=1000, epochs=10):
    """What `harness.explain_unreachable_searches` says of a PPO run with these flags (1 env)."""
    from types import SimpleNamespace

    from explorler_optim import ExploRLerOptimizer
    from explorler_optim.rl.harness import explain_unreachable_searches

    iterations = total // num_steps
    args = SimpleNamespace(
        num_iterations=iterations, batch_size=num_steps, total_timesteps=total, explore_every=every,
        explore_start_step=start, max_anchors=10, update_epochs=epochs,
    )  # fmt: skip
    optimizer = ExploRLerOptimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
    limit = iterations * num_steps + int(tolerance * total)  # harness.check_settings' budget
    step = SearchStep(
        optimizer, SimpleNamespace(episodes=1), candidate_seed=int, every=every, start_step=start,
        budget_limit=limit, episode_cap=cap,
    )  # fmt: skip
    return explain_unreachable_searches(args, step)


def test_a_run_whose_searches_never_fit_is_told_the_total_that_fits():
    message = unreachable(8192)  # the issue's --total-timesteps 8192 --num-steps 1024 --explore-every 2
    assert message is not None and "after iteration 2 (2,048 counted env steps)" in message
    assert "11,000 (11 policies x 1 episode(s) x 1,000 steps)" in message
    suggested = int(message.split("--total-timesteps ")[1].split()[0])
    assert unreachable(suggested) is None  # the suggestion fits a search
    assert unreachable(suggested - 1024) is not None  # and is the least that does
    assert unreachable(1_000_000, num_steps=2048, every=20) is None  # the scripts' defaults search


def test_a_run_shorter_than_its_search_schedule_is_told_the_explore_every_that_searches():
    message = unreachable(8192, every=50)
    assert message is not None and "the run has 8 iteration(s)" in message
    assert "--explore-every 8 or less" in message
    assert unreachable(8192, every=4, cap=10) is None
    late = unreachable(8192, every=2, start=9000, cap=10)
    assert late is not None and "--explore-start-step 9,000" in late


def unreachable_off_policy(total, every=1000, learning_starts=5000, num_envs=1, cap=1000, tolerance=0.01):
    """The same for the SAC script: an iteration is one env step of every env; anchors come once
    learning starts (its budget is ``total_timesteps``, not whole iterations)."""
    from types import SimpleNamespace

    from explorler_optim import ExploRLerOptimizer
    from explorler_optim.rl.harness import explain_unreachable_searches

    args = SimpleNamespace(
        total_timesteps=total, num_envs=num_envs, learning_starts=learning_starts, explore_every=every,
        explore_start_step=0, max_anchors=10,
    )  # fmt: skip
    optimizer = ExploRLerOptimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
    step = SearchStep(
        optimizer, SimpleNamespace(episodes=1), candidate_seed=int, every=every,
        budget_limit=total + int(tolerance * total), episode_cap=cap,
    )  # fmt: skip
    return explain_unreachable_searches(args, step)


def test_an_off_policy_run_that_ends_before_its_first_search_is_told_the_total_that_searches():
    message = unreachable_off_policy(3000)  # the SAC script's defaults, a run shorter than learning_starts
    assert message is not None and "the first search is due after 6,000" in message
    assert "--learning-starts 5,000" in message
    suggested = int(message.split("--total-timesteps ")[1].split()[0])
    assert unreachable_off_policy(suggested) is None  # enough for that search and its env steps
    assert unreachable_off_policy(suggested - 1000) is not None
    # it started, but its first search cannot fit the budget: the total that fits it
    tight = unreachable_off_policy(6500, every=100, learning_starts=500)
    assert tight is not None and "after env step 600 per env" in tight
    assert unreachable_off_policy(100_000, every=5000) is None  # the `sac` protocol's runs search
