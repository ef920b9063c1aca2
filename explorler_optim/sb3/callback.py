"""``ExploRLerCallback``: ExploRLer in SB3's ``learn()``, on the scripts' ``SearchStep``.

The callback records anchors while SB3 trains and, between iterations, hands the search to the same
:class:`~explorler_optim.rl.SearchStep` the single-file scripts use (its budget rule, env-step
accounting and ``explorler/*`` scalars). What it checks at ``learn()`` start is in :mod:`.checks`.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, cast

import torch
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.hooks import RemovableHandle

from ..explorer import Explorer, ExploreResult
from ..params import flatten_params
from ..rl import CandidateEvaluator, ObsNormalizer, PolicyEvaluator, SearchStep
from ..rl.search_step import episode_seed
from ..search import SearchOperator, make_search
from ..selection import SelectionRule, make_selection
from . import checkpoints, checks
from .actor import check_policy, sb3_actor, sb3_actor_params

__all__ = ["ExploRLerCallback"]


class _LoggerWriter:
    """SB3's logger seen through the two ``SummaryWriter`` methods :class:`SearchStep` calls."""

    def __init__(self, callback: BaseCallback) -> None:
        self.callback = callback

    def add_scalar(self, name: str, value: float, step: int) -> None:
        self.callback.logger.record(name, value)

    def add_histogram(self, name: str, values: Any, step: int) -> None:
        excluded = ("stdout", "log", "json", "csv")  # TensorBoard writes a tensor as a histogram
        self.callback.logger.record(name, torch.as_tensor(values), exclude=excluded)


class _StateInModel:
    """Stored on the model: ``model.save`` pickles it as the callback's current state dict."""

    def __init__(self, callback: ExploRLerCallback) -> None:
        self.callback = callback

    def snapshot(self) -> dict[str, Any]:
        """The callback's state now (``{}`` before it has a model)."""
        return self.callback.state_dict() if self.callback.explorer is not None else {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.snapshot(),))

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.snapshot(), memo)  # a copied model gets the state, not the callback


