"""SurrogateEvaluator: candidates scored on a batch, with no env steps (issue 20)."""

import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import SearchStep, SurrogateEvaluator
from tests.conftest import HANG_GUARD_S, ScriptUnderTest


class GaussianPolicy(torch.nn.Module):
    """A 1-D Gaussian policy whose mean is one parameter: N(mu, 1)."""

    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(1))

    def log_prob(self, obs, actions):
        return torch.distributions.Normal(self.mu.expand_as(actions), 1.0).log_prob(actions).sum(-1)


def batch_where_larger_actions_pay(policy, n=4096, seed=0):
    """Actions from N(0, 1) with advantage = action: moving the mean up improves the policy."""
    generator = torch.Generator().manual_seed(seed)
    actions = torch.randn(n, 1, generator=generator)
    obs = torch.zeros(n, 1)
    with torch.no_grad():
        behaviour = policy.log_prob(obs, actions)
    return obs, actions, behaviour, actions[:, 0].clone()


def test_higher_batch_advantage_ranks_higher_and_spends_no_env_steps():
    policy = GaussianPolicy()
    scorer = SurrogateEvaluator(policy.log_prob, max_kl=0.05)
    scorer.set_batch(*batch_where_larger_actions_pay(policy))
    rows = torch.tensor([[0.0], [0.1], [-0.1], [0.2]])
    scores = scorer.evaluate_many([policy.mu], [rows])
    assert scores[1] > scores[0] > scores[2]
    assert scores[3] > scores[1]
    assert scorer.total_env_steps == 0 and scorer.last_env_steps == 0
    assert torch.equal(policy.mu.detach(), torch.zeros(1))  # restored
    # a rollout's (T, E, ...) tensors score as the flat batch they hold
    obs, actions, behaviour, advantages = batch_where_larger_actions_pay(policy)
    scorer.set_batch(
        obs.view(1024, 4, 1), actions.view(1024, 4, 1), behaviour.view(1024, 4), advantages.view(1024, 4)
    )
    torch.testing.assert_close(scorer.evaluate_many([policy.mu], [rows]), scores)
    with pytest.raises(ValueError, match="one row per step"):
        scorer.set_batch(obs[:10], actions, behaviour, advantages)


def test_candidate_outside_the_trust_region_is_rejected():
    policy = GaussianPolicy()
    scorer = SurrogateEvaluator(policy.log_prob, max_kl=0.01)
    scorer.set_batch(*batch_where_larger_actions_pay(policy))
    # KL(N(0,1) || N(1,1)) = 0.5: far outside; yet its surrogate is the largest of the three
    scores = scorer.evaluate_many([policy.mu], [torch.tensor([[0.0], [0.1], [1.0]])])
    assert int(torch.argmax(scorer.last_surrogate)) == 2
    assert scores[2] == -math.inf
    assert math.isfinite(scores[1]) and scores[1] > scores[0]
    assert scorer.last_kl[2] == pytest.approx(0.5, rel=0.2)
    assert scorer.last_radius == 0.01


def test_trust_region_widens_to_the_current_policy_and_none_disables_it():
    policy = GaussianPolicy()
    batch = batch_where_larger_actions_pay(policy)
    with torch.no_grad():
        policy.mu.fill_(0.3)  # the update went further than max_kl: KL ~ 0.045
    scorer = SurrogateEvaluator(policy.log_prob, max_kl=0.01)
    scorer.set_batch(*batch)
    scores = scorer.evaluate_many([policy.mu], [torch.tensor([[0.3], [0.2], [0.5]])])
    assert math.isfinite(scores[0]) and math.isfinite(scores[1])  # the incumbent is inside
    assert scores[2] == -math.inf
    assert scorer.last_radius == pytest.approx(float(scorer.last_kl[0]))
    unbounded = SurrogateEvaluator(policy.log_prob, max_kl=None)
    unbounded.set_batch(*batch)
    assert math.isfinite(unbounded.evaluate_many([policy.mu], [torch.tensor([[2.0]])])[0])


def test_clipped_surrogate_is_pessimistic():
    policy = GaussianPolicy()
    batch = batch_where_larger_actions_pay(policy)
    plain = SurrogateEvaluator(policy.log_prob, max_kl=None)
    clipped = SurrogateEvaluator(policy.log_prob, max_kl=None, clip=0.2)
    for scorer in (plain, clipped):
        scorer.set_batch(*batch)
    rows = [torch.tensor([[0.0], [0.3]])]
    assert clipped.evaluate_many([policy.mu], rows)[1] < plain.evaluate_many([policy.mu], rows)[1]


def test_errors_name_the_fix_and_restore_the_parameters():
    policy = GaussianPolicy()
    scorer = SurrogateEvaluator(policy.log_prob)
    with pytest.raises(RuntimeError, match="set_batch"):
        scorer.evaluate_many([policy.mu], [torch.zeros(2, 1)])
    with pytest.raises(ValueError, match="max_kl"):
        SurrogateEvaluator(policy.log_prob, max_kl=0.0)
    with pytest.raises(TypeError, match="callable"):
        SurrogateEvaluator("not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows"):
        scorer.set_batch(torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(3), torch.zeros(3))

    calls = []

    def failing_log_prob(obs, actions):
        calls.append(policy.mu.item())
        if len(calls) == 3:
            raise FloatingPointError("boom")
        return policy.log_prob(obs, actions)

    failing = SurrogateEvaluator(failing_log_prob)
    failing.set_batch(*batch_where_larger_actions_pay(policy))
    with pytest.raises(FloatingPointError):
        failing.evaluate_many([policy.mu], [torch.tensor([[0.5], [0.7]])])
    assert policy.mu.item() == 0.0


