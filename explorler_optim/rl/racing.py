"""Racing (successive halving): spend episodes on the candidates that still look best.

``racing_schedule`` plans the rungs; ``race`` plays them, cutting survivors further when their
projected env steps would exceed the budget, and scores every candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["RaceOutcome", "race", "racing_schedule"]

# plays (candidate, episode) pairs: (candidate_of_pair, episode_of_pair) -> (returns, lengths)
PlayPairs = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def racing_schedule(
    n: int, episodes: int, eta: float = 3.0, budget: float = 0.5, min_survivors: int = 1
) -> list[tuple[int, int]]:
    """Successive-halving schedule: list of (survivors, total episodes per survivor) per rung.

    Rung 0 gives every candidate one episode; rung k keeps the best ``ceil(n_{k-1} / eta)``
    (at least ``min_survivors``) and gives them one more episode; the last rung tops the
    survivors up to ``episodes``. Racing stops early once one candidate is left. If the
    schedule would spend more than ``budget * n * episodes`` episodes, ``eta`` is raised until
    it fits (or only one survivor is left after rung 0). With ``episodes <= 1`` or ``n <= 2`` the
    schedule is exhaustive: ``[(n, episodes)]``.

    Args:
        n: candidates raced.
        episodes: episodes a finalist plays.
        eta: the fraction ``1 / eta`` of candidates that survives each rung.
        budget: the most the schedule may spend, as a fraction of the exhaustive
            ``n * episodes`` episodes.
        min_survivors: candidates kept at least after each rung.

    Returns:
        ``[(survivors, episodes per survivor so far), ...]``, one pair per rung.

    Example:
    >>> racing_schedule(9, 3)
    [(9, 1), (3, 2), (1, 3)]
    >>> racing_schedule(2, 5)
    [(2, 5)]
    """
    if episodes <= 1 or n <= 2:
        return [(n, episodes)]
    full = n * episodes
    e = float(eta)
    while True:
        schedule = _halving(n, episodes, e, min_survivors)
        if schedule_cost(schedule) <= budget * full or schedule[1][0] <= 1 or e > n:
            return schedule
        e += 0.5


def _halving(n: int, episodes: int, eta: float, min_survivors: int) -> list[tuple[int, int]]:
    schedule = [(n, 1)]
    survivors = n
    while schedule[-1][1] < episodes and survivors > 1:
        survivors = max(min_survivors, math.ceil(survivors / eta), 1)
        survivors = min(survivors, schedule[-1][0])
        schedule.append((survivors, schedule[-1][1] + 1))
    if schedule[-1][1] < episodes and schedule[-1][0] != 1:
        schedule[-1] = (schedule[-1][0], episodes)  # top the finalists up to `episodes`
    # (one candidate left: its score stands on the episodes it played)
    return schedule


def schedule_cost(schedule: list[tuple[int, int]]) -> int:
    """Episodes a schedule plays: the sum over rungs of survivors x the rung's new episodes."""
    cost, played = 0, 0
    for survivors, episodes in schedule:
        cost += survivors * (episodes - played)
        played = episodes
    return cost


@dataclass
class RaceOutcome:
    scores: np.ndarray  # (n,) float64; eliminated candidates capped just below the best finalist
    episode_counts: np.ndarray  # (n,) int64 episodes each candidate played
    lengths: np.ndarray  # (episodes played,) int64 lengths, in play order
    returns: np.ndarray  # (n, episodes) float64, NaN for episodes a candidate did not play


def race(play: PlayPairs, n: int, episodes: int, eta: float, budget: float) -> RaceOutcome:
    """Successive halving. The static schedule bounds the episodes; in addition the number
    of survivors of each rung is cut so that the projected env steps (survivors' mean
    episode lengths so far) stay within ``budget`` x the estimated exhaustive cost
    (``n * episodes`` x the mean episode length of rung 0), but never below 2: better
    policies often live longer, so survivors' episodes cost more than average ones."""
    schedule = racing_schedule(n, episodes, eta, budget)
    planned = list(schedule)  # the schedule as cut so far
    return_sums = np.zeros(n, dtype=np.float64)
    episode_counts = np.zeros(n, dtype=np.int64)
    step_counts = np.zeros(n, dtype=np.int64)
    returns = np.full((n, episodes), np.nan)
    lengths_played = []
    alive = np.arange(n)
    played = 0  # episodes each survivor has played
    spent = 0  # env steps so far
    allowed = 0.0  # env steps allowed: budget x the exhaustive cost estimated after rung 0
    for rung, (planned_survivors, rung_episodes) in enumerate(schedule):
        survivors = planned_survivors
        if rung > 0:
            means = return_sums[alive] / episode_counts[alive]
            ranked = alive[np.argsort(-means, kind="stable")]  # ties: lower index first
            mean_lengths = step_counts / np.maximum(episode_counts, 1)
            survivors = _cut_to_budget(
                survivors, planned[rung:], ranked, mean_lengths, played, spent, allowed
            )
            if survivors == 1:
                break  # one candidate left: more episodes would not change the pick
            alive = np.sort(ranked[:survivors])
            planned = planned[:rung] + [(min(s, survivors), e) for s, e in planned[rung:]]
        candidate_of_pair = np.repeat(alive, rung_episodes - played)
        episode_of_pair = np.tile(np.arange(played, rung_episodes), len(alive))
        rung_returns, rung_lengths = play(candidate_of_pair, episode_of_pair)
        np.add.at(return_sums, candidate_of_pair, rung_returns)
        np.add.at(episode_counts, candidate_of_pair, 1)
        np.add.at(step_counts, candidate_of_pair, rung_lengths)
        returns[candidate_of_pair, episode_of_pair] = rung_returns
        lengths_played.append(rung_lengths)
        spent += int(rung_lengths.sum())
        if rung == 0:
            allowed = budget * (float(rung_lengths.mean()) * n * episodes)
        played = rung_episodes
    scores = _cap_eliminated(return_sums / np.maximum(episode_counts, 1), episode_counts)
    return RaceOutcome(scores, episode_counts, np.concatenate(lengths_played), returns)


def _cut_to_budget(
    survivors: int,
    remaining: list[tuple[int, int]],
    ranked: np.ndarray,
    mean_lengths: np.ndarray,
    played: int,
    spent: int,
    allowed: float,
) -> int:
    """Drop the worst survivors (never below 2) until the remaining rungs' projected env steps fit."""
    while survivors > 2:  # keep a real final: at least 2 survivors
        cost, cap, last = 0.0, survivors, played
        for later_survivors, later_episodes in remaining:
            cap = min(cap, later_survivors)
            cost += mean_lengths[ranked[:cap]].sum() * (later_episodes - last)
            last = later_episodes
        if spent + cost <= allowed:
            break
        survivors -= 1
    return survivors


def _cap_eliminated(scores: np.ndarray, episode_counts: np.ndarray) -> np.ndarray:
    """The winner must be a candidate that played the most episodes: an eliminated candidate
    whose mean over fewer episodes beats the best finalist is capped just below it."""
    final = episode_counts == episode_counts.max()
    cap = np.nextafter(scores[final].max(), -np.inf)
    return np.where(final, scores, np.minimum(scores, cap))