class ExploRLerCallback(BaseCallback):
    """ExploRLer for SB3 on-policy algorithms (PPO, A2C, sb3-contrib TRPO) as a ``learn()`` callback.

    How it maps onto SB3's loop (``collect_rollouts`` then ``train`` per iteration):

    * **Anchors.** PPO-like algorithms (``n_epochs`` and ``batch_size``): an anchor at the end of
      every epoch (seen through ``policy.optimizer``'s step post-hook), and one at the end of an
      iteration whose last epoch was cut short (``target_kl``); a search uses the last
      ``max_anchors``, the last iteration's epochs as in the paper. TRPO, A2C: one per iteration, or
      with ``explore_every="auto"`` one every ``ceil(explore_every / max_anchors)`` iterations, so that
      A2C's anchors span its cycle.
    * **Searches.** After every ``explore_every``-th iteration, at the next rollout start, by the
      scripts' :class:`~explorler_optim.rl.SearchStep`; a search that is due waits for 2 anchors.
      ``"auto"`` (the default) keeps the training env steps between searches fixed whatever the
      rollout: 40,960 with epoch anchors (PPO at 2,048 steps: every 20 iterations, the scripts'
      default), 20,480 with iteration anchors (TRPO at 2,048: every 10, the paper's; A2C at 5 steps:
      every 4,096). Measured (``benchmarks/sb3_budget.py``, Pendulum-v1, ``learn(42_000)``): the old
      default of 20 iterations gave A2C 41,800 candidate steps of 43,701 (a search every 100
      training steps); with ``"auto"`` PPO, A2C and TRPO each spend about 5% of their env steps on
      candidates and end within the tolerance (``benchmarks/results/sb3-budget``).
    * **Budget.** With ``count_eval_steps`` the candidates' env steps are added to
      ``model.num_timesteps`` (``learn(total_timesteps)`` stops at equal total env steps). The budget
      rule is the scripts' ``--budget-tolerance``: no search starts that could take
      ``num_timesteps`` more than ``budget_tolerance * total_timesteps`` past where plain SB3 would
      end (whole rollouts), bounding a search by policies x ``eval_episodes`` x the eval env's
      ``max_episode_steps``; no rollout starts that could. ``explore_at_end`` obeys it. A skip is said
      once (a warning) and counted in ``explorler/skipped_searches``. A stopped rollout has taken one
      step (``n_envs`` env steps, never trained on). ``count_eval_steps=False`` is the paper's
      accounting (no rule needed: candidates are not counted).
    * **Scoring.** :class:`~explorler_optim.rl.PolicyEvaluator` runs the deterministic actor
      (:func:`~explorler_optim.sb3.sb3_actor`) on separate raw envs, with the model's ``VecNormalize``
      statistics frozen at search time. Searched: the actor and ``log_std``, never the critic.
    * **Checks at ``learn()`` start**, before any env step: the algorithm, Box observations, the
      evaluation env (built once: its id and spaces against the training env's) and its time limit.
    * **State.** Anchors and counters carry across ``learn()`` calls; :meth:`save` / :meth:`load`
      write and read them, and :meth:`load` refuses a state saved at another step or for other
      parameter shapes. :class:`~explorler_optim.sb3.ExploRLerCheckpointCallback` writes one beside
      every ``CheckpointCallback`` model. With ``state_in_model`` the state also travels inside the
      model's own file: ``model.save`` writes it and ``learn()`` on a loaded model resumes from it
      (rl-zoo3's ``--trained-agent``).
    * **Logging.** ``explorler/*`` in SB3's logger: the search's scalars
      (:meth:`~explorler_optim.ExploreResult.scalars`), ``eval_env_steps``, ``num_anchors``,
      ``searches``, ``skipped_searches`` and the candidate scores' histogram (TensorBoard).

    Every argument is a plain value, so rl-zoo3 hyper-parameter files can build it.

    Args:
        eval_env: env id (``"Hopper-v5"``) or zero-argument factory of ONE raw gymnasium env (no
            normalisation wrappers) for scoring candidates. ``None``: the training env's spec,
            without SB3's ``Monitor`` (and wrappers gymnasium cannot recreate, with a warning).
        eval_env_kwargs: keyword arguments of ``gym.make`` when ``eval_env`` is an id.
        explore_every: iterations per search, or ``"auto"`` (see above).
        eval_episodes: deterministic episodes per candidate (the paper: 3).
        max_anchors: anchors searched: the last ones recorded.
        anchor_every: ``"auto"``, ``"epoch"`` (PPO) or ``"iteration"`` (TRPO, A2C).
        search: ``None`` (``EmptySpaceSearch()``), a name (``"esa"``, ``"random-walk"``,
            ``"checkpoint-average"``, ``"gaussian"``, ``"pbt"``, ``"cma-es"``: ``make_search``'s,
            each making 10 candidates from 10 anchors with its defaults, the average 1, ``pbt`` 15)
            or a ``SearchOperator``.
        search_kwargs: arguments of the named search (e.g. ``{"snapshot_every": 20}``).
        selection: ``None`` (the highest score), a name (``"argmax"``, ``"tournament"``,
            ``"success-first"``: ``make_selection``'s) or a ``SelectionRule``; the incumbent rule
            applies to every rule.
        selection_kwargs: arguments of the named selection (e.g. ``{"size": 3}``).
        include_incumbent: score the current policy too and commit only if a candidate beats it.
        reset_state: clear ``policy.optimizer``'s state (Adam moments) of the actor after a commit.
        count_eval_steps: count candidate env steps in ``model.num_timesteps``.
        budget_tolerance: the budget rule's tolerance, a fraction of ``total_timesteps``
            (``None``: no rule, the behaviour before 0.2).
        explore_at_end: run the search due after the last iteration of ``learn()`` at its end.
        on_invalid: ``"skip"`` scores a non-finite return as ``-inf``; ``"raise"`` raises.
        seed: seed of the search's random source and of the candidates' episode seeds
            (``None``: the model's seed, else 0).
        eval_workers: worker processes of the evaluator (1: in this process).
        save_path: if given, the state is written there (atomically) at every rollout start and at
            the end of ``learn()``.
        state_in_model: keep the state in ``model.explorler_state``, which ``model.save`` writes and a
            loaded model's ``learn()`` resumes from.
        verbose: 1 prints one line per search.

    Raises:
        TypeError: ``eval_env`` is neither an id, a factory nor ``None``.
        ValueError: an argument out of range (the message names it).

    Example:
        >>> from stable_baselines3 import PPO
        >>> model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0)
        >>> callback = ExploRLerCallback(explore_every=2, count_eval_steps=False)
        >>> _ = model.learn(256, callback=callback)
        >>> callback.iterations, callback.searches, callback.explorer.num_anchors
        (4, 2, 0)
        >>> model.save("ppo_pendulum"); callback.save("ppo_pendulum.explorler.pt")
    """

    def __init__(
        self,
        eval_env: str | Any | None = None,
        *,
        eval_env_kwargs: dict[str, Any] | None = None,
        explore_every: int | str = "auto",
        eval_episodes: int = 1,
        max_anchors: int = 10,
        anchor_every: str = "auto",
        search: str | SearchOperator | None = None,
        search_kwargs: dict[str, Any] | None = None,
        selection: str | SelectionRule | None = None,
        selection_kwargs: dict[str, Any] | None = None,
        include_incumbent: bool = True,
        reset_state: bool = True,
        count_eval_steps: bool = True,
        budget_tolerance: float | None = 0.01,
        explore_at_end: bool = True,
        on_invalid: str = "skip",
        seed: int | None = None,
        eval_workers: int = 1,
        save_path: str | None = None,
        state_in_model: bool = True,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        checks.check_arguments(eval_env, eval_env_kwargs, explore_every, anchor_every, on_invalid)
        checks.positive_int("eval_episodes", eval_episodes)
        checks.positive_int("max_anchors", max_anchors)
        if max_anchors < 2:
            raise ValueError(
                f"ExploRLerCallback: max_anchors must be >= 2 (a search needs 2), not {max_anchors}"
            )
        checks.positive_int("eval_workers", eval_workers)
        if budget_tolerance is not None and not (
            isinstance(budget_tolerance, (int, float)) and budget_tolerance >= 0
        ):
            raise ValueError(
                f"ExploRLerCallback: budget_tolerance must be a number >= 0 or None, got {budget_tolerance!r}"
            )
        self.eval_env = eval_env
        self.eval_env_kwargs = dict(eval_env_kwargs or {})
        self.explore_every = explore_every
        self.eval_episodes = int(eval_episodes)
        self.max_anchors = int(max_anchors)
        self.anchor_every = anchor_every
        self.search = make_search(search if search is not None else "esa", **(search_kwargs or {}))
        self.selection = make_selection(
            selection if selection is not None else "argmax", **(selection_kwargs or {})
        )
        self.include_incumbent = bool(include_incumbent)
        self.reset_state = bool(reset_state)
        self.count_eval_steps = bool(count_eval_steps)
        self.budget_tolerance = None if budget_tolerance is None else float(budget_tolerance)
        self.explore_at_end = bool(explore_at_end)
        self.on_invalid = on_invalid
        self.seed = seed
        self.eval_workers = int(eval_workers)
        self.save_path = save_path
        self.state_in_model = bool(state_in_model)

        self.explorer: Explorer | None = None
        self.step = SearchStep(None, None, candidate_seed=self._seed_of)  # counters until learn()
        self.schedule: checks.Schedule | None = None  # what explore_every resolved to
        self.last_result: ExploreResult | None = None
        self.iterations = 0  # trained iterations seen, across learn() calls
        self.counted_eval_steps = 0  # candidate env steps added to model.num_timesteps
        self._pending = False  # a search is due
        self._in_iteration = False  # a rollout was collected; train() runs until the next hook
        self._optimizer_steps = 0
        self._steps_per_epoch: int | None = None
        self._last_anchor: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        self._stop = False
        self._total_timesteps = 0
        self._budget_limit: int | None = None
        self._eval: checks.EvalEnv | None = None
        self._warned = False
        self._loaded_state: dict[str, Any] | None = None  # waits for the model
        self._loaded_checked = True  # False: the waiting state is checked against the model's step

    # ---------------------------------------------------------------- counters (the SearchStep's)
    @property
    def searches(self) -> int:
        """Searches run, across ``learn()`` calls."""
        return self.step.cycle

    @property
    def eval_env_steps(self) -> int:
        """Env steps the candidates used, all searches together."""
        return self.step.eval_env_steps

    @property
    def skipped_searches(self) -> int:
        """Searches not started because they could have overrun the budget."""
        return self.step.skipped_searches

    @property
    def evaluator(self) -> PolicyEvaluator | None:
        """The candidate evaluator (built when ``learn()`` starts)."""
        return cast("PolicyEvaluator | None", self.step.evaluator)  # the callback builds no other kind

    # ---------------------------------------------------------------- setup
    def _init_callback(self) -> None:
        checks.check_algorithm(self.model)
        checks.check_observation_space(self.model.observation_space)
        self._attach(self.model)

    def _attach(self, model: Any) -> None:
        """Search ``model``'s actor; apply a state waiting for a model (checked against it)."""
        policy = check_policy(model.policy)
        params = sb3_actor_params(policy)
        old = self.explorer
        if (
            old is None
            or len(params) != len(old.params)
            or any(p is not q for p, q in zip(params, old.params))
        ):
            seed = self.seed if self.seed is not None else model.seed
            self.explorer = Explorer(
                params,
                max_anchors=self.max_anchors,
                search=self.search,
                selection=self.selection,
                include_incumbent=self.include_incumbent,
                reset_state=self.reset_state,
                seed=0 if seed is None else int(seed),
                on_invalid=self.on_invalid,
                optimizer=policy.optimizer,
            )
            if old is not None and [p.shape for p in old.params] == [p.shape for p in params]:
                self.explorer.load_state_dict(old.state_dict())  # e.g. PPO.load(...) then learn again
            else:
                self._last_anchor = None
            self._close_evaluator()
            self._eval = None  # a new model's env: build and check the evaluation env again
            stash = getattr(model, "explorler_state", None)
            if (
                self.state_in_model
                and old is None
                and self._loaded_state is None
                and isinstance(stash, dict)
                and stash
            ):
                checkpoints.check_pairing(stash, model, check_step=False)  # paired by construction
                self._apply_counters(stash)
                self._loaded_state, self._loaded_checked = dict(stash), True
        assert self.explorer is not None
        self.explorer.optimizer = policy.optimizer
        if self.state_in_model:
            model.explorler_state = _StateInModel(self)
        if self._loaded_state is not None:
            state, self._loaded_state = self._loaded_state, None
            self._apply_explorer_state(state, model, check_step=not self._loaded_checked)

    def _close_evaluator(self) -> None:
        if self.step.evaluator is not None:
            self.step.close()
        self.step = self._new_step(None, self.step)

    def _new_step(self, evaluator: CandidateEvaluator | None, old: SearchStep | None) -> SearchStep:
        cap = None if self._eval is None else self._eval.episode_cap
        step = SearchStep(
            self.explorer,
            evaluator,
            candidate_seed=self._seed_of,
            every=self.schedule.explore_every if self.schedule is not None else 1,
            budget_limit=self._budget_limit if evaluator is not None else None,
            episode_cap=cap,
            writer=_LoggerWriter(self),
            say=checks.warn_at_user,
        )
        if old is not None:
            step.load_state_dict(old.state_dict())
        return step

    def _on_training_start(self) -> None:
        model = cast(Any, self.model)
        self._total_timesteps = int(self.locals.get("total_timesteps", 0))
        self._stop = False
        self._in_iteration = False
        mode = checks.anchor_mode(self.anchor_every, model)
        rollout = checks.rollout_steps(model)
        self.schedule = checks.resolve_schedule(self.explore_every, self.max_anchors, mode, rollout)
        self._start_budget(rollout)
        checks.warn_at_learn_start(self, model, rollout)  # a restarted step count; a call with no search
        self._steps_per_epoch = None
        if mode == "epoch":
            if not hasattr(model, "batch_size") or not hasattr(model, "n_epochs"):
                raise ValueError(
                    f"anchor_every='epoch' needs an algorithm with epochs (n_epochs, batch_size); "
                    f"{type(model).__name__} has none: use anchor_every='iteration'"
                )
            self._steps_per_epoch = math.ceil(rollout / model.batch_size)
        if self._hook is not None:  # left by a learn() that raised; the optimizer may be a new one
            self._hook.remove()
            self._hook = None
        if self._steps_per_epoch is not None:
            self._hook = model.policy.optimizer.register_step_post_hook(self._after_optimizer_step)
        if not self._warned:
            self._warned = True
            checks.warn_about_anchors(self.schedule, mode, model, self.max_anchors)

    def _start_budget(self, rollout: int) -> None:
        """Build (once) and check the evaluation env; the budget rule's limit for this ``learn()``."""
        if self._eval is None:
            self._eval = checks.eval_env_for(self.model, self.eval_env, self.eval_env_kwargs)
        start, total = int(self.model.num_timesteps), self._total_timesteps
        self._budget_limit = None
        if self.count_eval_steps and self.budget_tolerance is not None:
            if self._eval.episode_cap is None:
                raise ValueError(
                    "ExploRLerCallback: the evaluation env has no time limit, so the budget rule cannot "
                    "bound a search's env steps: pass eval_env_kwargs={'max_episode_steps': N} (or a "
                    "factory with a TimeLimit), budget_tolerance=None or count_eval_steps=False"
                )
            self.search.num_candidates(2)  # a custom operator's count fails now, not at a search
            end = checks.plain_end(start, total, rollout)
            self._budget_limit = end + int(self.budget_tolerance * max(total - start, 0))
        evaluator = self.step.evaluator
        if evaluator is None:
            evaluator = PolicyEvaluator(
                sb3_actor(check_policy(self.model.policy)),
                self._eval.factory,
                episodes=self.eval_episodes,
                workers=self.eval_workers,
            )
        self.step = self._new_step(evaluator, self.step)

    # ---------------------------------------------------------------- anchors
    def _actor_flat(self) -> torch.Tensor:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        return flatten_params(self.explorer.params)

    def _record(self) -> None:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        self.explorer.record()
        self._last_anchor = self._actor_flat()

    def _after_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._in_iteration or self._steps_per_epoch is None:
            return
        self._optimizer_steps += 1
        if self._optimizer_steps % self._steps_per_epoch == 0:
            self._record()

    def _end_iteration(self) -> None:
        """The iteration whose rollout was collected has been trained: close it."""
        if not self._in_iteration:
            return
        assert self.schedule is not None
        self._in_iteration = False
        self.iterations += 1
        every, stride = self.schedule.explore_every, self.schedule.anchor_stride
        on_stride = (self.iterations % every) % stride == 0  # cycle-relative; the cycle's end too
        moved = self._last_anchor is None or not torch.equal(self._actor_flat(), self._last_anchor)
        if on_stride and moved:
            self._record()
        if self.step.scheduled(self.iterations, self._training_steps()):
            self._pending = True

    # ---------------------------------------------------------------- SB3 hooks
    def _on_rollout_start(self) -> None:
        self._end_iteration()
        if self._pending:
            self._try_search()
        if self.count_eval_steps and self._out_of_budget():
            self._stop = True  # stop this rollout at its first step
        if self.save_path is not None:
            self.save(self.save_path)

    def _out_of_budget(self) -> bool:
        steps = self.model.num_timesteps
        if steps >= self._total_timesteps:
            return True
        limit = self._budget_limit
        return limit is not None and steps + checks.rollout_steps(self.model) > limit

    def _on_step(self) -> bool:
        return not self._stop

    def _on_rollout_end(self) -> None:
        self._in_iteration = True  # train() follows
        self._optimizer_steps = 0

    def _on_training_end(self) -> None:
        self._end_iteration()
        skipped = self.step.skipped_searches
        searched_now = self._pending and self.explore_at_end and self._try_search()
        if searched_now or self._stop or self.step.skipped_searches > skipped:
            self.logger.dump(self.model.num_timesteps)  # values SB3's own dump_logs will not write
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.save_path is not None:
            self.save(self.save_path)

    # ---------------------------------------------------------------- search
    def _seed_of(self, cycle: int) -> int:
        model = getattr(self, "model", None)
        seed = self.seed if self.seed is not None else (model.seed if model is not None else 0)
        return episode_seed(seed or 0, cycle, self.eval_episodes)  # the scripts' sequence

    def candidate_seed(self) -> int:
        """Reset seed of episode 0 of every candidate of the next search (the scripts' sequence)."""
        return self._seed_of(self.searches)

    def _obs_normalizer(self) -> ObsNormalizer | None:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is None or not vec_normalize.norm_obs:
            return None
        return ObsNormalizer.from_env(vec_normalize)  # frozen copy; clip_obs honoured

    def _training_steps(self) -> int:
        return int(self.model.num_timesteps) - self.counted_eval_steps

    def _try_search(self) -> bool:
        """Run the due search if it has 2 anchors and fits the budget; drop it if it does not fit."""
        assert self.explorer is not None, "the callback is not attached to a model yet"
        if self.step.evaluator is None or not self.explorer.can_explore:
            return False  # a due search waits for 2 anchors
        counted = self.model.num_timesteps
        if self.step.fits_budget(self.iterations, self._training_steps(), counted_steps=counted):
            self._explore()
            return True
        self._pending = False  # the budget rule dropped it; anchors keep accumulating
        return False

    def _explore(self) -> None:
        assert self.explorer is not None, "the callback is not attached to a model yet"
        policy = self.model.policy
        training = policy.training
        policy.set_training_mode(False)
        try:
            result, used = self.step.run(self._obs_normalizer(), global_step=self.model.num_timesteps)
        finally:
            policy.set_training_mode(training)
        if self.count_eval_steps:
            self.counted_eval_steps += used
            self.model.num_timesteps += used
        self._pending = False
        self._last_anchor = None
        self.last_result = result
        self.step.log(result, self.model.num_timesteps)
        self.logger.record("explorler/num_anchors", result.num_anchors)
        self.logger.record("explorler/searches", self.searches)
        if self.verbose >= 1:
            gain = "" if result.gain is None else f", gain {result.gain:+.1f}"
            print(
                f"ExploRLer search {self.searches} after iteration {self.iterations}: best "
                f"{result.best_score:.1f}{gain}, committed={result.committed}, {used} env steps"
            )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Anchors, counters, the search's RNG state, and the model step and shapes they belong to.

        Tensors and plain values only: ``torch.load(weights_only=True)`` reads it.

        Returns:
            The state; before the first ``learn()`` (or ``load(..., model=)``), the loaded one.

        Raises:
            RuntimeError: nothing to return yet (no model and nothing loaded).
        """
        if self.explorer is None:
            if self._loaded_state is not None:
                return dict(self._loaded_state)
            raise RuntimeError(
                "ExploRLerCallback.state_dict(): no model yet; call it after model.learn(..., callback=...)"
            )
        return {
            "version": checkpoints.STATE_VERSION,
            "explorer": self.explorer.state_dict(),
            "iterations": self.iterations,
            "searches": self.searches,
            "eval_env_steps": self.eval_env_steps,
            "counted_eval_steps": self.counted_eval_steps,
            "pending": self._pending,
            "last_anchor": None if self._last_anchor is None else self._last_anchor.detach().cpu().clone(),
            "num_timesteps": int(self.model.num_timesteps),
            "search_step": self.step.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any], model: Any | None = None) -> None:
        """Restore :meth:`state_dict`: counters at once, anchors once the model is known.

        Args:
            state_dict: what :meth:`state_dict` returned.
            model: the model the state belongs to; default: the one attached, else the next
                ``learn()``'s (checked then).

        Raises:
            ValueError: not a callback state, or one saved at another ``num_timesteps`` or for
                other parameter shapes than the model's (the message says which file fits).
        """
        checkpoints.check_state(state_dict)
        model = model if model is not None else getattr(self, "model", None)
        if model is not None:
            checkpoints.check_pairing(state_dict, model, check_step=True)
        self._apply_counters(state_dict)
        if model is None:
            self._loaded_state, self._loaded_checked = dict(state_dict), False
            return
        if getattr(self, "model", None) is not model or self.explorer is None:
            self.model = model
            self._loaded_state, self._loaded_checked = dict(state_dict), True
            self._attach(model)  # builds the explorer and applies the state
        else:
            self._apply_explorer_state(state_dict, model, check_step=False)

    def _apply_counters(self, state: dict[str, Any]) -> None:
        self.iterations = int(state["iterations"])
        self.counted_eval_steps = int(state["counted_eval_steps"])
        self._pending = bool(state["pending"])
        step_state = state.get("search_step") or {
            "eval_env_steps": int(state["eval_env_steps"]),
            "cycle": int(state["searches"]),
        }
        self.step.load_state_dict(step_state)

    def _apply_explorer_state(self, state: dict[str, Any], model: Any, check_step: bool) -> None:
        assert self.explorer is not None
        checkpoints.check_pairing(state, model, check_step)
        self.explorer.load_state_dict(state["explorer"])
        last = state["last_anchor"]
        self._last_anchor = None if last is None else last.to(self.explorer.params[0].device)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (:func:`.checkpoints.save_state`)."""
        checkpoints.save_state(path, self.state_dict())

    def load(self, path: str | os.PathLike, model: Any | None = None) -> None:
        """Read a file written by :meth:`save` (``weights_only=True``): see :meth:`load_state_dict`."""
        self.load_state_dict(checkpoints.read_state(path), model=model)

    def close(self) -> None:
        """Close the evaluation envs (and worker processes)."""
        self._close_evaluator()

    def __repr__(self) -> str:
        env = self.eval_env if isinstance(self.eval_env, str) or self.eval_env is None else "<factory>"
        return (
            f"{type(self).__name__}(eval_env={env!r}, explore_every={self.explore_every!r}, "
            f"eval_episodes={self.eval_episodes}, max_anchors={self.max_anchors}, "
            f"anchor_every={self.anchor_every!r}, search={self.search!r}, "
            f"include_incumbent={self.include_incumbent}, count_eval_steps={self.count_eval_steps}, "
            f"budget_tolerance={self.budget_tolerance}, iterations={self.iterations}, "
            f"searches={self.searches}, eval_env_steps={self.eval_env_steps})"
        )
