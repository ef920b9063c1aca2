"""Draw the return landscape around a saved policy: ``python -m explorler_optim.landscape CHECKPOINT``.

Loads a checkpoint written by ``single_file_baselines/ppo_continuous_action.py`` or
``trpo_continuous_action.py`` (``--save-model``), takes the anchors it holds (those of the cycle in
progress, or those of the last search when the checkpoint was written right after one), lays a
``grid x grid`` lattice over the anchors' 2-D principal plane, scores every lattice point in the
environment with :class:`~explorler_optim.rl.PolicyEvaluator` (deterministic actions, the
checkpoint's frozen observation statistics, the same reset seeds for every point), and writes a PNG:
the paper's Figure 1 for your own policy. The best lattice point is marked, and the title says
whether the scores' range exceeds their noise (from the spread over episodes). Anchors that span
only a line (two anchors, e.g. TRPO with ``--max-anchors 2``) give a plot of score against position
on ``3 x grid`` points of that line instead of a plane.

Example::

    python -m explorler_optim.landscape \\
        runs/Hopper-v5__ppo_continuous_action__1__1700000000/ppo_continuous_action.pt \\
        --grid 15 --episodes 3 --out landscape.png

(``runs/{run_name}/{exp_name}.pt``, where ``--save-model`` writes, or ``--checkpoint-path``.)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .extras import install_hint
from .params import flatten_params, split_flat
from .subspace import AnchorSubspace
from .viz import landscape_figure, landscape_line_figure, principal_plane, require_matplotlib, save_figure


def actor_from_state_dict(agent_state: dict[str, torch.Tensor], prefix: str = "actor_mean.") -> nn.Sequential:
    """Rebuild the scripts' deterministic actor (Linear layers with Tanh between) from a state dict."""
    indices = sorted(
        {
            int(m.group(1))
            for key in agent_state
            if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", key))
        }
    )
    if not indices:
        raise ValueError(
            f"the checkpoint's agent has no '{prefix}<i>.weight' entries; is it from our scripts?"
        )
    layers: list[nn.Module] = []
    for position, index in enumerate(indices):
        weight = agent_state[f"{prefix}{index}.weight"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(agent_state[f"{prefix}{index}.bias"])
        layers.append(linear)
        if position < len(indices) - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def anchors_from_checkpoint(checkpoint: dict) -> torch.Tensor:
    """The ``(n, P)`` anchors a checkpoint holds (current cycle first, else the last search's)."""
    explorer = checkpoint.get("optimizer", {}).get("explorler")
    if explorer is not None and explorer.get("deltas") is not None and explorer["deltas"].shape[0] >= 2:
        return explorer["origin"].double() + explorer["deltas"].double()
    last = checkpoint.get("last_cycle_anchors")
    if last is not None and last.shape[0] >= 2:
        return last.double()
    raise ValueError(
        "the checkpoint holds fewer than 2 anchors: it was saved without ExploRLer (--no-explorler) or "
        "before any cycle; train with ExploRLer and --save-model for at least one iteration"
    )


def main(argv: list[str] | None = None) -> Path:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.grid < 2:
        parser.error("--grid must be at least 2")
    # every dependency is checked before the rollouts, which can take minutes
    require_matplotlib()
    try:
        import gymnasium  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"the landscape command needs {error.name} to run the episodes: {install_hint('scripts')}"
        ) from error

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    saved_args = checkpoint.get("args", {})
    env_id = args.env_id or saved_args.get("env_id")
    if env_id is None:
        parser.error("the checkpoint does not name its environment; pass --env-id")
    actor = actor_from_state_dict(checkpoint["agent"])
    lattice = _Lattice.around(checkpoint, actor, args.grid, args.margin)
    scores, returns, env_steps = _score(
        actor,
        checkpoint,
        lattice,
        env_id,
        args.max_episode_steps or saved_args.get("max_episode_steps"),
        args,
    )
    num_lattice = lattice.num_points
    lattice_scores = scores[:num_lattice]
    anchor_scores = scores[num_lattice : num_lattice + lattice.num_anchors]
    incumbent_score = float(scores[-1])
    # the noise: standard errors of each point's mean over its episodes (same seeds at every point)
    errors = returns[:num_lattice].std(axis=1, ddof=1) / np.sqrt(args.episodes) if args.episodes > 1 else None
    note = noise_note(lattice_scores, errors)
    figure = _draw(lattice, lattice_scores, anchor_scores, incumbent_score, errors, note, env_id, args)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".landscape.png")
    save_figure(figure, str(out))
    best = float(np.nanmax(lattice_scores)) if np.isfinite(lattice_scores).any() else float("nan")
    shape = (
        f"{num_lattice} points on the anchors' line" if lattice.on_a_line else f"{num_lattice} lattice points"
    )
    if lattice.on_a_line:
        note = f"{lattice.num_anchors} anchors span a line, not a plane: scores along it\n{note}"
    print(
        f"wrote {out}: {shape} + {lattice.num_anchors} anchors + the policy, {env_steps:,} env steps; "
        f"policy {incumbent_score:.1f}, best anchor {anchor_scores.max():.1f}, "
        f"best lattice point {best:.1f}; " + note.replace("\n", "; ")
    )
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explorler_optim.landscape",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a checkpoint written by a script's --save-model")
    parser.add_argument("--env-id", default=None, help="environment (default: the checkpoint's)")
    parser.add_argument(
        "--grid",
        type=int,
        default=15,
        help="lattice points per side (3x as many on a line when the anchors span one)",
    )
    parser.add_argument("--episodes", type=int, default=3, help="deterministic episodes per point")
    parser.add_argument(
        "--margin", type=float, default=0.25, help="padding around the anchors, as a fraction"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="reset seed of episode 0 (episode k uses seed + k)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for the rollouts")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="cap on episode length")
    parser.add_argument("--batch", type=int, default=32, help="lattice points scored per evaluator call")
    parser.add_argument("--out", default=None, help="PNG path (default: next to the checkpoint)")
    return parser


