"""ExploRLer's step between RL iterations: search the anchors' empty space, keep the best policy.

:class:`SearchStep` is what a training loop calls after every iteration's update. It decides
whether a search is due (every ``every`` iterations, from ``start_step`` on, with two anchors or
more, and, under a step budget, only when the search cannot take the counted env steps past the
budget's limit), points the candidate evaluator at the training env's current observation
statistics and this cycle's start states, runs ``optimizer.explore`` (through a
:class:`~explorler_optim.audit.SelectionAudit` when one is given), and counts the env steps the
candidates used. :meth:`SearchStep.log` writes the search's ``explorler/*`` scalars, the candidate
scores' histogram and, every ``landscape_every`` cycles, the loss-landscape figure.

Its counters (``cycle``, ``eval_env_steps``, ``skipped_searches``, ``last_gain`` and the last
search's anchors) go into checkpoints with :meth:`SearchStep.state_dict` under the keys the
single-file scripts have always used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from explorler_optim.explorer import ExploreResult

if TYPE_CHECKING:
    from explorler_optim.rl.normalize import ObsNormalizer

__all__ = ["Batch", "CandidateEvaluator", "SearchStep", "episode_seed"]

Batch = tuple[Tensor, Tensor, Tensor, Tensor]
"""An update's ``(observations, actions, log_probs, advantages)``."""


def episode_seed(run_seed: int, cycle: int, episodes: int) -> int:
    """Reset seed of episode 0 of every candidate of search cycle ``cycle`` (episode k: +k).

    The scripts and the SB3 callback draw their candidates' starts from this one sequence: a run's
    cycles never reuse a start, and two runs with different seeds do not share them.

    Args:
        run_seed: the run's seed.
        cycle: the search's number (0-based).
        episodes: episodes per candidate.

    Example:
        >>> episode_seed(1, 0, 1), episode_seed(1, 1, 1), episode_seed(1, 1, 3)
        (1000003, 1000004, 1000006)
    """
    return int((run_seed * 1_000_003 + cycle * episodes) % 999_000_000)


class CandidateEvaluator(Protocol):
    """What :class:`SearchStep` needs of the evaluator that scores a search's candidates.

    ``PolicyEvaluator`` (episodes) and ``SurrogateEvaluator`` (the update's batch, no env steps)
    both are one; mypy checks it where the library builds a :class:`SearchStep`.
    """

    total_env_steps: int
    """Env steps played so far, all calls together (the search's cost is its increase)."""
    episodes: int
    """Episodes per candidate (the budget rule's bound; 0: a search costs no env steps)."""

    def prepare(
        self, obs_normalizer: ObsNormalizer | None, seed: int | None = None, batch: Batch | None = None
    ) -> None:
        """Point the evaluator at the next search, before it scores anything.

        Args:
            obs_normalizer: the training env's observation statistics now (``None``: raw).
            seed: the first reset seed of the search's episodes; ``None`` keeps the evaluator's
                own (an evaluator on fixed starts).
            batch: the update's ``(observations, actions, log_probs, advantages)``, for an
                evaluator that scores on a batch; one that plays episodes ignores it.
        """
        ...

    def evaluate_many(self, params: Sequence[Tensor], candidates: Sequence[Tensor]) -> Any:
        """One score per candidate (see ``BatchEvaluator``)."""
        ...

    def close(self) -> None:
        """Release envs and workers."""
        ...


