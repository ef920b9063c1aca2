"""The ExploRLer flags of the single-file scripts, a dataclass their ``Args`` inherits.

This module imports neither torch nor gymnasium (nor does ``import explorler_optim.rl.args``, the
packages import lazily), so a script can parse its flags with ``tyro`` before its heavy imports
and ``--help`` answers at once. The fields' docstrings are the flags' help.
"""

from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["ExploRLerArgs", "ResearchArgs", "research_setting"]


@dataclass
class ExploRLerArgs:
    """What the PPO and TRPO scripts add to CleanRL's flags: the run, the search, the held-out
    evaluation. A script's ``Args(ExploRLerArgs)`` adds CleanRL's own; ``tyro.cli(Args)`` shows
    both.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Args(ExploRLerArgs):
        ...     seed: int = 1
        >>> args = Args(explore_every=5)
        >>> args.seed, args.explore_every, args.search, args.count_eval_steps
        (1, 5, 'esa', True)
    """

    # the run
    torch_threads: int = 1
    """torch CPU threads; 1 is fastest for these small MLPs (0 keeps torch's default)"""
    quiet: bool = False
    """if toggled, no console output (no progress bar, no messages)"""
    checkpoint_path: str | None = None
    """where `--save-model` writes the checkpoint (default runs/{run_name}/{exp_name}.pt)"""
    resume: str | None = None
    """checkpoint to continue a run from (envs, RNGs, counters; a Ctrl-C one loses the current iteration)"""
    init_from: str | None = None
    """checkpoint to start a new run from: weights, normalisation, optimizer state (ignored with --resume)"""
    eval_checkpoint: str | None = None
    """path of a checkpoint to evaluate on held-out episodes (its saved seed and env); no training"""
    max_episode_steps: int | None = None
    """episode length cap for the training and evaluation envs (None: the env's default)"""

    # the search
    explorler: bool = True
    """if toggled, wrap the (actor's) optimizer in ExploRLerOptimizer and explore between iterations"""
    explore_every: int = 20
    """iterations per explore cycle (default from benchmarks `tune`; the paper's: 1 for PPO, 10 for TRPO)"""
    explore_start_step: int = 0
    """training env steps (global_step) before which no search runs (1M: pretrain, then explore)"""
    max_anchors: int = 10
    """anchors kept: one per PPO epoch, TRPO iteration or SAC actor step; the last max_anchors are searched"""
    search: Literal["esa", "random-walk", "checkpoint-average", "gaussian", "pbt", "cma-es"] = "esa"
    """how candidates are generated from the anchors (pbt, cma-es: in rounds, steered by scores)"""
    esa_agents: int = 5
    """ESA (and random walk): number of search agents"""
    esa_steps: int = 60
    """ESA (and random walk): steps per agent"""
    esa_step_size: float = 1e-3
    """ESA (and random walk): step size"""
    esa_momentum: float = 0.3
    """ESA: momentum gamma"""
    esa_epsilon: float = 0.5
    """ESA: Lennard-Jones epsilon"""
    esa_neighbors: int = 6
    """ESA: nearest anchors that act on an agent"""
    esa_snapshot_every: int = 60
    """ESA (and random walk): a candidate every this many steps, plus the final position (20: the paper's)"""
    gaussian_candidates: int = 10
    """gaussian search: number of candidates sampled (10: as many as ESA gives with the defaults)"""
    pbt_noise_scale: float = 0.5
    """pbt search: children's noise per coordinate, in units of the anchors' spread"""
    es_popsize: int = 5
    """cma-es search: candidates per round"""
    es_rounds: int = 2
    """cma-es search: rounds, each steered by the last one's scores (5 x 2: ESA's 10 candidates)"""
    selection: Literal["argmax", "tournament", "success-first"] = "argmax"
    """which scored candidate is kept (success-first: highest is_success rate, then return)"""
    tournament_size: int = 3
    """tournament selection: candidates drawn per tournament"""
    fixed_candidate_starts: bool = False
    """score every search's candidates on the same start states (the run's seed: the authors' scoring)"""
    eval_episodes: int = 1
    """deterministic episodes per candidate, same seeds for all candidates of a cycle (3: the paper's)"""
    score_with: Literal["env", "surrogate"] = "env"
    """score candidates by episodes, or with no env steps on the update's own batch (README)"""
    surrogate_max_kl: float = 0.01
    """surrogate scoring: largest mean KL to the batch's policy (widened to the update's own KL)"""
    include_incumbent: bool = True
    """score the current policy too and commit a candidate only if it beats it"""
    reset_state: bool = True
    """after a commit, clear the optimizer's state (Adam's moments) of the explored parameters"""
    count_eval_steps: bool = True
    """count candidate-evaluation env steps toward total_timesteps (off: the paper's accounting)"""
    budget_tolerance: float = 0.01
    """no iteration or search starts that could overrun the budget by more than this fraction (README)"""
    racing: bool = False
    """let the candidate evaluator drop hopeless candidates early (PolicyEvaluator racing)"""
    eval_workers: int = 1
    """worker processes of the candidate evaluator (1: evaluate in this process)"""
    landscape_every: int = 0
    """log the landscape view (anchors, candidates, scores) to TensorBoard every K cycles (0: off)"""

    # Held-out evaluation (the same for baseline and ExploRLer; never counted in the budget)
    eval_every: int = 10
    """iterations between held-out evaluations of the current policy (also one at the end)"""
    heldout_episodes: int = 10
    """deterministic held-out episodes per evaluation (every `eval_every` iterations, at the end)"""


@dataclass
class ResearchArgs(ExploRLerArgs):
    """The research variants' flags on top of :class:`ExploRLerArgs`: what changes the training loop
    or measures it (the benchmarks run the ``*_research.py`` scripts, a user copies the plain ones).

    Example:
        >>> args = ResearchArgs(paper_metric_every=1, score_with="surrogate-next")
        >>> args.paper_metric_every, args.score_with, args.selection_truth_episodes
        (1, 'surrogate-next', 0)
    """

    # a wider choice than the base class's: the plain scripts have no next batch to wait for
    score_with: Literal["env", "surrogate", "surrogate-next"] = "env"  # type: ignore[assignment]
    """score candidates by episodes, or with no env steps on the update's batch or the next one (README)"""
    selection_truth_episodes: int = 0
    """audit each search: every policy also on this many held-out episodes and the paper's 3 (0: off)"""
    paper_metric_every: int = 0
    """iterations between the paper's metric, paper/episodic_return (0: off; see the README)"""


_RESEARCH_DEFAULTS = {f.name: f.default for f in fields(ResearchArgs)}


def research_setting(args: Any, name: str) -> Any:
    """``args.<name>`` for a script with the research flag ``name``, else that flag's default (off).

    The library's helpers serve both kinds of script; a plain script has no research flags, and
    nothing it does depends on them.

    Example:
        >>> research_setting(ExploRLerArgs(), "paper_metric_every")
        0
        >>> research_setting(ResearchArgs(paper_metric_every=5), "paper_metric_every")
        5
    """
    return getattr(args, name, _RESEARCH_DEFAULTS[name])