@dataclass
class _Lattice:
    """Where the landscape is scored: a lattice over the anchors' principal plane (or line).

    ``points`` holds, in the anchors' subspace, the lattice, then the anchors, then the incumbent.
    """

    subspace: AnchorSubspace
    actor_params: list[nn.Parameter]
    center: np.ndarray
    basis: np.ndarray  # (r, 1 or 2): the plane's (or line's) directions
    on_a_line: bool
    xs: np.ndarray
    ys: np.ndarray | None
    anchors_2d: np.ndarray
    incumbent_coords: torch.Tensor
    incumbent_2d: np.ndarray
    points: torch.Tensor
    num_points: int  # lattice points (the first rows of `points`)
    num_anchors: int

    @classmethod
    def around(cls, checkpoint: dict, actor: nn.Module, grid: int, margin: float) -> _Lattice:
        anchors = anchors_from_checkpoint(checkpoint)
        shapes = [tuple(shape) for shape in checkpoint["optimizer"]["explorler"]["shapes"]]
        actor_params = list(actor.parameters())
        actor_shapes = [tuple(p.shape) for p in actor_params]
        if actor_shapes != shapes[: len(actor_params)]:
            raise ValueError(f"the explored parameters {shapes} do not start with the actor's {actor_shapes}")
        subspace = AnchorSubspace(anchors)
        coords = subspace.coords.numpy()
        center, basis = principal_plane(coords)
        spread = np.linalg.svd(coords - center, compute_uv=False)
        on_a_line = spread.shape[0] < 2 or spread[1] <= 1e-9 * max(spread[0], 1e-300)
        basis = basis[:, : 1 if on_a_line else 2]
        anchors_2d = (coords - center) @ basis
        current = flatten_params(actor_params, dtype=torch.float64)
        rest = anchors[-1, current.numel() :]
        log_std = checkpoint["agent"].get("actor_logstd")
        if log_std is not None and log_std.numel() == rest.numel():
            rest = log_std.reshape(-1).double()
        incumbent_coords, _ = subspace.project(torch.cat([current, rest]))
        incumbent_2d = (incumbent_coords.numpy() - center) @ basis
        extent = np.vstack([anchors_2d, incumbent_2d])
        # A square window: the landscape off the anchors' main direction matters as much as along it,
        # and equal scales keep distances honest.
        middle = (extent.min(0) + extent.max(0)) / 2
        half = (1 + 2 * margin) * max(float((extent.max(0) - extent.min(0)).max()), 1e-8) / 2
        low, high = middle - half, middle + half
        ys = None
        if on_a_line:
            xs = np.linspace(low[0], high[0], 3 * grid)
            plane_points = xs[:, None]
        else:
            xs, ys = np.linspace(low[0], high[0], grid), np.linspace(low[1], high[1], grid)
            plane_points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        lattice = torch.from_numpy(center + plane_points @ basis.T)
        return cls(
            subspace=subspace,
            actor_params=actor_params,
            center=center,
            basis=basis,
            on_a_line=on_a_line,
            xs=xs,
            ys=ys,
            anchors_2d=anchors_2d,
            incumbent_coords=incumbent_coords,
            incumbent_2d=incumbent_2d,
            points=torch.cat([lattice, subspace.coords, incumbent_coords[None]]),
            num_points=plane_points.shape[0],
            num_anchors=anchors.shape[0],
        )


