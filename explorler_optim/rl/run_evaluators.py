"""The evaluators of one training run: held-out, candidate scoring, the paper's metric, the audit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from explorler_optim.audit import SelectionAudit
from explorler_optim.rl.critic import CriticEvaluator
from explorler_optim.rl.evaluator import PolicyEvaluator
from explorler_optim.rl.normalize import ObsNormalizer
from explorler_optim.rl.surrogate import SurrogateEvaluator

__all__ = ["RunEvaluators"]


@dataclass
class RunEvaluators:
    """The evaluators a training run uses, each on its own envs with deterministic actions (the
    candidate evaluator's may be stochastic, to reuse its episodes for training).

    Build them with :meth:`build`; :meth:`close` closes them all.

    Attributes:
        heldout: the held-out evaluation of the current policy (never counted in a budget).
        candidate: scores a search's candidates (``None`` without ExploRLer): a
            ``PolicyEvaluator`` playing episodes, with ``score_with="surrogate"`` a
            ``SurrogateEvaluator`` on the update's batch, with ``"critic"`` a ``CriticEvaluator``.
        paper: the paper's metric, ``paper_episodes`` episodes from fixed start states (``None``
            when neither the metric nor the audit needs it).
        audit: a ``SelectionAudit`` that scores every search's candidates again with a
            ``"truth"`` evaluator and ``paper`` (``None`` without one); with surrogate scoring
            also ``"env"`` (the episodes it replaced) and two other surrogates at no env cost,
            ``"surrogate-clip"`` (PPO's clipped objective) and ``"surrogate-no-kl"`` (no trust
            region).
    """

    heldout: PolicyEvaluator
    candidate: PolicyEvaluator | SurrogateEvaluator | CriticEvaluator | None = None
    paper: PolicyEvaluator | None = None
    audit: SelectionAudit | None = None

    @classmethod
    def build(
        cls,
        policy: nn.Module,
        make_env: Callable[[], Any],
        stats_env: Any | None,
        *,
        heldout_episodes: int,
        heldout_seed: int,
        candidate_episodes: int = 0,
        candidate_seed: int = 0,
        workers: int = 1,
        racing: bool = False,
        paper_metric: bool = False,
        paper_seed: int = 0,
        paper_episodes: int = 3,
        truth_episodes: int = 0,
        candidate_log_std: torch.Tensor | None = None,
        score_with: str = "env",
        log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        surrogate_max_kl: float = 0.01,
        critic_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> RunEvaluators:
        """The run's evaluators of ``policy`` (e.g. the actor's mean network).

        Args:
            policy: the deterministic policy the evaluators play.
            make_env: builds one evaluation env (without the training env's normalisation).
            stats_env: the training env whose observation statistics the candidate and held-out
                evaluators start with (e.g. ``envs.envs[0]``); refresh them before each use.
                ``None``: the training env does not normalise observations (raw ones).
            heldout_episodes: held-out episodes per evaluation.
            heldout_seed: the held-out episodes' first reset seed.
            candidate_episodes: episodes per candidate; 0: no candidate evaluator (no ExploRLer).
            candidate_seed: the candidate evaluator's first reset seed.
            workers: the candidate evaluator's worker processes.
            racing: race the candidates (successive halving).
            paper_metric: build the paper's metric evaluator (also built for the audit).
            paper_seed: the paper metric's reset seed (the run's fixed start states).
            paper_episodes: the paper metric's episodes.
            truth_episodes: with a candidate evaluator, audit every search's selection with this
                many held-out episodes per candidate; 0: no audit.
            candidate_log_std: score candidates with the Gaussian policy of this log-std (each
                candidate's own value when it is explored) and keep their episodes for training
                (``PolicyEvaluator(log_std=..., keep_transitions=True)``); None: deterministic.
            score_with: ``"env"`` (episodes, above) or ``"surrogate"``: score candidates on the
                update's batch with a ``SurrogateEvaluator`` (zero env steps); the
                ``candidate_*`` episode settings then apply to the audit's ``"env"`` evaluator.
            log_prob: ``log_prob(observations, actions)`` of the policy as loaded (needed with
                ``score_with="surrogate"``).
            surrogate_max_kl: the surrogate's trust-region radius (``SurrogateEvaluator``).
            critic_value: with ``score_with="critic"``, the ``CriticEvaluator``'s
                ``value(observations)`` (the audit's ``"env"`` evaluator then plays the episodes).

        Raises:
            ValueError: an unknown ``score_with``, ``"surrogate"`` without ``log_prob`` or
                ``"critic"`` without ``critic_value``.

        Example:
            >>> import gymnasium as gym
            >>> make = lambda: gym.make("Pendulum-v1", max_episode_steps=20)
            >>> stats_env = gym.wrappers.NormalizeObservation(make())
            >>> evaluators = RunEvaluators.build(
            ...     torch.nn.Linear(3, 1), make, stats_env, heldout_episodes=2, heldout_seed=0,
            ...     candidate_episodes=1, truth_episodes=2)
            >>> sorted(evaluators.audit.audits), evaluators.paper.episodes
            (['paper', 'truth'], 3)
            >>> round(evaluators.heldout(), 6) < 0  # Pendulum's returns are negative
            True
            >>> evaluators.close()
        """
        if score_with not in ("env", "surrogate", "critic"):
            raise ValueError(f"score_with must be 'env', 'surrogate' or 'critic', got {score_with!r}")
        if score_with == "surrogate" and log_prob is None:
            raise ValueError("score_with='surrogate' needs log_prob(observations, actions); pass it")
        if score_with == "critic" and critic_value is None:
            raise ValueError("score_with='critic' needs critic_value(observations); pass it")
        normalizer = ObsNormalizer.from_env(stats_env) if stats_env is not None else None
        candidate: PolicyEvaluator | SurrogateEvaluator | CriticEvaluator | None = None
        if candidate_episodes > 0:
            candidate = PolicyEvaluator(
                policy,
                make_env,
                episodes=candidate_episodes,
                obs_normalizer=normalizer,
                seed=candidate_seed,
                workers=workers,
                racing=racing,
                log_std=candidate_log_std,
                keep_transitions=candidate_log_std is not None,
            )
        paper = None
        if paper_metric or truth_episodes > 0:
            paper = PolicyEvaluator(policy, make_env, episodes=paper_episodes, seed=paper_seed)
        audits: dict[str, Any] = {}
        if candidate is not None and score_with == "surrogate":
            assert log_prob is not None
            if truth_episodes > 0:  # what the episodes and the other free scorers would have picked
                audits["env"] = candidate
                audits["surrogate-clip"] = SurrogateEvaluator(log_prob, max_kl=surrogate_max_kl, clip=0.2)
                audits["surrogate-no-kl"] = SurrogateEvaluator(log_prob, max_kl=None)
            else:
                candidate.close()
            candidate = SurrogateEvaluator(log_prob, max_kl=surrogate_max_kl)
        if candidate is not None and score_with == "critic":
            assert critic_value is not None
            if truth_episodes > 0:  # the episodes the critic replaced
                audits["env"] = candidate
            else:
                candidate.close()
            candidate = CriticEvaluator(critic_value)
        audit = None
        if candidate is not None and paper is not None and truth_episodes > 0:
            truth = PolicyEvaluator(policy, make_env, episodes=truth_episodes)
            audit = SelectionAudit(candidate, {"truth": truth, "paper": paper, **audits})
        heldout = PolicyEvaluator(
            policy,
            make_env,
            episodes=heldout_episodes,
            obs_normalizer=normalizer,
            seed=heldout_seed,
        )
        return cls(heldout=heldout, candidate=candidate, paper=paper, audit=audit)

    def close(self) -> None:
        """Close every evaluator (their envs and worker processes)."""
        audits: list[Any] = list(self.audit.audits.values()) if self.audit else []
        for evaluator in [self.heldout, self.candidate, self.paper, *audits]:
            if evaluator is not None:
                evaluator.close()
