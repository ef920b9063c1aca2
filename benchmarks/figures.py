"""The overview figure: does ExploRLer help? Per-task paired ratios with 95% intervals.

Reads the committed ``results.json`` of ``verdict``, ``replicate-hopper``, ``free-next`` and
``discrete`` (what ``python -m benchmarks.report --protocol NAME`` wrote from each grid's
``evaluations.csv``) and draws one row per task: the variant's progress over a random policy's
return, summed over the seeds both ran, over plain PPO's/TRPO's on the same seeds, at an equal budget
of environment steps (200,704; 800k on LunarLander; candidates' steps counted), with its 95%
bootstrap interval and the seeds it won. Nothing is re-run.

    python -m benchmarks.figures    # writes benchmarks/results/overview/does_it_help.png and sources.json

``sources.json`` records each input file's SHA-256 and the provenance of this command, so the figure
can be traced to the exact committed numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from benchmarks.common import atomic_write, provenance, pyplot

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURE = "does_it_help.png"
# (group title, protocol, variant, tasks as (env, algo); None: every task of the protocol's table)
ROWS = [
    ("ExploRLer, the defaults (verdict, 10 seeds)", "verdict", "explorler", None),
    ("the same PPO Hopper cell on another CPU (replicate-hopper)", "replicate-hopper", "explorler", None),
    ("candidates scored free on the next batch (free-next)", "free-next", "explorler-surrogate-next", None),
    ("discrete actions, 800k steps, the defaults (discrete)", "discrete", "explorler", None),
]
TASK_ORDER = [
    "Hopper-v5/ppo",
    "Walker2d-v5/ppo",
    "HalfCheetah-v5/ppo",
    "Hopper-v5/trpo",
    "LunarLander-v3/ppo-discrete",
]


def rows_of(results: Path = RESULTS) -> tuple[list[dict], dict[str, str]]:
    """The figure's rows (group, label, ratio, interval, wins, pairs, resolved) and each source's SHA-256."""
    rows, sources = [], {}
    for group, protocol, variant, tasks in ROWS:
        path = results / protocol / "results.json"
        data = path.read_bytes()
        sources[path.relative_to(results.parent.parent).as_posix()] = hashlib.sha256(data).hexdigest()
        table = [r for r in json.loads(data)["table"] if r["variant"] == variant]
        if not table:
            raise ValueError(f"{path}: no rows of variant {variant!r}")
        table.sort(key=lambda r: TASK_ORDER.index(f"{r['env']}/{r['algo']}"))
        for r in table:
            if tasks is not None and (r["env"], r["algo"]) not in tasks:
                continue
            rows.append(
                {
                    "group": group,
                    "label": f"{r['algo'].upper()} {r['env']}",
                    "ratio": r["paired_ratio"],
                    "ci": r["paired_ratio_ci"],
                    "wins": r["wins"],
                    "pairs": r["pairs"],
                    "resolved": r["resolved"],
                }
            )
    return rows, sources


def draw(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        raise SystemExit("matplotlib is not installed: pip install -e '.[viz]'")
    colors = {"worse": "#c0392b", "better": "#1e8449", "unresolved": "#34495e"}
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, ax = plt.subplots(figsize=(8.2, 0.42 * (len(rows) + len(groups)) + 1.4))
    y, ticks, labels = 0.0, [], []
    for group in groups:
        ax.text(0.405, y, group, fontsize=9, fontweight="bold", va="center")
        y -= 1
        for r in (r for r in rows if r["group"] == group):
            low, high = r["ci"]
            color = colors[r["resolved"]]
            ax.errorbar(r["ratio"], y, xerr=[[r["ratio"] - low], [high - r["ratio"]]], fmt="o",
                        color=color, capsize=3, ms=5)  # fmt: skip
            verdict = {"worse": "worse", "better": "better"}.get(r["resolved"], "not resolved")
            ax.text(1.72, y, f"{r['ratio']:.2f}x  {r['wins']}/{r['pairs']} wins  {verdict}", fontsize=8,
                    va="center", color=color)  # fmt: skip
            ticks.append(y)
            labels.append(r["label"])
            y -= 1
    ax.axvline(1.0, color="gray", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(0.4, 1.7)
    ax.set_xticks([0.5, 0.75, 1.0, 1.25, 1.5])
    ax.set_xticklabels(["0.5x", "0.75x", "1x", "1.25x", "1.5x"])
    ax.minorticks_off()
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(y + 0.3, 0.7)
    ax.set_xlabel(
        "final return's progress over a random policy: ExploRLer / plain, same seeds (95% CI)\n"
        "left of 1x: plain PPO/TRPO did better; right: ExploRLer did",
        fontsize=9,
    )
    ax.set_title(
        "Does ExploRLer help? At equal env steps (candidates' counted): no task is better",
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.subplots_adjust(right=0.72)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "overview", help="output folder")
    args = parser.parse_args(argv)
    rows, sources = rows_of()
    args.out.mkdir(parents=True, exist_ok=True)
    draw(rows, args.out / FIGURE)
    meta = {"figure": FIGURE, "rows": rows, "sources_sha256": sources, "provenance": provenance()}
    atomic_write(args.out / "sources.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out / FIGURE} from {', '.join(sources)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
