"""The design space beyond ESA + argmax: evolutionary generators, selection rules, success rates."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from explorler_optim import Explorer, ExploRLerOptimizer, SteeredSearch, make_search
from explorler_optim.evolution import CMAESSearch, PopulationSearch, anchor_spread
from explorler_optim.rl import PolicyEvaluator
from explorler_optim.rl.harness import check_settings, search_operator, selection_rule
from explorler_optim.selection import (
    ArgmaxSelection,
    SelectionRule,
    SuccessFirstSelection,
    TournamentSelection,
    make_selection,
)

torch.set_num_threads(1)

ALL_SEARCHES = ("esa", "random-walk", "checkpoint-average", "gaussian", "pbt", "cma-es")
STEERED = ("pbt", "cma-es")


def drive(search, coords, seed=0, objective=None):
    """Run ``search`` over ``coords`` round by round, scoring with ``objective`` (default: -|x|^2);
    returns every round's points."""
    objective = objective or (lambda points: -points.square().sum(1))
    rounds = search.start(coords, torch.Generator().manual_seed(seed))
    asked = []
    while (points := rounds.ask()) is not None:
        asked.append(points)
        rounds.tell(objective(points))
    return asked


def explorer_over(anchors, search, seed=0, **options):
    """An Explorer of one parameter vector that has recorded ``anchors`` (the last one loaded)."""
    param = nn.Parameter(anchors[-1].clone())
    explorer = Explorer([param], search=search, seed=seed, **options)
    for anchor in anchors:
        with torch.no_grad():
            param.copy_(anchor)
        explorer.record()
    return explorer, param


# ------------------------------------------------------------------------------ generators


