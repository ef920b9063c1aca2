"""Selection truth (issue 14, part 1): is there a better policy between the anchors, and do we pick it?

Reads the selection audits that runs with ``--selection-truth-episodes N`` write
(``selection_audit.jsonl``: at every search, each row's selection score, its "true" return over N
held-out episodes, and the paper's 3-episode fixed-start score) and reports per task and training
phase (early / middle / late third of the budget):

- oracle gain: the best candidate's true return minus the incumbent's (what a perfect selector gets);
- realised gain: the committed candidate's true return minus the incumbent's (0 when nothing is
  committed), with the scripts' selection, and with the paper's (argmax of its 3-episode scores,
  always committed);
- how often a commit made the policy truly worse;
- the Spearman rank correlation between selection scores and true returns over a search's rows.

Means with 95% bootstrap intervals over searches (runs of one task are pooled; searches of one run
are not independent, so the intervals are optimistic). Writes ``results.md``, ``results.json`` and
``selection_truth.png`` beside the sweep.

    python -m benchmarks.sweep --protocol selection && python -m benchmarks.selection_truth
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import atomic_write, provenance, pyplot

HERE = Path(__file__).resolve().parent

PHASES = ("early", "middle", "late")
METRICS = (
    ("oracle_gain", "oracle gain"),
    ("realised_gain", "realised gain (scripts' selection)"),
    ("paper_realised_gain", "realised gain (paper's selection)"),
    ("worse", "commits truly worse"),
    ("spearman", "Spearman(selection, truth)"),
    ("paper_spearman", "Spearman(paper's 3 ep., truth)"),
)


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


# The other scorers an audit record may hold (besides the run's own selection): how each would have
# ranked and picked the same candidates. The paper's commits its argmax always, the others only a
# candidate that beats the incumbent's score under the same scorer (the scripts' commit rule).
SCORERS = (
    ("selection", "the run's own selection"),
    ("env", "1 env episode"),
    ("paper", "paper's 3 fixed-start episodes"),
    ("surrogate-clip", "PPO's clipped surrogate"),
    ("surrogate-no-kl", "surrogate, no trust region"),
)


def scorer_metrics(record: dict, name: str) -> dict:
    """How scorer ``name`` ranks a search's rows against the truth, and the gain of its pick."""
    truth = np.asarray(record["truth"], float)
    scores = np.asarray(record[name], float)
    first = 1 if record["incumbent_row"] else 0
    pick = first + int(np.argmax(scores[first:]))
    if name == "selection":
        selected = record.get("selected_row")
    elif name == "paper" or not first:
        selected = pick
    else:
        selected = pick if scores[pick] > scores[0] else None
    incumbent = truth[0] if first else np.nan
    return {
        "spearman": spearman(scores, truth),
        "realised_gain": float(truth[selected] - incumbent) if selected is not None else 0.0,
        "committed": selected is not None,
        "env_steps": record.get(f"{name}_env_steps", np.nan),
    }


def search_metrics(record: dict) -> dict:
    """The metrics of one search from its audit record."""
    truth = np.asarray(record["truth"], float)
    selection = np.asarray(record["selection"], float)
    first = 1 if record["incumbent_row"] else 0
    incumbent = truth[0] if first else np.nan
    candidates = truth[first:]
    selected = record.get("selected_row")
    out = {
        "oracle_gain": float(candidates.max() - incumbent),
        "realised_gain": float(truth[selected] - incumbent) if selected is not None else 0.0,
        "worse": float(truth[selected] < incumbent) if selected is not None else np.nan,
        "spearman": spearman(selection, truth),
        "committed": selected is not None,
    }
    if "paper" in record:
        paper = np.asarray(record["paper"], float)
        pick = first + int(np.argmax(paper[first:]))
        out["paper_realised_gain"] = float(truth[pick] - incumbent)
        out["paper_spearman"] = spearman(paper, truth)
    out["scorers"] = {name: scorer_metrics(record, name) for name, _ in SCORERS if name in record}
    return out


