"""The single-file scripts' research harness: what a run needs besides training, one call each.

The scripts' flags (``args``, their ``Args`` dataclass) map onto the library here, so that a script
keeps CleanRL's order with one-line ExploRLer call sites: the episode seeds (:func:`candidate_seed`,
:func:`truth_seed`, :func:`heldout_seed`), the settings check and budget (:func:`check_settings`,
:func:`explain_unreachable_searches`),
the candidate generator (:func:`search_operator`), the evaluators (:func:`build_evaluators`), the
search step (:func:`build_search_step`), the held-out evaluation env (:func:`eval_env`) and
checkpoints: :class:`RunCheckpoint` (``--save-model``, ``--resume``, ``--init-from``, Ctrl-C) and
:func:`evaluate_checkpoint` (``--eval-checkpoint``).

``args`` needs the scripts' field names: ``seed``, ``env_id``, ``max_episode_steps``,
``total_timesteps``, ``batch_size``, ``num_iterations`` and the ExploRLer flags.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from explorler_optim.checkpoint import (
    check_resumable,
    load_normalization_state,
    load_run_state,
    run_state,
    save_checkpoint,
)
from explorler_optim.rl.args import research_setting
from explorler_optim.rl.normalize import ObsNormalizer
from explorler_optim.rl.run_evaluators import RunEvaluators
from explorler_optim.rl.search_step import SearchStep, episode_seed
from explorler_optim.search import SearchOperator, make_search
from explorler_optim.selection import SelectionRule, make_selection

__all__ = [
    "RunCheckpoint",
    "build_evaluators",
    "action_size",
    "build_search_step",
    "candidate_seed",
    "check_settings",
    "deterministic_policy",
    "eval_env",
    "explain_unreachable_searches",
    "evaluate_checkpoint",
    "heldout_seed",
    "log_heldout",
    "obs_normalizer",
    "search_operator",
    "selection_rule",
    "truth_seed",
]


def candidate_seed(args: Any, cycle: int) -> int:
    """Reset seed of episode 0 for every candidate of explore cycle ``cycle`` (episode k: +k).

    Example:
        >>> args = SimpleNamespace(seed=1, eval_episodes=1, fixed_candidate_starts=False)
        >>> candidate_seed(args, 0), candidate_seed(args, 1)
        (1000003, 1000004)
    """
    if args.fixed_candidate_starts:
        return int(args.seed)  # the authors' scoring: the same start states every cycle
    return episode_seed(args.seed, cycle, args.eval_episodes)


def truth_seed(args: Any, cycle: int) -> int:
    """Reset seed of the selection audit's held-out episode 0 at ``cycle``: no other run's seeds.

    Example:
        >>> truth_seed(SimpleNamespace(seed=1, selection_truth_episodes=3), 2)
        2001000006
    """
    truth_episodes = research_setting(args, "selection_truth_episodes")
    return int(2_000_000_000 + (args.seed % 1000) * 1_000_000 + cycle * truth_episodes)


def heldout_seed(args: Any) -> int:
    """Reset seed of held-out episode 0; disjoint from candidate seeds, the same in both modes.

    Example:
        >>> heldout_seed(SimpleNamespace(seed=1))
        1000001000
    """
    return int(1_000_000_000 + (args.seed % 1_000_000) * 1000)


def require_env(env_id: str) -> None:
    """Import ``env_id``'s module now, so that a missing physics engine fails at once, naming the fix.

    gymnasium imports an env's module (and Box2D or MuJoCo with it) only when the env is made, and
    its own hint for Box2D builds ``box2d-py`` from source; the scripts' extra brings wheels.

    Raises:
        SystemExit: the env needs a package that is not installed; the message says how to get it.

    Example:
        >>> require_env("Pendulum-v1")  # classic control needs nothing more than gymnasium
    """
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    from explorler_optim.extras import install_hint

    entry_point = gym.spec(env_id).entry_point
    if not isinstance(entry_point, str):
        return
    try:
        load_env_creator(entry_point)
    except (gym.error.DependencyNotInstalled, ImportError) as exc:
        raise SystemExit(
            f"{env_id} needs a package that is not installed ({exc}). Install the scripts' extra, which "
            f"brings MuJoCo and Box2D (box2d, pygame) as wheels: {install_hint('scripts')}"
        ) from exc


def check_settings(args: Any, planned_steps: int | None = None) -> tuple[int, int | None]:
    """``(budget_limit, episode_cap)``, or an error that names the fix before anything is built.

    The budget is the baseline's total, ``planned_steps`` (default ``num_iterations * batch_size``:
    whole iterations, as CleanRL rounds; an off-policy loop's: ``total_timesteps``); with candidate steps
    counted, nothing starts that could take the counted steps past it by more than
    ``budget_tolerance``. A search's env steps are bounded by policies x episodes x the cap on an
    episode's length.

    Raises:
        SystemExit: an inconsistent combination of flags; the message names the fix.

    Example:
        >>> args = SimpleNamespace(budget_tolerance=0.01, num_iterations=2, batch_size=64,
        ...     total_timesteps=100, max_episode_steps=50, env_id="Hopper-v5", explorler=True,
        ...     count_eval_steps=True, surrogate_max_kl=0.01, score_with="env", landscape_every=0)
        >>> check_settings(args)
        (129, 50)
    """
    import gymnasium as gym

    require_env(args.env_id)
    reuse = getattr(args, "reuse_candidate_rollouts", "none")
    if args.budget_tolerance < 0:
        raise SystemExit(f"--budget-tolerance must be >= 0, got {args.budget_tolerance}")
    if planned_steps is None:
        planned_steps = args.num_iterations * args.batch_size
    budget_limit = planned_steps + int(args.budget_tolerance * args.total_timesteps)
    episode_cap = args.max_episode_steps or gym.spec(args.env_id).max_episode_steps
    if reuse != "none" and not args.explorler:
        raise SystemExit(
            "--reuse-candidate-rollouts reuses a search's episodes: it needs ExploRLer (drop --no-explorler)"
        )
    if args.explorler and args.count_eval_steps and not episode_cap:
        raise SystemExit(
            f"{args.env_id} has no time limit, so the env steps of a search cannot be bounded within the "
            "budget: pass --max-episode-steps N (or --no-count-eval-steps)"
        )
    if getattr(args, "search", "esa") in ("pbt", "cma-es") and (
        reuse != "none" or research_setting(args, "selection_truth_episodes") > 0
    ):
        raise SystemExit(
            f"--search {args.search} scores candidates in rounds; --reuse-candidate-rollouts and "
            "--selection-truth-episodes read one round's episodes: use a one-round search with them"
        )
    if args.surrogate_max_kl <= 0:
        raise SystemExit(f"--surrogate-max-kl must be > 0, got {args.surrogate_max_kl}")
    if args.score_with != "env" and reuse != "none":
        raise SystemExit(
            f"--reuse-candidate-rollouts trains on a search's episodes and --score-with {args.score_with} "
            "plays none: choose one of them"
        )
    for flag in ("explore_every", "eval_every"):
        if getattr(args, flag, 1) < 1:
            raise SystemExit(
                f"--{flag.replace('_', '-')} must be >= 1 (iterations), got {getattr(args, flag)}"
            )
    if args.landscape_every > 0:
        from explorler_optim.viz import require_matplotlib

        try:
            require_matplotlib()  # fails now, not at the first search
        except ImportError as error:
            raise SystemExit(f"--landscape-every: {error}") from None
    return budget_limit, episode_cap


def search_operator(args: Any) -> SearchOperator:
    """The candidate generator of ``--search`` with the ``--esa-*`` / ``--gaussian-candidates`` flags.

    Example:
        >>> args = SimpleNamespace(search="gaussian", gaussian_candidates=7)
        >>> search_operator(args).num_candidates(10)
        7
    """
    walk = {"agents": "esa_agents", "steps": "esa_steps", "step_size": "esa_step_size"}
    walk |= {"neighbors": "esa_neighbors", "snapshot_every": "esa_snapshot_every"}
    flags = {
        "esa": {**walk, "momentum": "esa_momentum", "epsilon": "esa_epsilon"},
        "random-walk": walk,
        "checkpoint-average": {},
        "gaussian": {"num_candidates": "gaussian_candidates"},
        "pbt": {"noise_scale": "pbt_noise_scale"},
        "cma-es": {"popsize": "es_popsize", "rounds": "es_rounds"},
    }[args.search]
    try:
        return make_search(args.search, **{option: getattr(args, flag) for option, flag in flags.items()})
    except (ImportError, ValueError) as error:
        raise SystemExit(f"--search {args.search}: {error}") from None


def selection_rule(args: Any) -> SelectionRule:
    """The selection rule of ``--selection`` (with ``--tournament-size``).

    Example:
        >>> selection_rule(SimpleNamespace(selection="tournament", tournament_size=2))
        TournamentSelection(size=2)
    """
    options = {"size": args.tournament_size} if args.selection == "tournament" else {}
    try:
        return make_selection(args.selection, **options)
    except ValueError as error:
        raise SystemExit(f"--selection {args.selection}: {error}") from None


def _build_eval_env(env_id: str, max_episode_steps: int | None) -> Any:
    import gymnasium as gym

    return gym.wrappers.FlattenObservation(gym.make(env_id, max_episode_steps=max_episode_steps))


def eval_env(env_id: str, max_episode_steps: int | None = None) -> Callable[[], Any]:
    """A picklable builder of an evaluation env: raw observations and rewards (evaluators apply the
    training env's frozen observation statistics themselves).

    Example:
        >>> env = eval_env("Pendulum-v1", 20)()
        >>> env.observation_space.shape
        (3,)
    """
    return functools.partial(_build_eval_env, env_id, max_episode_steps)


def build_evaluators(
    args: Any,
    agent: Any,
    stats_env: Any | None,
    *,
    policy: torch.nn.Module | None = None,
    critic_value: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RunEvaluators:
    """The run's evaluators (``RunEvaluators.build``) from the scripts' flags.

    Args:
        args: the script's flags.
        agent: the scripts' ``Agent`` (``actor_mean`` or a discrete policy's ``actor``,
            ``actor_logstd``, ``get_action_and_value``).
        stats_env: the training env whose observation statistics the evaluators freeze (``None``:
            it does not normalise them).
        policy: the deterministic policy the evaluators play (default: the agent's, above).
        critic_value: ``--score-with critic``'s value of a policy's own actions on a batch of
            states (a ``CriticEvaluator``'s).

    Example: see the scripts.
    """
    free = {"env": "env", "critic": "critic"}.get(args.score_with, "surrogate")  # surrogate*: no env steps
    return RunEvaluators.build(
        policy if policy is not None else deterministic_policy(agent),
        eval_env(args.env_id, args.max_episode_steps),
        stats_env,
        heldout_episodes=args.heldout_episodes,
        heldout_seed=heldout_seed(args),
        candidate_episodes=args.eval_episodes if args.explorler else 0,
        candidate_seed=candidate_seed(args, 0),
        workers=args.eval_workers,
        racing=args.racing,
        paper_metric=research_setting(args, "paper_metric_every") > 0,
        paper_seed=args.seed,
        truth_episodes=research_setting(args, "selection_truth_episodes"),
        score_with=free,
        log_prob=lambda obs, act: agent.get_action_and_value(obs, act)[1],
        surrogate_max_kl=args.surrogate_max_kl,
        critic_value=critic_value,
        # reused episodes must be the stochastic policy's, with each action's log-probability
        candidate_log_std=(
            agent.actor_logstd if getattr(args, "reuse_candidate_rollouts", "none") != "none" else None
        ),
    )


def deterministic_policy(agent: Any) -> torch.nn.Module:
    """The module mapping observations to the scripts' deterministic actions: a Gaussian agent's
    ``actor_mean``, or a discrete agent's ``actor`` (its logits, argmax-ed by the evaluators)."""
    return agent.actor_mean if hasattr(agent, "actor_mean") else agent.actor


def action_size(space: Any) -> int:
    """The policy's output size for an action space: a ``Discrete`` space's ``n``, else the number
    of action dimensions.

    Example:
        >>> import gymnasium as gym
        >>> action_size(gym.spaces.Discrete(4)), action_size(gym.spaces.Box(-1, 1, (3, 2)))
        (4, 6)
    """
    n = getattr(space, "n", None)
    return int(n) if n is not None else int(np.prod(space.shape))


def build_search_step(
    args: Any,
    optimizer: Any,
    evaluators: RunEvaluators,
    run_name: str,
    budget: tuple[int, int | None],
    writer: Any,
    say: Callable[[str], Any],
) -> SearchStep:
    """The run's :class:`SearchStep` from the scripts' flags: when a search is due, its budget rule,
    its env steps, its audit and its logs.

    Args:
        args: the script's flags.
        optimizer: the ``ExploRLerOptimizer`` (or the plain optimizer without ExploRLer).
        evaluators: :func:`build_evaluators`'s.
        run_name: the TensorBoard run (the audit's records go to ``runs/{run_name}``).
        budget: :func:`check_settings`'s ``(budget_limit, episode_cap)``.
        writer: the run's ``SummaryWriter``.
        say: prints a message.

    Example: see the scripts.
    """
    budget_limit, episode_cap = budget
    search = SearchStep(
        optimizer,
        evaluators.candidate,
        candidate_seed=functools.partial(candidate_seed, args),
        every=args.explore_every,
        start_step=args.explore_start_step,
        audit=evaluators.audit,
        truth_seed=functools.partial(truth_seed, args),
        audit_path=os.path.join("runs", run_name, "selection_audit.jsonl"),
        budget_limit=budget_limit if args.count_eval_steps else None,
        episode_cap=episode_cap,
        landscape_every=args.landscape_every,
        writer=writer,
        say=say,
        defer=args.score_with == "surrogate-next",  # scored on the next batch, before its update
    )
    message = explain_unreachable_searches(args, search)
    if message:
        print(message, file=sys.stderr)  # even with --quiet: the run would be plain PPO/TRPO unasked
    return search


def explain_unreachable_searches(args: Any, search: SearchStep) -> str | None:
    """Why no search can run in this run, with the flags that would fix it; ``None`` if one can.

    The first search due (the first multiple of ``--explore-every`` iterations from
    ``--explore-start-step`` on) is the one most likely to fit the budget: later ones have more
    counted steps and as many anchors or more. So if the run has no such iteration, or the first
    one cannot fit, no search ever runs.

    Args:
        args: the script's flags (``num_iterations``, ``batch_size``, ``total_timesteps``,
            ``explore_every``, ``explore_start_step``, ``max_anchors``; PPO's ``update_epochs``:
            anchors per iteration, 1 without it). An off-policy loop's (SAC: no ``num_iterations``)
            iteration is one env step of each of ``num_envs`` envs, and its actor moves, so anchors
            come, only after ``learning_starts`` env steps.
        search: the run's :class:`SearchStep`.

    Example:
        >>> from explorler_optim import ExploRLerOptimizer
        >>> opt = ExploRLerOptimizer(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
        >>> score = SimpleNamespace(episodes=1)  # 1 episode per policy
        >>> step = SearchStep(opt, score, candidate_seed=int, every=2, budget_limit=8273, episode_cap=1000)
        >>> args = SimpleNamespace(num_iterations=8, batch_size=1024, total_timesteps=8192, explore_every=2,
        ...     explore_start_step=0, max_anchors=10, update_epochs=10)
        >>> print(explain_unreachable_searches(args, step))  # doctest: +NORMALIZE_WHITESPACE
        no search can run: the first, after iteration 2 (2,048 counted env steps), could use up to
        11,000 (11 policies x 1 episode(s) x 1,000 steps) and end past the budget's limit of 8,273;
        the run is plain training. For searches pass --total-timesteps 13312 or more, or
        --no-count-eval-steps (candidate steps not counted, the paper's accounting)
    """
    if search.evaluator is None:
        return None
    every, off_policy = search.every, not hasattr(args, "num_iterations")
    if off_policy:  # SAC: an iteration is one env step of every env; anchors once learning starts
        batch, iterations = int(args.num_envs), -(-int(args.total_timesteps) // int(args.num_envs))
        start_step = max(int(search.start_step), int(args.learning_starts) + batch)
    else:
        batch, iterations, start_step = int(args.batch_size), int(args.num_iterations), int(search.start_step)
    start_iterations = -(-start_step // batch)  # iterations before global_step >= start
    first = max(every, -(-start_iterations // every) * every)
    moves = first - start_iterations + 1 if off_policy else first * int(getattr(args, "update_epochs", 1))
    anchors = min(int(args.max_anchors), moves)
    counted, bound = first * batch, search.search_bound(anchors)
    if first > iterations:
        if off_policy:  # the least total with that search inside the budget too
            enough = counted + (bound if search.budget_limit is not None else 0)
            return (
                f"no search can run: the run has {iterations:,} env step(s) per env and the first search "
                f"is due after {first:,} (the first multiple of --explore-every {every} after "
                f"--learning-starts {args.learning_starts:,}, when the actor starts to move); the run "
                f"is plain training. Pass --total-timesteps {enough} or more, or a lower --learning-starts"
            )
        return (
            f"no search can run: the run has {iterations} iteration(s) and the first search is "
            f"due after iteration {first} (--explore-every {every}"
            + (f", --explore-start-step {search.start_step:,}" if search.start_step else "")
            + f"); the run is plain training. Pass --explore-every {iterations} or less"
            + (", or a lower --explore-start-step" if search.start_step else "")
        )
    if search.budget_limit is None or counted + bound <= search.budget_limit:
        return None
    enough = -(-(counted + bound) // batch) * batch  # whole iterations, as the scripts round
    after = f"env step {first:,} per env" if off_policy else f"iteration {first}"
    return (
        f"no search can run: the first, after {after} ({counted:,} counted env steps), could "
        f"use up to {bound:,} ({search.policies_per_search(anchors)} policies x {search.evaluator.episodes} "
        f"episode(s) x {search.episode_cap:,} steps) and end past the budget's limit of "
        f"{search.budget_limit:,}; the run is plain training. For searches pass --total-timesteps "
        f"{enough} or more, or --no-count-eval-steps (candidate steps not counted, the paper's accounting)"
    )


class RunCheckpoint:
    """A run's checkpoint file: its name and path, ``--resume`` (continue exactly where a run
    stopped: same TensorBoard run, envs mid-episode, random generators), ``--init-from`` (a new run
    from a trained one's weights, statistics and optimizers) and the end of a run (Ctrl-C).

    Args:
        args: the script's flags (``resume``, ``init_from``, ``checkpoint_path``, ``exp_name``,
            ``env_id``, ``seed``, ``explorler``, ``save_model``).
        fmt: the checkpoint's ``"format"`` entry.

    Raises:
        SystemExit: ``--resume`` of a checkpoint without the envs' states (a release before exact
            resume; start a new run, or fork it with ``--init-from``), or of another script's.

    Example:
        >>> args = SimpleNamespace(resume=None, init_from=None, checkpoint_path="x.pt",
        ...     exp_name="ppo", env_id="Hopper-v5", seed=1)
        >>> run = RunCheckpoint(args, "explorler-ppo-continuous/1")
        >>> run.path, run.purge_step, run.run_name.startswith("Hopper-v5__ppo__1__")
        ('x.pt', None, True)
    """

    def __init__(self, args: Any, fmt: str) -> None:
        self.args, self.format = args, fmt
        self.resumed = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
        if self.resumed is not None:
            self._check_format(self.resumed, "--resume", args.resume)
        if self.resumed is not None and "envs" not in self.resumed:
            raise SystemExit(
                f"--resume: {args.resume} has no env states (written before exact resume); start a new "
                "run from it with --init-from instead"
            )
        default_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        self.run_name: str = self.resumed["run_name"] if self.resumed else default_name
        self.path = args.checkpoint_path or os.path.join("runs", self.run_name, f"{args.exp_name}.pt")
        # a resumed run drops what the stopped one logged after its checkpoint
        self.purge_step = self.resumed["global_step"] + 1 if self.resumed else None

    def _check_format(self, ckpt: dict, flag: str, path: str) -> None:
        written_by = ckpt.get("format", self.format)
        if written_by != self.format:
            raise SystemExit(
                f"{flag}: {path} is a {written_by!r} checkpoint and this script reads {self.format!r}; "
                "use the script that wrote it"
            )

    def restore(self, modules: dict[str, Any], envs: Any, search: SearchStep, say: Callable) -> dict:
        """Load ``--resume``'s or ``--init-from``'s checkpoint into a freshly built run.

        Args:
            modules: what has a ``state_dict``, by checkpoint key (``{"agent": agent, "optimizer":
                optimizer, ...}``).
            envs: the training envs (their normalisation statistics are loaded).
            search: the run's :class:`SearchStep` (its counters, with ``--resume``).
            say: prints a message.

        Returns:
            With ``--resume`` the checkpoint (its counters: ``global_step``, ``total_env_steps``,
            ``iteration``, ``eval_return``, ...); otherwise ``{}`` (counters from zero).

        Raises:
            SystemExit: resuming an ExploRLer run with ``--no-explorler``, forking a run of another
                env or another script, or ``--save-model`` with an env that cannot be checkpointed.
        """
        args, ckpt = self.args, self.resumed
        if args.save_model:  # now, not at the first checkpoint, minutes or hours into the run
            try:
                check_resumable(envs)
            except TypeError as error:
                raise SystemExit(
                    f"--save-model: {error}. {args.env_id}'s state cannot be checkpointed for an exact "
                    "--resume; run it without --save-model (a stopped run then starts over)"
                ) from None
        if ckpt is None and args.init_from is None:
            return {}
        if ckpt is None:  # a new run from a trained one: its weights, statistics and optimizers
            source = torch.load(args.init_from, map_location="cpu", weights_only=True)
            self._check_format(source, "--init-from", args.init_from)
            if source["args"]["env_id"] != args.env_id:
                trained_on = source["args"]["env_id"]
                raise SystemExit(
                    f"--init-from: {args.init_from} was trained on {trained_on}, not {args.env_id}"
                )
            for key, module in modules.items():
                module.load_state_dict(source[key])
            load_normalization_state(envs, source)
            if args.explorler:
                modules["optimizer"].clear_anchors()  # the fork starts a new cycle
            say(f"started from {args.init_from} (trained for {source['global_step']:,} steps)")
            return {}
        if ckpt["explorler"] and not args.explorler:
            raise SystemExit("checkpoint was written with ExploRLer on; resume without --no-explorler")
        for key, module in modules.items():
            module.load_state_dict(ckpt[key])
        load_normalization_state(envs, ckpt)
        search.load_state_dict(ckpt)  # the search cycle, its env steps, last anchors, last gain, skips
        say(f"resumed from {args.resume} at global_step={ckpt['global_step']} iteration={ckpt['iteration']}")
        return ckpt

    def resume_loop(self, envs: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``--resume``: the envs mid-episode, the random generators and the loop's last
        observation; returns ``(next_obs, next_done, last_return)``."""
        assert self.resumed is not None
        next_obs, next_done = load_run_state(envs, self.resumed, device)
        return next_obs, next_done, self.resumed["last_return"]

    def save(
        self, modules: dict[str, Any], envs: Any, search: SearchStep, loop: tuple, **counters: Any
    ) -> None:
        """Write the checkpoint atomically: ``modules``' state dicts, the flags, ``counters``, the
        search's counters and what ``--resume`` needs (``loop`` is ``(next_obs, next_done)``)."""
        payload = {"format": self.format, **{key: m.state_dict() for key, m in modules.items()}}
        payload |= {"explorler": bool(self.args.explorler), "args": dict(vars(self.args))}
        payload |= {"run_name": self.run_name, **counters, **search.state_dict(), **run_state(envs, *loop)}
        save_checkpoint(self.path, payload)

    def finish(self, interrupted: bool, iteration: int, counted: int, save: Callable, say: Callable) -> None:
        """The end of a run: with ``--save-model`` a Ctrl-C writes the checkpoint of that moment;
        says what was kept."""
        if not interrupted:
            if self.args.save_model:
                say(f"model saved to {self.path}")
            return
        if self.args.save_model:
            save()
            kept = f"checkpoint of this moment written to {self.path} (continue with --resume)"
        else:
            kept = "no checkpoint written (run with --save-model to keep one, also on Ctrl-C)"
        print(f"interrupted at iteration {iteration}, {counted:,} counted env steps: {kept}", file=sys.stderr)


def evaluate_checkpoint(
    path: str,
    episodes: int,
    make_env: Callable,
    agent_class: Callable | None = None,
    *,
    build_policy: Callable[[dict], torch.nn.Module] | None = None,
) -> dict:
    """Held-out evaluation of a saved checkpoint with its saved statistics and seeds (no training).

    Args:
        path: the checkpoint.
        episodes: held-out episodes.
        make_env: the script's ``make_env(env_id, gamma, max_episode_steps)``: the training env is
            rebuilt with its wrappers holding the saved statistics, so the normaliser is read from it
            exactly as during training.
        agent_class: the script's ``Agent(obs_dim, act_dim)`` (act_dim: a ``Discrete`` space's
            ``n``), loaded with the checkpoint's ``"agent"``.
        build_policy: instead of ``agent_class``: the deterministic policy of a checkpoint, loaded
            (e.g. the SAC script's greedy actor).

    Returns:
        ``{"checkpoint", "env_id", "episodes", "eval_episodic_return", "saved_eval_episodic_return",
        "global_step", "total_env_steps"}``.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    saved = SimpleNamespace(**ckpt["args"])
    stats_env = make_env(saved.env_id, saved.gamma, saved.max_episode_steps)()
    load_normalization_state(stats_env, ckpt)
    if build_policy is not None:
        policy = build_policy(ckpt)
    else:
        assert agent_class is not None, "evaluate_checkpoint: pass agent_class or build_policy"
        obs_dim = int(np.prod(stats_env.observation_space.shape))
        agent = agent_class(obs_dim, action_size(stats_env.action_space))
        agent.load_state_dict(ckpt["agent"])
        policy = deterministic_policy(agent)
    policy.eval()
    normalised = ckpt["obs_rms"][0] is not None  # saved without statistics: raw observations
    evaluators = RunEvaluators.build(
        policy,
        eval_env(saved.env_id, saved.max_episode_steps),
        stats_env if normalised else None,
        heldout_episodes=episodes,
        heldout_seed=heldout_seed(saved),
    )
    score = float(evaluators.heldout())
    evaluators.close()
    stats_env.close()
    return {
        "checkpoint": path,
        "env_id": saved.env_id,
        "episodes": episodes,
        "eval_episodic_return": score,
        "saved_eval_episodic_return": ckpt.get("eval_return"),
        "global_step": ckpt["global_step"],
        "total_env_steps": ckpt["total_env_steps"],
    }


def obs_normalizer(stats_env: Any | None) -> ObsNormalizer | None:
    """The training env's observation statistics now, frozen; ``None`` for an env without them."""
    return ObsNormalizer.from_env(stats_env) if stats_env is not None else None


def log_heldout(evaluators: RunEvaluators, stats_env: Any, writer: Any, steps: tuple[int, int]) -> float:
    """Score the current policy on the held-out episodes with the training env's statistics now
    and log ``eval/episodic_return`` (at ``global_step``) and ``eval/episodic_return_vs_total_steps``
    (at ``total_env_steps``); ``steps`` is ``(global_step, total_env_steps)``."""
    evaluators.heldout.prepare(obs_normalizer(stats_env))
    score = float(evaluators.heldout())
    writer.add_scalar("eval/episodic_return", score, steps[0])
    writer.add_scalar("eval/episodic_return_vs_total_steps", score, steps[1])
    return score
