"""``SurrogateEvaluator``: score candidate policies on the batch the update just used, no env steps.

ExploRLer normally scores each candidate by playing episodes, and at an equal budget of env steps
those episodes cost more than the better policy they find. The on-policy batch the update was
computed from already says how good a nearby policy is: for a policy ``pi_c`` and the batch's
behaviour policy ``pi_b``, the importance-weighted advantage

    L(pi_c) = mean over the batch of  pi_c(a|s) / pi_b(a|s) * A(s, a)

is the first-order estimate of ``J(pi_c) - J(pi_b)`` that PPO and TRPO maximise (Kakade and
Langford 2002; Schulman et al. 2015). It is trustworthy only near ``pi_b``, so candidates outside a
trust region (a mean KL divergence to ``pi_b`` above a bound, as TRPO's line search keeps) are
scored ``-inf``. Every estimate uses only log-probabilities of the batch's actions, so it works for
any policy whose log-likelihood a callable can compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from explorler_optim.rl._candidates import check_candidates, score_each
from explorler_optim.rl.normalize import ObsNormalizer

__all__ = ["SurrogateBatch", "SurrogateEvaluator"]


@dataclass(frozen=True)
class SurrogateBatch:
    """The samples a surrogate score is measured on (one row per env step).

    Attributes:
        observations: ``(N, *obs_shape)`` the observations the policy saw (as it saw them,
            normalised if the training env normalises).
        actions: ``(N, *act_shape)`` the actions taken.
        log_probs: ``(N,)`` the behaviour policy's log-probability of each action.
        advantages: ``(N,)`` the advantage estimates the update used (e.g. GAE).
    """

    observations: Tensor
    actions: Tensor
    log_probs: Tensor
    advantages: Tensor

    def __post_init__(self) -> None:
        n = self.observations.shape[0]
        for name in ("actions", "log_probs", "advantages"):
            rows = getattr(self, name).shape[0]
            if rows != n:
                raise ValueError(
                    f"SurrogateBatch: {name} has {rows} rows, observations {n}; pass one row per "
                    "step (flat (N, ...) tensors, or a rollout's with log_probs shaped (T, E))"
                )
        if n == 0:
            raise ValueError("SurrogateBatch: the batch is empty; pass the update's samples")


class SurrogateEvaluator:
    """Scores candidates by their importance-weighted advantage on a batch: zero env steps.

    Give it the batch with :meth:`set_batch` before each search; :meth:`evaluate_many` then loads
    each candidate into ``params`` in turn, computes ``log_prob(observations, actions)`` under it,
    and scores it by ``mean(ratio * A)`` with ``ratio = exp(log_prob - behaviour log_prob)``
    (``clip``: PPO's pessimistic ``mean(min(ratio * A, clip(ratio) * A))`` instead). The
    parameters are restored afterwards.

    The trust region: a candidate whose KL divergence from the batch's behaviour policy
    (estimated on the batch as ``mean((ratio - 1) - log ratio)``, always >= 0) exceeds the radius
    scores ``-inf``. The radius is ``max_kl``, widened to the current parameters' own KL (read
    when :meth:`evaluate_many` is called, before any candidate is loaded) when the update already
    went further, so the current policy (ExploRLer's incumbent, row 0) is always inside it.

    It follows the evaluator protocol of :class:`~explorler_optim.rl.SearchStep`: it plays no
    episodes (``episodes`` and ``total_env_steps`` stay 0), and of the statistics, seed and batch
    a search step passes to :meth:`prepare` it uses only the batch (the batch's observations are
    already as the policy saw them).

    Args:
        log_prob: ``log_prob(observations, actions) -> (N,)`` tensor, the log-likelihood of the
            batch's actions under the policy's parameters as they are loaded now (e.g.
            ``lambda obs, act: Normal(actor(obs), log_std.exp()).log_prob(act).sum(-1)``).
        max_kl: the trust region's radius (mean KL divergence per state); ``None``: no trust region.
        clip: score with PPO's clipped surrogate of this ``epsilon`` (e.g. 0.2); ``None``: the
            plain importance-weighted advantage.
        normalize_advantages: centre and scale the batch's advantages first (as PPO does); the
            centring removes the variance that ``mean(ratio) != 1`` would add to the ranking.

    Attributes:
        last_kl: ``(rows,)`` the KL estimate of every row scored by the last call.
        last_surrogate: ``(rows,)`` every row's surrogate before the trust region was applied.
        last_radius: the trust region's radius in the last call (``inf`` without one).

    Example:
        >>> import torch
        >>> from explorler_optim import ExploRLerOptimizer
        >>> policy = torch.nn.Linear(3, 1)
        >>> log_std = torch.zeros(1)
        >>> def log_prob(obs, act):
        ...     return torch.distributions.Normal(policy(obs), log_std.exp()).log_prob(act).sum(-1)
        >>> obs, act = torch.randn(256, 3), torch.randn(256, 1)
        >>> with torch.no_grad():
        ...     behaviour = log_prob(obs, act)
        >>> scorer = SurrogateEvaluator(log_prob, max_kl=0.05)
        >>> scorer.set_batch(obs, act, behaviour, advantages=act[:, 0] - policy(obs)[:, 0].detach())
        >>> opt = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.01), seed=0)
        >>> for _ in range(4):
        ...     _ = policy.weight.data.add_(0.01); opt.record()
        >>> result = opt.explore(scorer)
        >>> scorer.total_env_steps, len(scorer.last_kl) == result.num_candidates + 1
        (0, True)
    """

    episodes = 0  # a search's env-step bound is 0: the budget rule never skips it

    def __init__(
        self,
        log_prob: Callable[[Tensor, Tensor], Tensor],
        *,
        max_kl: float | None = 0.01,
        clip: float | None = None,
        normalize_advantages: bool = True,
    ) -> None:
        if not callable(log_prob):
            raise TypeError(
                f"log_prob must be a callable log_prob(observations, actions) -> (N,) tensor, got "
                f"{type(log_prob).__name__}"
            )
        if max_kl is not None and not max_kl > 0:
            raise ValueError(f"max_kl must be > 0 (or None for no trust region), got {max_kl!r}")
        if clip is not None and not 0 < clip < 1:
            raise ValueError(f"clip must be in (0, 1) (e.g. 0.2) or None, got {clip!r}")
        self.log_prob = log_prob
        self.max_kl = max_kl
        self.clip = clip
        self.normalize_advantages = bool(normalize_advantages)
        self.batch: SurrogateBatch | None = None
        self.total_env_steps = 0
        self.last_env_steps = 0
        self.last_kl = torch.zeros(0, dtype=torch.float64)
        self.last_surrogate = torch.zeros(0, dtype=torch.float64)
        self.last_radius = math.inf

    def prepare(
        self, obs_normalizer: ObsNormalizer | None, seed: int | None = None, batch: Any = None
    ) -> None:
        """Take the update's ``batch`` for the next search (``CandidateEvaluator.prepare``).

        ``obs_normalizer`` and ``seed`` are not used: the batch is normalised, nothing is reset.
        """
        if batch is not None:
            self.set_batch(*batch)

    def set_batch(self, observations: Tensor, actions: Tensor, log_probs: Tensor, advantages: Tensor) -> None:
        """The batch the next search is scored on (detached; e.g. the update's flattened batch).

        Either flat tensors (``(N, *obs_shape)``, ``(N, *act_shape)``, ``(N,)``, ``(N,)``) or a
        rollout's (``(T, E, *obs_shape)``, ..., ``log_probs`` and ``advantages`` shaped ``(T, E)``):
        the leading dimensions of ``log_probs`` are flattened in every tensor.

        Raises:
            ValueError: the tensors do not hold one row per step.
        """
        lead = log_probs.dim()  # the step dimensions: (N,) or a rollout's (T, E); not a trailing 1
        while lead > 1 and log_probs.shape[lead - 1] == 1:
            lead -= 1

        def rows(tensor: Tensor) -> Tensor:
            tensor = tensor.detach()
            return tensor.flatten(0, lead - 1) if lead > 1 and tensor.dim() >= lead else tensor

        self.batch = SurrogateBatch(
            rows(observations),
            rows(actions),
            log_probs.detach().reshape(-1),
            advantages.detach().reshape(-1),
        )

    @torch.no_grad()
    def __call__(self) -> float:
        """The surrogate of the parameters as loaded now (the one-by-one protocol of ``explore``).

        No trust region applies here (there is no incumbent to widen it to); use
        :meth:`evaluate_many` for that.
        """
        surrogate, _ = self._score_loaded(self._advantages())
        return surrogate

    @torch.no_grad()
    def evaluate_many(self, params: Sequence[Tensor], candidates: Sequence[Tensor]) -> Tensor:
        """Score every row of ``candidates`` (``candidates[i]``: ``(N, *params[i].shape)``).

        Returns:
            ``(N,)`` float64 scores; ``-inf`` for rows outside the trust region.

        Raises:
            RuntimeError: no batch was given (call :meth:`set_batch` first).
            ValueError: ``candidates`` do not match ``params``.
        """
        check_candidates(params, candidates)
        advantages = self._advantages()
        _, current_kl = self._score_loaded(advantages)
        radius = math.inf
        if self.max_kl is not None:
            radius = max(self.max_kl, current_kl)
        scored = score_each(params, candidates, lambda: self._score_loaded(advantages))
        self.last_surrogate = torch.tensor([surrogate for surrogate, _ in scored], dtype=torch.float64)
        self.last_kl = torch.tensor([kl for _, kl in scored], dtype=torch.float64)
        self.last_radius = radius
        self.last_env_steps = 0
        inside = self.last_kl <= radius
        return torch.where(inside, self.last_surrogate, torch.full_like(self.last_surrogate, -math.inf))

    def _advantages(self) -> Tensor:
        if self.batch is None:
            raise RuntimeError(
                "SurrogateEvaluator has no batch: call set_batch(observations, actions, log_probs, "
                "advantages) with the update's samples before each search"
            )
        advantages = self.batch.advantages.double()
        if self.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return advantages

    def _score_loaded(self, advantages: Tensor) -> tuple[float, float]:
        """(surrogate, KL estimate) of the parameters as loaded now."""
        batch = self.batch
        assert batch is not None
        log_prob = self.log_prob(batch.observations, batch.actions).reshape(-1).double()
        if log_prob.shape != batch.log_probs.shape:
            raise ValueError(
                f"log_prob returned shape {tuple(log_prob.shape)} for a batch of {batch.log_probs.numel()} "
                "steps; return one log-likelihood per step (sum over action dimensions)"
            )
        log_ratio = log_prob - batch.log_probs.double()
        ratio = log_ratio.exp()
        if self.clip is None:
            surrogate = (ratio * advantages).mean()
        else:
            clipped = ratio.clamp(1 - self.clip, 1 + self.clip)
            surrogate = torch.minimum(ratio * advantages, clipped * advantages).mean()
        kl = ((ratio - 1) - log_ratio).mean()
        return float(surrogate), float(kl)

    def close(self) -> None:
        """Nothing to close (no envs); drops the batch."""
        self.batch = None

    def __repr__(self) -> str:
        steps = "no batch" if self.batch is None else f"batch of {self.batch.log_probs.numel():,} steps"
        return (
            f"SurrogateEvaluator(max_kl={self.max_kl}, clip={self.clip}, "
            f"normalize_advantages={self.normalize_advantages}, {steps})"
        )