@pytest.mark.parametrize("name", ALL_SEARCHES)
def test_every_operator_makes_num_candidates_reproducibly(name):
    search = make_search(name)
    coords = torch.randn(10, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    first = torch.cat(drive(search, coords, seed=5))
    again = torch.cat(drive(make_search(name), coords, seed=5))
    assert first.shape == (search.num_candidates(10), 9)
    assert torch.equal(first, again)
    if name in ("gaussian", "pbt", "cma-es", "random-walk"):  # stochastic: another seed, other points
        assert not torch.equal(first, torch.cat(drive(make_search(name), coords, seed=6)))


@pytest.mark.parametrize("name", ALL_SEARCHES)
def test_explorer_scores_every_round_and_candidates_match_the_count(name):
    anchors = torch.randn(10, 40, generator=torch.Generator().manual_seed(0))
    explorer, param = explorer_over(anchors, make_search(name))
    calls = []

    def evaluate():
        calls.append(1)
        return -float(param.square().sum())

    result = explorer.explore(evaluate)
    expected = make_search(name).num_candidates(10)
    assert result.num_candidates == result.scores.numel() == expected
    assert len(calls) == expected + 1  # and the incumbent, once
    assert result.candidate_coords.shape[0] == expected
    assert len(result.round_sizes) == (make_search(name).num_rounds() if name in STEERED else 0)


@pytest.mark.parametrize("name", ALL_SEARCHES)
def test_identical_anchors_give_finite_candidates(name):
    # a converged policy: every anchor the same point (the authors' ESA divided 0 by 0 here)
    anchors = torch.ones(10, 25) * 0.3
    explorer, param = explorer_over(anchors, make_search(name))
    result = explorer.explore(lambda: -float(param.square().sum()))
    assert torch.isfinite(result.scores).all() and torch.isfinite(param).all()
    # and the raw coordinates: a full-rank system of coinciding points
    points = torch.cat(drive(make_search(name), torch.zeros(10, 4, dtype=torch.float64)))
    assert torch.isfinite(points).all()


def test_pbt_keeps_the_best_half_and_children_stay_near_elites():
    coords = torch.randn(10, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    scores = torch.arange(10, dtype=torch.float64)  # anchor 9 best, 0 worst
    rounds = PopulationSearch(noise_scale=0.0).start(coords, torch.Generator().manual_seed(0))
    assert torch.equal(rounds.ask(), coords)
    rounds.tell(scores)
    children = rounds.ask()
    assert rounds.ask() is None
    # no noise: every child is one of the elites (anchors 5-9)
    distances = torch.cdist(children, coords[5:])
    assert bool((distances.min(1).values < 1e-12).all())
    noisy = drive(PopulationSearch(noise_scale=1.0), coords, objective=lambda p: -p[:, 0])[1]
    assert 0 < float((noisy - coords.mean(0)).norm(dim=1).mean()) < 10 * anchor_spread(coords) * 3


def test_steered_operators_have_no_one_shot_search():
    for search in (PopulationSearch(), CMAESSearch()):
        assert isinstance(search, SteeredSearch)
        with pytest.raises(TypeError, match="rounds steered by their scores"):
            search.candidates(torch.randn(10, 20))


def test_evolution_strategy_uses_the_scores_between_rounds():
    coords = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    search = CMAESSearch(popsize=4, rounds=3)
    up = drive(search, coords, objective=lambda p: p[:, 0])
    down = drive(search, coords, objective=lambda p: -p[:, 0])
    assert torch.equal(up[0], down[0])  # the same first round from the same seed ...
    assert not torch.equal(up[2], down[2])  # ... steered apart by the scores
    assert float(up[2][:, 0].mean()) > float(down[2][:, 0].mean())


def planted_optimum_score(search, seed):
    """Best score of a search whose optimum lies 5 units off the anchors' mean, along their plane
    (the anchors spread about 1 unit per coordinate)."""
    g = torch.Generator().manual_seed(123)
    plane = torch.linalg.qr(torch.randn(30, 2, generator=g, dtype=torch.float64))[0].T
    anchors = torch.randn(10, 2, generator=g, dtype=torch.float64) @ plane
    target = anchors.mean(0) + 5.0 * plane[0]
    explorer, param = explorer_over(anchors, search, seed=seed)
    return explorer.explore(lambda: -float((param - target).square().sum())).best_score


def test_evolution_strategy_finds_a_planted_optimum_one_round_misses():
    # the same budget, 30 candidates: 5 rounds of 6 against one round of 30
    found = lambda search: sum(planted_optimum_score(search, seed) > -2.0 for seed in range(10))
    assert found(CMAESSearch(popsize=6, rounds=5)) >= 8
    assert found(CMAESSearch(popsize=30, rounds=1)) == 0


def test_evolution_strategy_leaves_numpy_global_random_state_alone():
    before = np.random.get_state()[1].copy()
    drive(CMAESSearch(), torch.randn(10, 9, dtype=torch.float64))
    assert np.array_equal(np.random.get_state()[1], before)


def test_search_options_are_checked():
    for bad in ({"popsize": 1}, {"rounds": 0}, {"sigma_scale": 0.0}):
        with pytest.raises(ValueError):
            CMAESSearch(**bad)
    with pytest.raises(ValueError, match="keep_fraction"):
        PopulationSearch(keep_fraction=1.0)
    with pytest.raises(ValueError, match="choose one of"):
        make_search("cmaes")


def test_missing_cma_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cma", None)  # import cma raises ImportError
    from explorler_optim.extras import install_hint

    with pytest.raises(ImportError, match="needs the cma package") as raised:
        CMAESSearch()
    assert install_hint("es") in str(raised.value)


# ------------------------------------------------------------------------------ selection


def test_tournament_is_seeded_and_reproducible():
    scores = torch.tensor([5.0, 1.0, 2.0, 3.0, 4.0, 0.0], dtype=torch.float64)
    rule = TournamentSelection(size=2)
    picks = [rule.select(scores, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert picks == [rule.select(scores, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert len(set(picks)) > 1  # not always the argmax ...
    assert 5 not in picks  # ... but never the worst, which loses every tournament it is in
    assert TournamentSelection(size=6).select(scores) == 0  # a tournament of everyone: argmax


def test_tournament_through_the_explorer_is_reproducible_and_honours_the_incumbent():
    anchors = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))

    def run(seed, incumbent_bonus):
        explorer, param = explorer_over(anchors, make_search("gaussian"), seed=seed)
        explorer.selection = TournamentSelection(size=3)
        incumbent = param.detach().clone()
        score = lambda: (
            -float(param.square().sum()) + (incumbent_bonus if torch.equal(param, incumbent) else 0)
        )
        result = explorer.explore(score)
        return result, param.detach().clone(), incumbent

    first, weights, _ = run(0, 0.0)
    again, weights_again, _ = run(0, 0.0)
    assert first.best_index == again.best_index and torch.equal(weights, weights_again)
    # an incumbent that scores above every candidate is kept, whatever the tournament picks
    kept, weights, incumbent = run(0, 1e6)
    assert not kept.committed and torch.equal(weights, incumbent)


class _Scored:
    """A batch evaluator with fixed scores and success rates (row 0: the incumbent)."""

    def __init__(self, scores, rates):
        self.scores, self.rates = torch.tensor(scores, dtype=torch.float64), rates
        self.last_success_rates = None

    def evaluate_many(self, params, candidates):
        n = candidates[0].shape[0]
        self.last_success_rates = None if self.rates is None else torch.tensor(self.rates[:n])
        return self.scores[:n]


def test_success_first_prefers_a_successful_candidate_over_a_higher_return():
    rule = SuccessFirstSelection()
    scores = torch.tensor([100.0, 10.0, 20.0], dtype=torch.float64)
    assert rule.select(scores, torch.tensor([0.0, 1.0, 1.0])) == 2
    assert ArgmaxSelection().select(scores) == 0
    anchors = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))
    explorer, _ = explorer_over(anchors, make_search("gaussian", num_candidates=3))
    explorer.selection = make_selection("success-first")
    # incumbent: return 50, success 0.5; candidates: 100 (never succeeds), 10 and 20 (always do)
    result = explorer.explore(_Scored([50.0, 100.0, 10.0, 20.0], [0.5, 0.0, 1.0, 1.0]))
    assert result.committed and result.best_index == 2
    assert result.success_rates.tolist() == [0.0, 1.0, 1.0] and result.incumbent_success_rate == 0.5
    assert result.scalars()["best_success_rate"] == 1.0
    # the incumbent rule compares (success, return): an equally successful incumbent with more return
    explorer, _ = explorer_over(anchors, make_search("gaussian", num_candidates=3))
    explorer.selection = make_selection("success-first")
    kept = explorer.explore(_Scored([50.0, 100.0, 10.0, 20.0], [1.0, 0.0, 1.0, 1.0]))
    assert not kept.committed


def test_success_first_without_a_success_signal_raises_and_restores():
    anchors = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))
    explorer, param = explorer_over(anchors, make_search("gaussian", num_candidates=3))
    explorer.selection = make_selection("success-first")
    before = param.detach().clone()
    with pytest.raises(ValueError, match="is_success"):
        explorer.explore(_Scored([50.0, 100.0, 10.0, 20.0], None))
    assert torch.equal(param, before) and explorer.num_anchors == 10