def test_explore_commits_the_surrogates_best_candidate_with_zero_env_steps():
    policy = GaussianPolicy()
    optimizer = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), seed=0)
    batch = batch_where_larger_actions_pay(policy)
    for step in range(4):  # anchors 0.00 .. 0.06, the incumbent at 0.06 (inside a 0.05 KL bound)
        with torch.no_grad():
            policy.mu.fill_(0.02 * step)
        optimizer.record()
    scorer = SurrogateEvaluator(policy.log_prob, max_kl=0.05)
    search = SearchStep(optimizer, scorer, candidate_seed=lambda cycle: cycle)
    assert search.due(1, global_step=0, counted_steps=0)
    result, used = search.run(obs_normalizer=None, global_step=0, batch=batch)
    assert used == 0 and search.eval_env_steps == 0
    # every candidate lies between the anchors, below the incumbent's mean: none beats it here
    assert result.incumbent_score == max(scorer.last_surrogate.tolist())
    assert not result.committed


def test_deferred_search_waits_for_the_next_batch_and_survives_a_checkpoint():
    policy = GaussianPolicy()
    optimizer = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), seed=0)
    for step in range(3):
        with torch.no_grad():
            policy.mu.fill_(-0.05 * step)  # the update moved the wrong way
        optimizer.record()
    scorer = SurrogateEvaluator(policy.log_prob, max_kl=0.05)
    search = SearchStep(optimizer, scorer, candidate_seed=lambda cycle: cycle, defer=True)
    assert not search.due(1, global_step=0, counted_steps=0)
    assert search.pending
    restored = SearchStep(optimizer, scorer, candidate_seed=lambda cycle: cycle, defer=True)
    restored.load_state_dict(search.state_dict())
    assert restored.pending
    # the next batch, played by the current policy (mu = -0.1), says larger means pay
    result, used = restored.run(None, 0, batch=batch_where_larger_actions_pay(policy))
    assert used == 0 and not restored.pending and restored.cycle == 1
    assert result.committed and policy.mu.item() > -0.1


SCRIPTS = Path(__file__).resolve().parents[1] / "single_file_baselines"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "trpo"])
@pytest.mark.parametrize("score_with", ["surrogate", "surrogate-next"])
def test_scripts_score_for_free(algo, score_with, tmp_path_factory):
    pytest.importorskip("mujoco")
    pytest.importorskip("tyro")
    from tests.test_ppo_script import TINY as PPO_TINY
    from tests.test_trpo_script import TINY as TRPO_TINY

    tiny = PPO_TINY if algo == "ppo" else TRPO_TINY
    # surrogate-next is a research option (the benchmarks' variants); surrogate is in both scripts
    name = f"{algo}_continuous_action" + ("_research" if score_with == "surrogate-next" else "")
    script = ScriptUnderTest(SCRIPTS / f"{name}.py", tiny, tmp_path_factory)
    run = script.train(f"{algo}-{score_with}", "--score-with", score_with, "--total-timesteps", 512)
    searches = run.values("explorler/num_candidates")
    assert len(searches) >= 2
    assert set(run.values("explorler/eval_env_steps")) == {0.0}
    # every counted env step is a training step: the searches spent none
    assert all(value == step for step, value in run.scalars["charts/total_env_steps"])
    assert run.steps("charts/total_env_steps")[-1] >= 512


@pytest.mark.slow
@pytest.mark.parametrize("score_with", ["surrogate", "surrogate-next"])
def test_free_scoring_with_reused_rollouts_is_refused(tmp_path, score_with):
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "ppo_continuous_action_research.py"), "--score-with", score_with,
         "--reuse-candidate-rollouts", "winner", "--total-timesteps", "64"],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"--score-with {score_with} plays none: choose one of them" in proc.stderr


@pytest.mark.parametrize("flag", ["explore_every", "eval_every"])
def test_a_schedule_of_zero_iterations_is_refused_before_training(flag):
    from explorler_optim.rl.harness import check_settings

    settings = dict(num_iterations=2, batch_size=64, budget_tolerance=0.0, total_timesteps=128,
                    max_episode_steps=50, env_id="Hopper-v5", explorler=True, count_eval_steps=True,
                    surrogate_max_kl=0.01, score_with="env", landscape_every=0,
                    explore_every=20, eval_every=10)  # fmt: skip
    assert check_settings(types.SimpleNamespace(**settings)) == (128, 50)
    with pytest.raises(SystemExit, match=f"--{flag.replace('_', '-')} must be >= 1"):
        check_settings(types.SimpleNamespace(**{**settings, flag: 0}))
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        SearchStep(None, None, candidate_seed=lambda search: search, every=0)
