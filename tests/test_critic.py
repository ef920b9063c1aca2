"""CriticEvaluator: ranks candidates by a critic's value of their own actions, zero env steps."""

import math

import pytest
import torch

from explorler_optim import Explorer
from explorler_optim.rl import CriticEvaluator, RunEvaluators, SearchStep


def critic(obs, act):
    """A Q-function that values actions near 1 most, in every state."""
    return -(act - 1.0).square().sum(-1)


def test_higher_valued_actions_rank_higher_and_no_env_steps_are_spent():
    actor = torch.nn.Linear(3, 1)
    scorer = CriticEvaluator(lambda obs: critic(obs, actor(obs)))
    scorer.set_batch(torch.randn(128, 3))
    near, far = torch.zeros(3, 1, 3), torch.zeros(3, 1)
    far[:] = torch.tensor([[0.9], [-3.0], [5.0]])  # biases: actions 0.9, -3 and 5 in every state
    before = [p.detach().clone() for p in actor.parameters()]
    scores = scorer.evaluate_many([actor.weight, actor.bias], [near, far])
    assert scores.dtype == torch.float64 and scores.shape == (3,)
    assert scores.tolist() == pytest.approx([-0.01, -16.0, -16.0])
    assert int(torch.argmax(scores)) == 0 and scores[0] > scores[1]
    assert all(torch.equal(p, b) for p, b in zip(actor.parameters(), before, strict=True))  # restored
    assert scorer.total_env_steps == scorer.last_env_steps == scorer.episodes == 0


def test_candidates_share_their_action_noise_and_leave_the_global_generator_alone():
    actor = torch.nn.Linear(2, 1)
    scorer = CriticEvaluator(lambda obs: critic(obs, actor(obs) + torch.randn(len(obs), 1)))
    scorer.set_batch(torch.randn(64, 2))
    same = torch.stack([actor.weight.detach()] * 2), torch.stack([actor.bias.detach()] * 2)
    state = torch.get_rng_state()
    first = scorer.evaluate_many([actor.weight, actor.bias], list(same))
    assert first[0] == first[1]  # the same noise for every candidate: common random numbers
    assert torch.equal(torch.get_rng_state(), state)
    scorer.seed = 5
    assert scorer.evaluate_many([actor.weight, actor.bias], list(same))[0] != first[0]


def test_explore_commits_the_critics_best_candidate_through_a_search_step():
    actor = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(actor.weight)
    scorer = CriticEvaluator(lambda obs: critic(obs, actor(obs) + 1.0))  # best: weight 0 -> action 1
    explorer = Explorer(actor.parameters(), seed=0)
    search = SearchStep(explorer, scorer, candidate_seed=lambda cycle: cycle, budget_limit=10, episode_cap=5)
    with torch.no_grad():
        for step in range(5):  # anchors at weights -0.5, 0, -0.5, 0, -0.5: the incumbent is not the best
            actor.weight.add_(0.5 if step % 2 else -0.5)
            explorer.record()
    scorer.set_batch(torch.randn(32, 3))
    assert search.due(1, global_step=10, counted_steps=10)  # a search bounded by 0 env steps fits
    result, used = search.run(obs_normalizer=None, global_step=10)
    assert used == 0 and search.eval_env_steps == 0
    assert result.incumbent_score == pytest.approx(float(scorer.last_values[0]))  # row 0
    assert result.best_score == pytest.approx(float(scorer.last_values[1:].max()))
    assert result.committed and result.best_score > result.incumbent_score
    assert scorer.__call__() == pytest.approx(max(result.best_score, result.incumbent_score))


def test_errors_name_the_fix():
    with pytest.raises(TypeError, match="value"):
        CriticEvaluator("not callable")  # type: ignore[arg-type]
    scorer = CriticEvaluator(lambda obs: obs.sum(-1))
    with pytest.raises(RuntimeError, match="set_batch"):
        scorer()
    with pytest.raises(ValueError, match="no states"):
        scorer.set_batch(torch.zeros(0, 3))
    scorer.set_batch(torch.ones(4, 3))
    assert scorer() == 3.0 and "4 states" in repr(scorer)
    bad = CriticEvaluator(lambda obs: obs)  # one value per state and feature
    bad.set_batch(torch.ones(4, 3))
    with pytest.raises(ValueError, match="one value per state"):
        bad()
    param = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="expected"):
        scorer.evaluate_many([param], [torch.zeros(3, 5)])
    nan = CriticEvaluator(lambda obs: obs.sum(-1) * math.nan)  # the Explorer's on_invalid decides
    nan.set_batch(torch.ones(2, 3))
    assert math.isnan(nan())


def test_run_evaluators_build_a_critic_scorer_and_audit_the_episodes_it_replaced():
    import gymnasium as gym

    make = lambda: gym.make("Pendulum-v1", max_episode_steps=5)  # noqa: E731
    policy = torch.nn.Linear(3, 1)
    evaluators = RunEvaluators.build(
        policy, make, None, heldout_episodes=1, heldout_seed=0, candidate_episodes=1,
        truth_episodes=2, score_with="critic", critic_value=lambda obs: policy(obs).sum(-1),
    )  # fmt: skip
    assert isinstance(evaluators.candidate, CriticEvaluator)
    assert sorted(evaluators.audit.audits) == ["env", "paper", "truth"]
    assert evaluators.heldout.obs_normalizer is None  # no statistics: raw observations
    evaluators.close()
    with pytest.raises(ValueError, match="critic_value"):
        RunEvaluators.build(policy, make, None, heldout_episodes=1, heldout_seed=0, score_with="critic")