class SearchStep:
    """One ExploRLer search between RL iterations, its budget rule, accounting and logging.

    Args:
        optimizer: the ``ExploRLerOptimizer`` whose anchors are searched, or an ``Explorer``
            (the SB3 callback's, which searches the actor of an optimizer it does not wrap).
        evaluator: scores candidates (a :class:`CandidateEvaluator`, e.g. a ``PolicyEvaluator``).
            ``None`` makes a disabled step (a run without ExploRLer): :meth:`due` is always false,
            its counters still go into checkpoints.
        candidate_seed: the evaluator's reset seed for search cycle ``cycle``.
        every: search after every ``every``-th iteration.
        start_step: no search before this many training env steps.
        audit: a ``SelectionAudit`` around ``evaluator``: it scores the candidates, its other
            evaluators score them again on held-out episodes and every search's record is appended
            to ``audit_path``.
        truth_seed: the reset seed of the audit's ``"truth"`` evaluator for cycle ``cycle``.
        audit_path: the JSON-lines file of the audit's records (needed with ``audit``).
        budget_limit: with a budget on counted env steps (candidate steps counted), a search is
            skipped when ``counted_steps + policies * episodes * episode_cap`` would exceed it,
            ``policies`` being what the optimizer's search scores (:meth:`policies_per_search`);
            ``None``: no budget rule.
        episode_cap: the longest an episode can be (needed with ``budget_limit``).
        landscape_every: :meth:`log` draws the loss landscape every this many cycles (0: never).
        writer: a TensorBoard ``SummaryWriter`` for :meth:`log` and the skipped-search count.
        say: prints the one message about skipped searches (default: nothing).
        defer: a due search does not run at once: :meth:`due` answers false and sets
            ``pending``, and the loop runs it (:meth:`run`) when the next iteration's batch is
            collected, before that batch's update (``--score-with surrogate-next``: candidates
            scored on fresh samples of the current policy, which no update has fit yet).

    Raises:
        ValueError: with an evaluator, ``budget_limit`` without ``episode_cap``, or ``audit``
            without ``truth_seed`` and ``audit_path``; pass them.

    Example:
        >>> from explorler_optim import ExploRLerOptimizer
        >>> policy = torch.nn.Linear(2, 1)
        >>> opt = ExploRLerOptimizer(torch.optim.SGD(policy.parameters(), lr=0.1), seed=0)
        >>> class Score:  # a CandidateEvaluator: 10 env steps per policy scored
        ...     total_env_steps, episodes = 0, 1
        ...     def prepare(self, obs_normalizer, seed=None, batch=None):
        ...         self.seed = seed  # where its episodes would start
        ...     def evaluate_many(self, params, candidates):  # candidates[0]: the weights, stacked
        ...         self.total_env_steps += 10 * len(candidates[0])
        ...         return [-weight.square().sum().item() for weight in candidates[0]]
        ...     def close(self):
        ...         pass
        >>> search = SearchStep(opt, Score(), candidate_seed=lambda cycle: 100 + cycle, every=2)
        >>> for iteration in range(1, 3):
        ...     _ = policy.weight.data.add_(1.0); opt.record()
        ...     if search.due(iteration, global_step=0, counted_steps=0):
        ...         result, used = search.run(obs_normalizer=None, global_step=0)
        >>> search.cycle, used == search.eval_env_steps > 0
        (1, True)
    """

    def __init__(
        self,
        optimizer: Any,
        evaluator: CandidateEvaluator | None,
        *,
        candidate_seed: Callable[[int], int],
        every: int = 1,
        start_step: int = 0,
        audit: Any | None = None,
        truth_seed: Callable[[int], int] | None = None,
        audit_path: str | os.PathLike | None = None,
        budget_limit: int | None = None,
        episode_cap: int | None = None,
        landscape_every: int = 0,
        writer: Any | None = None,
        say: Callable[[str], Any] | None = None,
        defer: bool = False,
    ) -> None:
        if evaluator is not None and budget_limit is not None and not episode_cap:
            raise ValueError("SearchStep: budget_limit needs episode_cap; pass it")
        if audit is not None and (truth_seed is None or audit_path is None):
            raise ValueError("SearchStep: audit needs truth_seed and audit_path; pass them")
        if int(every) != every or every < 1:
            raise ValueError(f"SearchStep: every must be an integer >= 1 (1: every iteration), got {every!r}")
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.candidate_seed = candidate_seed
        self.every = int(every)
        self.start_step = int(start_step)
        self.audit = audit
        self.truth_seed = truth_seed
        self.audit_path = audit_path
        self.budget_limit = budget_limit
        self.episode_cap = episode_cap
        self.landscape_every = int(landscape_every)
        self.writer = writer
        self.say = say or (lambda msg: None)
        self.defer = bool(defer)
        self.pending = False  # a deferred search waits for the next batch
        self.cycle = 0  # searches run
        self.eval_env_steps = 0  # env steps the candidates used, all searches together
        self.skipped_searches = 0  # searches not started because they could overrun the budget
        self.last_gain: float | None = None
        self.last_anchors: torch.Tensor | None = None  # the last search's anchors (landscape command)

    def due(self, iteration: int, global_step: int, counted_steps: int) -> bool:
        """Whether a search runs after iteration ``iteration``; counts (and logs) a skipped one.

        A search is due when it is :meth:`scheduled`, two anchors or more are held and it
        :meth:`fits_budget`.

        Args:
            iteration: the iteration just finished (1-based).
            global_step: training env steps so far.
            counted_steps: env steps counted toward the budget so far.
        """
        if not self.scheduled(iteration, global_step) or self.optimizer.num_anchors < 2:
            return False
        return self.fits_budget(iteration, global_step, counted_steps) and self._due_now()

    def scheduled(self, iteration: int, global_step: int) -> bool:
        """Whether the schedule has a search after iteration ``iteration`` (every ``every``-th, from
        ``start_step`` training env steps on, with an evaluator); the budget is another question.

        Example:
            >>> step = SearchStep(None, None, candidate_seed=int, every=3, start_step=100)
            >>> step.evaluator = object()  # any evaluator
            >>> [step.scheduled(i, global_step=200) for i in (1, 2, 3)], step.scheduled(3, 50)
            ([False, False, True], False)
        """
        return self.evaluator is not None and global_step >= self.start_step and iteration % self.every == 0

    def fits_budget(self, iteration: int, global_step: int, counted_steps: int) -> bool:
        """Whether a search over the anchors held now cannot take the counted env steps past the
        budget's limit (always, without ``budget_limit``); a search that does not fit is counted as
        skipped, logged, and said once.

        Args:
            iteration: the iteration just finished (for the message).
            global_step: training env steps so far (for the log).
            counted_steps: env steps counted toward the budget so far.
        """
        if self.budget_limit is None:
            return True
        assert self.episode_cap is not None and self.evaluator is not None
        policies = self.policies_per_search(self.optimizer.num_anchors)
        bound = self.search_bound(self.optimizer.num_anchors)
        if counted_steps + bound <= self.budget_limit:
            return True
        self.skipped_searches += 1
        if self.writer is not None:
            self.writer.add_scalar("explorler/skipped_searches", self.skipped_searches, global_step)
        if self.skipped_searches == 1:
            self.say(
                f"search skipped at iteration {iteration}: it could use up to {bound:,} env "
                f"steps ({policies} policies x {self.evaluator.episodes} episode(s) x {self.episode_cap:,} "
                f"steps) and end past the budget's limit of {self.budget_limit:,} counted steps; "
                "later searches that do not fit are skipped too"
            )
        return False

    def search_bound(self, num_anchors: int) -> int:
        """The most env steps a search over ``num_anchors`` anchors can use: policies x episodes x
        the episode cap (what the budget rule checks; needs an evaluator and ``episode_cap``)."""
        assert self.evaluator is not None and self.episode_cap is not None
        return self.policies_per_search(num_anchors) * self.evaluator.episodes * self.episode_cap

    def policies_per_search(self, num_anchors: int) -> int:
        """How many policies a search over ``num_anchors`` anchors scores: the optimizer's search's
        candidates, plus the incumbent when it is scored.

        Example:
            >>> from explorler_optim import ExploRLerOptimizer
            >>> opt = ExploRLerOptimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
            >>> SearchStep(opt, None, candidate_seed=int).policies_per_search(10)  # 10 candidates + 1
            11
        """
        explorer = getattr(self.optimizer, "explorer", self.optimizer)  # an optimizer's, or an Explorer
        return explorer.search.num_candidates(num_anchors) + int(explorer.include_incumbent)

    def _due_now(self) -> bool:
        """A due search runs now, or (``defer``) waits for the next batch."""
        if self.defer:
            self.pending = True
            return False
        return True

    def run(
        self,
        obs_normalizer: Any,
        global_step: int,
        total_timesteps: int = 0,
        batch: Batch | None = None,
    ) -> tuple[ExploreResult, int]:
        """Run one search; returns its result and the env steps its candidates used.

        Args:
            obs_normalizer: the training env's current observation statistics (an
                ``ObsNormalizer``), given to the evaluator (and the audit's evaluators).
            global_step: training env steps so far (for the audit's record).
            total_timesteps: the run's budget (for the audit's record).
            batch: the update's ``(observations, actions, log_probs, advantages)``, handed to every
                evaluator's :meth:`CandidateEvaluator.prepare` (those that score on a batch use it).
        """
        evaluator = self.evaluator
        if evaluator is None:
            raise RuntimeError("SearchStep.run: this step has no evaluator; build it with one")
        candidate_seed = self.candidate_seed(self.cycle)
        evaluator.prepare(obs_normalizer, candidate_seed, batch)
        steps_before = evaluator.total_env_steps
        self.last_anchors = self.optimizer.anchors().cpu()
        if self.audit is not None:
            assert self.truth_seed is not None and self.audit_path is not None
            # the truth on its own starts, the env scoring a selector replaced on the cycle's own,
            # the others (the paper metric's fixed starts, free scorers) on theirs
            seeds = {"truth": self.truth_seed(self.cycle), "env": candidate_seed}
            for name, audit_evaluator in self.audit.audits.items():
                audit_evaluator.prepare(obs_normalizer, seeds.get(name), batch)
        result = self.optimizer.explore(evaluator if self.audit is None else self.audit)
        if self.audit is not None:
            record = self.audit.add_result(
                result, cycle=self.cycle, global_step=global_step, total_timesteps=total_timesteps
            )
            self.audit.write_jsonl(self.audit_path, [record])
        used = int(evaluator.total_env_steps - steps_before)
        self.pending = False
        self.cycle += 1
        self.eval_env_steps += used
        self.last_gain = result.gain
        return result, used

    def log(self, result: ExploreResult, global_step: int) -> None:
        """Write ``result``'s ``explorler/*`` scalars, the score histogram and the landscape figure."""
        writer = self.writer
        if writer is None:
            raise RuntimeError("SearchStep.log: no writer; build the step with writer=SummaryWriter(...)")
        for name, value in result.scalars().items():
            writer.add_scalar(f"explorler/{name}", value, global_step)
        writer.add_scalar("explorler/eval_env_steps", self.eval_env_steps, global_step)
        scores = torch.as_tensor(result.scores, dtype=torch.float64).flatten()
        scores = scores[torch.isfinite(scores)]
        if scores.numel() > 0:
            writer.add_histogram("explorler/candidate_scores", scores.numpy(), global_step)
        if self.landscape_every > 0 and self.cycle % self.landscape_every == 0:
            from explorler_optim.viz import log_landscape  # needs matplotlib

            log_landscape(writer, result, global_step)

    def summary(
        self, counted_steps: int, global_step: int, total_timesteps: int, counted: bool = True
    ) -> str:
        """The end-of-run line: counted env steps of the budget, training and candidate steps, skips.

        Args:
            counted_steps: env steps counted toward the budget.
            global_step: training env steps.
            total_timesteps: the budget.
            counted: whether candidate-evaluation steps count toward the budget.

        Example:
            >>> step = SearchStep(None, None, candidate_seed=int)
            >>> step.eval_env_steps = 200
            >>> step.summary(1200, 1000, 1280)
            '1,200 counted env steps of the 1,280 budget: 1,000 training + 200 candidate-evaluation (counted)'
        """
        skipped, how = self.skipped_searches, "counted" if counted else "not counted"
        return (
            f"{counted_steps:,} counted env steps of the {total_timesteps:,} budget: {global_step:,} "
            f"training + {self.eval_env_steps:,} candidate-evaluation ({how})"
            + (f"; {skipped} search(es) skipped to stay within the budget" if skipped else "")
        )

    def close(self) -> None:
        """Close the candidate evaluator and the audit's evaluators (their envs and workers)."""
        for evaluator in [self.evaluator, *(self.audit.audits.values() if self.audit else [])]:
            if evaluator is not None:
                evaluator.close()

    def state_dict(self) -> dict[str, Any]:
        """The counters, under the checkpoint keys the scripts use."""
        return {
            "eval_env_steps": int(self.eval_env_steps),
            "cycle": int(self.cycle),
            "last_cycle_anchors": self.last_anchors,
            "last_gain": self.last_gain,
            "skipped_searches": self.skipped_searches,
            "search_pending": self.pending,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s counters (a checkpoint's; older ones may lack the last two)."""
        self.eval_env_steps = state["eval_env_steps"]
        self.cycle = state["cycle"]
        self.last_anchors = state.get("last_cycle_anchors")
        self.last_gain = state.get("last_gain")
        self.skipped_searches = state.get("skipped_searches", 0)
        self.pending = bool(state.get("search_pending", False))