def _score(
    actor: nn.Module,
    checkpoint: dict,
    lattice: _Lattice,
    env_id: str,
    max_episode_steps: int | None,
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Every point's mean return, its per-episode returns, and the env steps used."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    from .rl import ObsNormalizer, PolicyEvaluator

    def make_env():
        env = gym.make(env_id, max_episode_steps=max_episode_steps) if max_episode_steps else gym.make(env_id)
        return gym.wrappers.FlattenObservation(env)

    obs_stats = checkpoint["obs_rms"][0]
    evaluator = PolicyEvaluator(
        actor,
        make_env,
        episodes=args.episodes,
        obs_normalizer=ObsNormalizer(obs_stats["mean"].numpy(), obs_stats["var"].numpy()),
        seed=args.seed,
        workers=args.workers,
    )
    points, params = lattice.points, lattice.actor_params
    scores, episode_returns = [], []
    try:
        for start in tqdm(range(0, points.shape[0], args.batch), desc="scoring the lattice", unit="batch"):
            flat = lattice.subspace.lift(points[start : start + args.batch], dtype=torch.float32)
            pieces = split_flat(flat, [p.shape for p in params])
            scores.append(torch.as_tensor(evaluator.evaluate_many(params, pieces), dtype=torch.float64))
            episode_returns.append(torch.as_tensor(evaluator.last_returns, dtype=torch.float64))
        env_steps = evaluator.total_env_steps
    finally:
        evaluator.close()
    return torch.cat(scores).numpy(), torch.cat(episode_returns).numpy(), env_steps


def _draw(
    lattice: _Lattice,
    lattice_scores: np.ndarray,
    anchor_scores: np.ndarray,
    incumbent_score: float,
    errors: np.ndarray | None,
    note: str,
    env_id: str,
    args: argparse.Namespace,
) -> Any:
    episodes = f"{args.episodes} episode{'s' if args.episodes != 1 else ''} per point"
    if lattice.on_a_line:
        return landscape_line_figure(
            lattice.xs,
            lattice_scores,
            anchor_positions=lattice.anchors_2d[:, 0],
            anchor_scores=anchor_scores,
            incumbent_position=float(lattice.incumbent_2d[0]),
            incumbent_score=incumbent_score,
            standard_errors=errors,
            title=f"{env_id}: returns on the anchors' line ({lattice.num_points} points, {episodes})",
            note=f"{lattice.num_anchors} anchors span a line, not a plane: scores along it\n{note}",
            incumbent_label="checkpoint's policy",
        )
    assert lattice.ys is not None
    return landscape_figure(
        lattice.subspace.coords,
        np.zeros((0, lattice.subspace.coords.shape[1])),
        np.zeros(0),
        incumbent_coords=lattice.incumbent_coords,
        incumbent_score=incumbent_score,
        grid=(lattice.xs, lattice.ys, lattice_scores.reshape(args.grid, args.grid)),
        anchor_scores=anchor_scores,
        incumbent_label="checkpoint's policy",
        title=f"{env_id}: returns on the anchors' plane ({args.grid}x{args.grid} grid, {episodes})",
        note=note,
    )


def noise_note(scores: np.ndarray, standard_errors: np.ndarray | None) -> str:
    """One line on whether the scores' range says anything: compared with the noise of a difference.

    Two points differ beyond noise when their gap exceeds 2 standard errors of a difference, about
    2.8 times a point's standard error; ``standard_errors`` is ``None`` with one episode per point.
    """
    finite = np.isfinite(scores)
    if not finite.any():
        return "no point has a finite score: nothing to show"
    spread = float(scores[finite].max() - scores[finite].min())
    if standard_errors is None:
        return f"score range {spread:.3g}; 1 episode per point, so its noise is unknown (use --episodes 3)"
    threshold = 2 * np.sqrt(2) * float(np.median(standard_errors[finite]))
    if spread <= threshold:
        return (
            f"score range {spread:.3g} is within the noise ({threshold:.3g}): no point is shown to be better"
        )
    return f"score range {spread:.3g} exceeds the noise of a difference ({threshold:.3g})"


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ImportError as error:  # a missing optional dependency: the message names the install
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print("interrupted: no PNG written", file=sys.stderr)
        raise SystemExit(130) from None
