"""``CriticEvaluator``: score candidate policies by a Q-critic on replay states, no env steps.

An on-policy batch cannot rank policies that did not collect it; an off-policy agent's critic can.
SAC's critics are trained on a replay buffer to value any action in the states they hold, so a
candidate actor is scored by what the critic says its own actions are worth there: for SAC the
actor's objective, the mean over replay states of ``min(Q1, Q2)(s, a) - alpha * log pi(a|s)`` with
``a ~ pi(.|s)``. This is how hybrids such as CEM-RL rank a population without playing it. The
score is only as good as the critic is away from the data: a candidate far from the policies that
filled the buffer may be overvalued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from explorler_optim.rl._candidates import check_candidates, score_each
from explorler_optim.rl.normalize import ObsNormalizer

__all__ = ["CriticEvaluator"]


class CriticEvaluator:
    """Scores candidates by a critic's value of their own actions on a batch of states.

    Give it the states with :meth:`set_batch` before each search (e.g. a sample of the replay
    buffer); :meth:`evaluate_many` then loads each candidate into ``params`` in turn and scores it
    by ``value(observations).mean()``, restoring the parameters afterwards. Every candidate draws
    its action noise from the same seed (``seed``, which a ``SearchStep`` prepares each cycle), so
    stochastic actions compare candidates on common random numbers, and the global random
    generators are left as they were.

    It follows the evaluator protocol of :class:`~explorler_optim.rl.SearchStep`: it plays no
    episodes (``episodes`` and ``total_env_steps`` stay 0, so a budget never skips its searches),
    and the ``obs_normalizer`` a search step gives :meth:`prepare` is ignored (the states are given
    as the policy sees them).

    Args:
        value: ``value(observations) -> (N,)`` tensor, the critic's value of the policy's own
            actions in each state, under the parameters as they are loaded now; higher is better.
            For SAC: ``a, log_pi = sample(actor, obs)``, then ``min(q1(obs, a), q2(obs, a)) -
            alpha * log_pi``.

    Attributes:
        last_values: ``(rows,)`` float64 scores of every row of the last :meth:`evaluate_many`.
        last_env_steps: always 0.

    Example:
        >>> from explorler_optim import Explorer
        >>> actor = torch.nn.Linear(3, 1)
        >>> def q(obs, act):  # a critic that prefers actions near 1
        ...     return -(act - 1.0).square().sum(-1)
        >>> scorer = CriticEvaluator(lambda obs: q(obs, actor(obs)))
        >>> scorer.set_batch(torch.randn(64, 3))
        >>> explorer = Explorer(actor.parameters(), seed=0)
        >>> for _ in range(4):
        ...     _ = actor.bias.data.add_(0.1); explorer.record()
        >>> result = explorer.explore(scorer)
        >>> scorer.total_env_steps, len(scorer.last_values) == result.num_candidates + 1
        (0, True)
    """

    episodes = 0  # a search's env-step bound is 0: the budget rule never skips it

    def __init__(self, value: Callable[[Tensor], Tensor]) -> None:
        if not callable(value):
            raise TypeError(
                f"value must be a callable value(observations) -> (N,) tensor, got {type(value).__name__}"
            )
        self.value = value
        self.observations: Tensor | None = None
        self.seed = 0  # set by a SearchStep each cycle (prepare): the candidates' common action noise
        self.obs_normalizer: ObsNormalizer | None = None  # set by a SearchStep (prepare), unused
        self.total_env_steps = 0
        self.last_env_steps = 0
        self.last_values = torch.zeros(0, dtype=torch.float64)

    def prepare(
        self, obs_normalizer: ObsNormalizer | None, seed: int | None = None, batch: Any = None
    ) -> None:
        """Point the evaluator at the next search (``CandidateEvaluator.prepare``).

        Args:
            obs_normalizer: kept but unused (the states are given as the policy sees them).
            seed: the candidates' common action noise for the next search; ``None`` keeps ``seed``.
            batch: ignored: an on-policy update's batch does not hold the states a critic scores
                on; give those with :meth:`set_batch`.
        """
        self.obs_normalizer = obs_normalizer
        if seed is not None:
            self.seed = int(seed)

    def set_batch(self, observations: Tensor) -> None:
        """The ``(N, *obs_shape)`` states the next search is scored on (detached).

        Raises:
            ValueError: the batch is empty.
        """
        if observations.dim() == 0 or observations.shape[0] == 0:
            raise ValueError(
                "CriticEvaluator.set_batch: no states; pass (N, *obs_shape) observations, N >= 1"
            )
        self.observations = observations.detach()

    @torch.no_grad()
    def __call__(self) -> float:
        """The score of the parameters as loaded now (the one-by-one protocol of ``explore``)."""
        return self._score_loaded()

    @torch.no_grad()
    def evaluate_many(self, params: Sequence[Tensor], candidates: Sequence[Tensor]) -> Tensor:
        """Score every row of ``candidates`` (``candidates[i]``: ``(N, *params[i].shape)``).

        Returns:
            ``(N,)`` float64 scores.

        Raises:
            RuntimeError: no batch was given (call :meth:`set_batch` first).
            ValueError: ``candidates`` do not match ``params``.
        """
        check_candidates(params, candidates)
        scores = score_each(params, candidates, self._score_loaded)
        self.last_values = torch.tensor(scores, dtype=torch.float64)
        return self.last_values.clone()

    def _score_loaded(self) -> float:
        if self.observations is None:
            raise RuntimeError(
                "CriticEvaluator has no states: call set_batch(observations) (e.g. a replay sample) "
                "before each search"
            )
        device = self.observations.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            values = self.value(self.observations).reshape(-1)
        if values.numel() != self.observations.shape[0]:
            raise ValueError(
                f"value returned {values.numel()} values for {self.observations.shape[0]} states; "
                "return one value per state"
            )
        return float(values.double().mean())  # NaN: the Explorer's on_invalid decides

    def close(self) -> None:
        """Nothing to close (no envs); drops the states."""
        self.observations = None

    def __repr__(self) -> str:
        states = "no states" if self.observations is None else f"{self.observations.shape[0]:,} states"
        return f"CriticEvaluator({states}, seed={self.seed})"