def test_selection_names_and_options():
    assert isinstance(make_selection(), ArgmaxSelection)
    assert repr(make_selection("tournament", size=2)) == "TournamentSelection(size=2)"
    with pytest.raises(ValueError, match="choose one of"):
        make_selection("best")
    with pytest.raises(ValueError, match="options are"):
        make_selection("argmax", size=2)
    with pytest.raises(ValueError, match="size"):
        TournamentSelection(size=0)
    with pytest.raises(TypeError, match="SelectionRule"):
        Explorer([nn.Parameter(torch.zeros(2))], selection="argmax")  # type: ignore[arg-type]


def test_optimizer_forwards_the_selection_and_the_default_is_argmax():
    policy = nn.Linear(3, 2)
    opt = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), seed=0)
    assert isinstance(opt.selection, ArgmaxSelection) and isinstance(opt.selection, SelectionRule)
    opt = ExploRLerOptimizer(
        torch.optim.SGD(policy.parameters(), lr=0.1), selection=TournamentSelection(2), seed=0
    )
    assert opt.explorer.selection.size == 2 and "TournamentSelection(size=2)" in repr(opt)


# ------------------------------------------------------------------------------ success rates


class GoalEnv(gym.Env):
    """One-step episodes: success (and reward 1) when the action is above the reset seed's threshold.

    Seeds 0, 1, 2 set thresholds -0.5, 0.0, 0.5; ``report=False`` never puts ``is_success`` in info.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, report: bool = True):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.report, self.threshold = report, 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.threshold = -0.5 + 0.5 * ((seed or 0) % 3)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        success = float(action[0]) > self.threshold
        info = {"is_success": success} if self.report else {}
        return np.zeros(1, np.float32), float(action[0]), True, False, info


def bias_policy(value: float = 0.0) -> nn.Module:
    policy = nn.Sequential(nn.Linear(1, 1))
    with torch.no_grad():
        policy[0].weight.zero_()
        policy[0].bias.fill_(value)
    return policy


def test_evaluator_reports_success_rates_beside_returns():
    policy = bias_policy()
    evaluator = PolicyEvaluator(policy, GoalEnv, episodes=3, seed=0)
    params = list(policy.parameters())
    biases = torch.tensor([[-0.8], [-0.2], [0.2], [0.8]])  # beat 0, 1, 2 and 3 of the thresholds
    candidates = [torch.zeros(4, 1, 1), biases]
    returns = evaluator.evaluate_many(params, candidates)
    assert torch.allclose(returns, biases.reshape(-1).double(), atol=1e-6)
    assert evaluator.last_success_rates.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert evaluator() == pytest.approx(0.0) and evaluator.last_success_rates.tolist() == [
        pytest.approx(1 / 3)
    ]
    silent = PolicyEvaluator(policy, lambda: GoalEnv(report=False), episodes=2)
    silent.evaluate_many(params, candidates)
    assert silent.last_success_rates is None
    evaluator.close()
    silent.close()


def test_success_rates_with_racing_and_worker_processes():
    policy = bias_policy()
    params = list(policy.parameters())
    candidates = [torch.zeros(4, 1, 1), torch.tensor([[-0.8], [-0.2], [0.2], [0.8]])]
    with PolicyEvaluator(policy, GoalEnv, episodes=3, racing=True) as raced:
        raced.evaluate_many(params, candidates)
        counts = raced.last_episode_counts.tolist()
        wins = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]  # candidate x episode (thresholds by seed)
        expected = [sum(row[:played]) / played for row, played in zip(wins, counts)]
        assert raced.last_success_rates.tolist() == pytest.approx(expected)


@pytest.mark.slow
def test_success_rates_from_worker_processes_match_one_process():
    policy = bias_policy()
    params = list(policy.parameters())
    candidates = [torch.zeros(4, 1, 1), torch.tensor([[-0.8], [-0.2], [0.2], [0.8]])]
    with PolicyEvaluator(policy, GoalEnv, episodes=3, workers=2) as pooled:
        pooled.evaluate_many(params, candidates)
        assert pooled.last_success_rates.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_success_first_end_to_end_with_the_evaluator():
    policy = bias_policy(-0.8)  # the incumbent never succeeds
    params = list(policy.parameters())
    explorer = Explorer(params, search=make_search("gaussian"), selection=SuccessFirstSelection(), seed=0)
    for step in range(10):
        with torch.no_grad():
            policy[0].bias.fill_(-0.8 + 0.15 * step)
        explorer.record()
    with torch.no_grad():
        policy[0].bias.fill_(-0.8)
    with PolicyEvaluator(policy, GoalEnv, episodes=3) as evaluator:
        result = explorer.explore(evaluator)
    assert result.committed and result.success_rates is not None
    assert float(result.success_rates[result.best_index]) == float(result.success_rates.max()) > 0
    with PolicyEvaluator(policy, lambda: GoalEnv(report=False), episodes=1) as silent:
        for _ in range(2):
            explorer.record()
        with pytest.raises(ValueError, match="is_success"):
            explorer.explore(silent)


# ------------------------------------------------------------------------------ the scripts' flags


def test_script_flags_map_onto_the_library():
    args = SimpleNamespace(
        search="cma-es", es_popsize=4, es_rounds=3, selection="tournament", tournament_size=2
    )
    search = search_operator(args)
    assert isinstance(search, CMAESSearch) and search.num_candidates(10) == 12
    assert selection_rule(args).size == 2
    pbt = search_operator(SimpleNamespace(search="pbt", pbt_noise_scale=0.25))
    assert isinstance(pbt, PopulationSearch) and pbt.noise_scale == 0.25
    with pytest.raises(SystemExit, match="--search cma-es"):
        search_operator(SimpleNamespace(search="cma-es", es_popsize=1, es_rounds=2))


def test_rounds_do_not_combine_with_one_round_readers():
    args = SimpleNamespace(
        budget_tolerance=0.01, num_iterations=2, batch_size=64, total_timesteps=100, max_episode_steps=50,
        env_id="Hopper-v5", explorler=True, count_eval_steps=True, surrogate_max_kl=0.01, score_with="env",
        landscape_every=0, search="pbt", reuse_candidate_rollouts="winner", selection_truth_episodes=0,
    )  # fmt: skip
    with pytest.raises(SystemExit, match="scores candidates in rounds"):
        check_settings(args)
    args.reuse_candidate_rollouts = "none"
    assert check_settings(args) == (129, 50)


def test_the_selection_audit_refuses_a_multi_round_search():
    from explorler_optim.audit import SelectionAudit

    anchors = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))
    explorer, _ = explorer_over(anchors, CMAESSearch(popsize=3, rounds=2))
    audit = SelectionAudit(_Scored([0.0] * 4, None), {"truth": _Scored([0.0] * 4, None)})
    result = explorer.explore(audit)
    with pytest.raises(ValueError, match="2 rounds"):
        audit.add_result(result)


def test_kept_row_of_a_multi_round_search_is_in_the_last_round():
    anchors = torch.randn(10, 20, generator=torch.Generator().manual_seed(0))
    explorer, param = explorer_over(anchors, CMAESSearch(popsize=4, rounds=2))
    result = explorer.explore(lambda: -float(param.square().sum()))
    if result.committed and result.best_index >= 4:
        assert result.kept_row == result.best_index - 4
    else:
        assert result.kept_row is None
    assert math.isfinite(result.best_score)
