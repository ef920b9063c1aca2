"""The single-file scripts' research harness: what a run needs besides training, one call each.

The scripts' flags (``args``, their ``Args`` dataclass) map onto the library here, so that a script
keeps CleanRL's order with one-line ExploRLer call sites: the episode seeds (:func:`candidate_seed`,
:func:`truth_seed`, :func:`heldout_seed`), the settings check and budget (:func:`check_settings`),
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

from explorler_optim.checkpoint import load_normalization_state, load_run_state, run_state, save_checkpoint
from explorler_optim.rl.normalize import ObsNormalizer
from explorler_optim.rl.run_evaluators import RunEvaluators
from explorler_optim.rl.search_step import SearchStep, episode_seed
from explorler_optim.search import SearchOperator, make_search

__all__ = [
    "RunCheckpoint",
    "build_evaluators",
    "build_search_step",
    "candidate_seed",
    "check_settings",
    "eval_env",
    "evaluate_checkpoint",
    "heldout_seed",
    "log_heldout",
    "search_operator",
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
    return int(2_000_000_000 + (args.seed % 1000) * 1_000_000 + cycle * args.selection_truth_episodes)


def heldout_seed(args: Any) -> int:
    """Reset seed of held-out episode 0; disjoint from candidate seeds, the same in both modes.

    Example:
        >>> heldout_seed(SimpleNamespace(seed=1))
        1000001000
    """
    return int(1_000_000_000 + (args.seed % 1_000_000) * 1000)


def check_settings(args: Any) -> tuple[int, int | None]:
    """``(budget_limit, episode_cap)``, or an error that names the fix before anything is built.

    The budget is the baseline's total (whole iterations, as CleanRL rounds); with candidate steps
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

    reuse = getattr(args, "reuse_candidate_rollouts", "none")
    if args.budget_tolerance < 0:
        raise SystemExit(f"--budget-tolerance must be >= 0, got {args.budget_tolerance}")
    budget_limit = args.num_iterations * args.batch_size + int(args.budget_tolerance * args.total_timesteps)
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
    }[args.search]
    return make_search(args.search, **{option: getattr(args, flag) for option, flag in flags.items()})


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


def build_evaluators(args: Any, agent: Any, stats_env: Any) -> RunEvaluators:
    """The run's evaluators (``RunEvaluators.build``) from the scripts' flags.

    Args:
        args: the script's flags.
        agent: the scripts' ``Agent`` (``actor_mean``, ``actor_logstd``, ``get_action_and_value``).
        stats_env: the training env whose observation statistics the evaluators freeze.

    Example: see the scripts.
    """
    return RunEvaluators.build(
        agent.actor_mean,
        eval_env(args.env_id, args.max_episode_steps),
        stats_env,
        heldout_episodes=args.heldout_episodes,
        heldout_seed=heldout_seed(args),
        candidate_episodes=args.eval_episodes if args.explorler else 0,
        candidate_seed=candidate_seed(args, 0),
        workers=args.eval_workers,
        racing=args.racing,
        paper_metric=args.paper_metric_every > 0,
        paper_seed=args.seed,
        truth_episodes=args.selection_truth_episodes,
        score_with="env" if args.score_with == "env" else "surrogate",  # surrogate*: no env steps
        log_prob=lambda obs, act: agent.get_action_and_value(obs, act)[1],
        surrogate_max_kl=args.surrogate_max_kl,
        # reused episodes must be the stochastic policy's, with each action's log-probability
        candidate_log_std=(
            agent.actor_logstd if getattr(args, "reuse_candidate_rollouts", "none") != "none" else None
        ),
    )


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
    return SearchStep(
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
            SystemExit: resuming an ExploRLer run with ``--no-explorler``, or forking a run of
                another env or another script.
        """
        args, ckpt = self.args, self.resumed
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


def evaluate_checkpoint(path: str, episodes: int, make_env: Callable, agent_class: Callable) -> dict:
    """Held-out evaluation of a saved checkpoint with its saved statistics and seeds (no training).

    Args:
        path: the checkpoint.
        episodes: held-out episodes.
        make_env: the script's ``make_env(env_id, gamma, max_episode_steps)``: the training env is
            rebuilt with its wrappers holding the saved statistics, so the normaliser is read from it
            exactly as during training.
        agent_class: the script's ``Agent(obs_dim, act_dim)``.

    Returns:
        ``{"checkpoint", "env_id", "episodes", "eval_episodic_return", "saved_eval_episodic_return",
        "global_step", "total_env_steps"}``.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    saved = SimpleNamespace(**ckpt["args"])
    stats_env = make_env(saved.env_id, saved.gamma, saved.max_episode_steps)()
    load_normalization_state(stats_env, ckpt)
    obs_dim = int(np.prod(stats_env.observation_space.shape))
    agent = agent_class(obs_dim, int(np.prod(stats_env.action_space.shape)))
    agent.load_state_dict(ckpt["agent"])
    agent.eval()
    evaluators = RunEvaluators.build(
        agent.actor_mean,
        eval_env(saved.env_id, saved.max_episode_steps),
        stats_env,
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


def log_heldout(evaluators: RunEvaluators, stats_env: Any, writer: Any, steps: tuple[int, int]) -> float:
    """Score the current policy on the held-out episodes with the training env's statistics now
    and log ``eval/episodic_return`` (at ``global_step``) and ``eval/episodic_return_vs_total_steps``
    (at ``total_env_steps``); ``steps`` is ``(global_step, total_env_steps)``."""
    evaluators.heldout.prepare(ObsNormalizer.from_env(stats_env))
    score = float(evaluators.heldout())
    writer.add_scalar("eval/episodic_return", score, steps[0])
    writer.add_scalar("eval/episodic_return_vs_total_steps", score, steps[1])
    return score