def bootstrap_mean(values, rng, reps: int = 5000) -> tuple[float, float, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], float)
    if len(values) == 0:
        return (np.nan, np.nan, np.nan)
    means = values[rng.integers(0, len(values), (reps, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def load(sweep_dir: Path) -> list[dict]:
    """Every search of every run under ``sweep_dir/runs``, with its task, seed and training phase."""
    rows = []
    for path in sorted(sweep_dir.glob("runs/*/**/selection_audit.jsonl")):
        run = path.relative_to(sweep_dir / "runs").parts[0]
        env, algo, variant, seed = run.split("__")
        records = {}
        for line in path.read_text().splitlines():  # a resumed run may log a search twice: keep the last
            record = json.loads(line)
            records[record.get("cycle", len(records))] = record
        for record in records.values():
            fraction = record["global_step"] / record["total_timesteps"]
            phase = PHASES[min(int(fraction * 3), 2)]
            task = f"{algo.upper()} {env}" + ("" if variant == "audit" else f" {variant}")
            rows.append({"task": task, "seed": int(seed), "phase": phase, **search_metrics(record)})
    return rows


def summarise(rows: list[dict], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["phase"]), []).append(row)
        groups.setdefault((row["task"], "all"), []).append(row)
        groups.setdefault(("all tasks", "all"), []).append(row)
    summary = {}
    phase_order = {phase: i for i, phase in enumerate((*PHASES, "all"))}
    ordered = sorted(
        groups.items(), key=lambda item: (item[0][0] == "all tasks", item[0][0], phase_order[item[0][1]])
    )
    for (task, phase), members in ordered:
        entry = {"searches": len(members), "commits": sum(m["committed"] for m in members)}
        for key, _ in METRICS:
            entry[key] = bootstrap_mean([m.get(key, np.nan) for m in members], rng)
        summary[f"{task} | {phase}"] = entry
    return summary


def summarise_scorers(rows: list[dict], seed: int = 0) -> dict:
    """Per task (all phases) and scorer: Spearman with the truth, realised gain, commit rate, env steps."""
    rng = np.random.default_rng(seed)
    tasks = sorted({row["task"] for row in rows})
    summary = {}
    for task in tasks:
        members = [row for row in rows if row["task"] == task]
        for name, label in SCORERS:
            scored = [m["scorers"][name] for m in members if name in m.get("scorers", {})]
            if not scored:
                continue
            summary[f"{task} | {label}"] = {
                "searches": len(scored),
                "spearman": bootstrap_mean([x["spearman"] for x in scored], rng),
                "realised_gain": bootstrap_mean([x["realised_gain"] for x in scored], rng),
                "commit_rate": float(np.mean([x["committed"] for x in scored])),
                "env_steps": float(np.nanmean([x["env_steps"] for x in scored])),
            }
    return summary


def fmt(triple) -> str:
    mean, low, high = triple
    if not np.isfinite(mean):
        return "-"
    return (
        f"{mean:,.2f} [{low:,.2f}, {high:,.2f}]"
        if abs(mean) < 10
        else f"{mean:,.0f} [{low:,.0f}, {high:,.0f}]"
    )


def write_markdown(summary: dict, out: Path, sources: str, scorers: dict | None = None) -> Path:
    header = "| task | phase | searches | commits | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [
        "# Selection truth",
        "",
        f"Source: {sources}. Means over searches with 95% bootstrap intervals (searches resampled).",
        "Gains are in undiscounted return; the truth is the mean over the held-out episodes.",
        "",
        header,
        "|" + "---|" * (4 + len(METRICS)),
    ]
    for name, entry in summary.items():
        task, phase = name.split(" | ")
        cells = [task, phase, str(entry["searches"]), str(entry["commits"])]
        cells += [fmt(entry[key]) for key, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if scorers:
        lines += [
            "",
            "## Scorers on the same candidates",
            "",
            "Each scorer's rank correlation with the truth over a search's rows, and the true gain of",
            "what it would have committed (the paper's scorer always commits its best; the others only",
            "a candidate scoring above the incumbent). Env steps: per search, never part of the budget.",
            "",
            "| task | scorer | searches | Spearman | realised gain | commit rate | env steps / search |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in scorers.items():
            task, label = name.split(" | ")
            steps = entry["env_steps"]
            lines.append(
                f"| {task} | {label} | {entry['searches']} | {fmt(entry['spearman'])} | "
                f"{fmt(entry['realised_gain'])} | {entry['commit_rate']:.2f} | "
                + ("-" if not np.isfinite(steps) else f"{steps:,.0f}")
                + " |"
            )
    path = out / "results.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def plot(summary: dict, out: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        print("matplotlib is not installed: no plot (pip install 'explorler-optim[viz]')", file=sys.stderr)
        return None
    tasks = sorted({name.split(" | ")[0] for name in summary if not name.startswith("all tasks")})
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(4.2 * len(tasks), 6.4), 3.6), squeeze=False)
    keys = [
        ("oracle_gain", "oracle"),
        ("realised_gain", "realised (scripts)"),
        ("paper_realised_gain", "realised (paper)"),
    ]
    for ax, task in zip(axes[0], tasks, strict=True):
        x = np.arange(len(PHASES))
        for k, (key, label) in enumerate(keys):
            stats = [summary.get(f"{task} | {phase}", {}).get(key, (np.nan,) * 3) for phase in PHASES]
            mean = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1], s[2] - s[0]] for s in stats]).T
            ax.errorbar(x + (k - 1) * 0.15, mean, yerr=err, fmt="o", capsize=3, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, PHASES)
        ax.set_title(task)
        ax.set_ylabel("true return minus the incumbent's")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Is there a better policy between the anchors, and is it the one picked?")
    fig.tight_layout()
    path = out / "selection_truth.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep", nargs="?", type=Path, default=HERE / "results" / "selection")
    args = parser.parse_args(argv)
    rows = load(args.sweep)
    if not rows:
        print(
            f"no selection_audit.jsonl under {args.sweep}/runs: run the `selection` protocol first",
            file=sys.stderr,
        )
        return 1
    summary = summarise(rows)
    scorers = summarise_scorers(rows)
    payload = {"summary": summary, "scorers": scorers, "searches": rows, "provenance": provenance()}
    atomic_write(args.sweep / "results.json", json.dumps(payload, indent=1) + "\n")
    print(write_markdown(summary, args.sweep, f"{len(rows)} searches in {args.sweep.name}/runs", scorers))
    plot(summary, args.sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
