"""Report of a benchmark sweep: tables, aggregate statistics with confidence intervals, plots.

Reads ``<results>/evaluations.csv`` (written by ``benchmarks/sweep.py``; one row per honest
evaluation) and writes, in the same folder:

- ``results.md`` / ``results.json`` (via ``benchmarks/common.write_results``, with provenance):
  a table per env and algorithm (final honest return mean +- std over seeds, ratio to the
  baseline, training and total env steps, wall-clock ratio to the baseline) and the aggregate:
  IQM of baseline-normalised final scores with 95% stratified-bootstrap confidence intervals and
  the probability of improvement over the baseline (rliable's definitions, computed with numpy);
- ``return_vs_training_steps.png``, ``return_vs_total_env_steps.png`` (mean and 95% CI band over
  seeds per variant, one panel per env x algorithm), ``wall_clock_per_step.png`` and
  ``aggregate.png``.

The final score of a run is the mean of its last 3 honest evaluations (``--last-k``). A run's
baseline-normalised score is ``(score - random) / (baseline - random)`` where ``baseline`` is the
mean final score of the baseline's seeds on the same env and algorithm and ``random`` is a
random policy's return on the env (``RANDOM_SCORES``; 0 for unknown envs, or with
``--no-random-anchor``): 1 means "as good as the baseline", 2 "twice the baseline's progress over
random". Wall-clock is the training time (``train_seconds``: the scripts' SPS excludes honest
evaluation, includes candidate search).

    python -m benchmarks.report --protocol small
    python -m benchmarks.report --csv path/to/evaluations.csv --out path/to/folder
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.common import pyplot, write_results
from benchmarks.protocols import PROTOCOLS

HERE = Path(__file__).resolve().parent

BASELINE = "baseline"
# Mean return of a uniformly random policy (D4RL's reference minimum scores for the v2 tasks; the
# v5 tasks share their dynamics and rewards closely enough for an anchor).
RANDOM_SCORES = {
    "Hopper": -20.272305,
    "Walker2d": 1.629008,
    "HalfCheetah": -280.178953,
    "Ant": -325.6,
    "Humanoid": 122.0,
    # measured: `python -m benchmarks.random_scores BipedalWalker-v3 --episodes 100` (2026-12-07):
    # -102.8 +- 1.5
    "BipedalWalker": -102.8,
    # measured: `python -m benchmarks.random_scores LunarLander-v3 --episodes 1000` (2026-12-08):
    # -181.7 +- 3.5
    "LunarLander": -181.7,
}
VARIANT_ORDER = (
    "baseline",
    "explorler",
    "explorler-paper",
    "explorler-paper-full",
    "racing",
    "one-episode",
    "lean",
    "random-walk",
    "checkpoint-average",
    "gaussian",
    "no-incumbent",
    "sb3",
    "sb3-explorler",
    "sb3-explorler-paper",
    "audit",
)


# ---------------------------------------------------------------------------------------------
# statistics (numpy only; definitions follow rliable: Agarwal et al., NeurIPS 2021)


def iqm(scores, axis=None):
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25))."""
    x = np.asarray(scores, dtype=float)
    if axis is None:
        x, axis = x.ravel(), -1
    x = np.sort(x, axis=axis)
    n = x.shape[axis]
    cut = int(0.25 * n)
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap(tasks, statistic, reps=10_000, rng=None):
    """Bootstrap replicates of ``statistic(pooled)``: resample runs with replacement per task.

    ``tasks``: list of 1-d arrays (the runs' scores of each task); ``statistic`` maps an array
    (reps, total_runs) to (reps,). Returns the (reps,) replicates.
    """
    rng = np.random.default_rng(rng)
    parts = []
    for scores in tasks:
        scores = np.asarray(scores, dtype=float)
        idx = rng.integers(0, len(scores), size=(reps, len(scores)))
        parts.append(scores[idx])
    return statistic(np.concatenate(parts, axis=1))


def iqm_ci(tasks, reps=10_000, confidence=0.95, rng=None):
    """(IQM, low, high): point estimate and percentile stratified-bootstrap CI."""
    point = float(iqm(np.concatenate([np.asarray(t, dtype=float) for t in tasks])))
    reps_ = stratified_bootstrap(tasks, lambda x: iqm(x, axis=1), reps, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps_, [alpha, 1 - alpha])
    return point, float(low), float(high)


def prob_improvement(x, y):
    """P(X > Y) for one task: the Mann-Whitney statistic over all run pairs (ties count 1/2)."""
    x = np.asarray(x, dtype=float)[..., :, None]
    y = np.asarray(y, dtype=float)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-1, -2))


def prob_improvement_ci(x_tasks, y_tasks, reps=10_000, confidence=0.95, rng=None):
    """Average over tasks of P(X > Y), with a stratified-bootstrap CI (X and Y resampled apart)."""
    rng = np.random.default_rng(rng)
    point = float(np.mean([prob_improvement(x, y) for x, y in zip(x_tasks, y_tasks, strict=True)]))
    per_task = []
    for x, y in zip(x_tasks, y_tasks, strict=True):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        xb = x[rng.integers(0, len(x), size=(reps, len(x)))]
        yb = y[rng.integers(0, len(y), size=(reps, len(y)))]
        per_task.append(prob_improvement(xb, yb))
    reps_ = np.mean(per_task, axis=0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps_, [alpha, 1 - alpha])
    return point, float(low), float(high)


def random_score(env: str, anchor: bool = True) -> float:
    if not anchor:
        return 0.0
    return RANDOM_SCORES.get(env.split("-")[0], 0.0)


def normalise(scores, baseline_scores, low=0.0):
    """(score - low) / (mean(baseline) - low): the baseline's mean maps to 1, ``low`` to 0."""
    denominator = float(np.mean(baseline_scores)) - low
    if denominator <= 0:
        return np.full(np.shape(scores), np.nan)
    return (np.asarray(scores, dtype=float) - low) / denominator


# small-sample confidence band: mean +- t(0.975, n-1) * s / sqrt(n)
_T975 = tuple(
    float(t)
    for t in "12.706 4.303 3.182 2.776 2.571 2.447 2.365 2.306 2.262 2.228 2.201 2.179 2.160 2.145"
    " 2.131 2.120 2.110 2.101 2.093 2.086 2.080 2.074 2.069 2.064 2.060 2.056 2.052 2.048 2.045"
    " 2.042".split()
)


def t975(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


# ---------------------------------------------------------------------------------------------
# data


def load_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            rows.append(
                {
                    "env": row["env"],
                    "algo": row["algo"],
                    "variant": row["variant"],
                    "seed": int(row["seed"]),
                    "eval_index": int(row["eval_index"]),
                    "training_steps": int(row["training_steps"]),
                    "total_env_steps": int(row["total_env_steps"]),
                    "return": float(row["return"]),
                    "wall_seconds": float(row["wall_seconds"] or "nan"),
                    "train_seconds": float(row["train_seconds"] or "nan"),
                    "physics": row.get("physics") or "unrecorded",
                }
            )
    return rows


def runs_of(rows) -> dict:
    """{(env, algo, variant): {seed: [rows sorted by eval_index]}}"""
    runs: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        runs[(row["env"], row["algo"], row["variant"])][row["seed"]].append(row)
    for cell in runs.values():
        for seed in cell:
            cell[seed].sort(key=lambda r: r["eval_index"])
    return runs


def final_score(points, last_k=3) -> float:
    """Mean honest return of the last ``last_k`` evaluations of one run."""
    return float(np.mean([p["return"] for p in points[-last_k:]]))


def paper_final_score(points, last_k=None) -> float:
    """The paper's metric at the end of a run: the mean of its last 10% of points (at least one).

    A run logs the metric at every search (ExploRLer) or at the points where the paper's schedule
    searches (plain runs), so runs have different numbers of points: a fraction, not a count.
    """
    keep = max(1, round(0.1 * len(points)))
    return float(np.mean([p["return"] for p in points[-keep:]]))


def load_paper_rows(path: Path) -> list[dict]:
    """``paper_metric.csv`` (written by the sweep) as rows shaped like ``load_rows``'s.

    The paper indexes its curves by training steps (candidate steps uncounted), so that is also
    the rows' ``total_env_steps``.
    """
    rows = []
    with open(path, newline="") as file:
        for index, row in enumerate(csv.DictReader(file)):
            steps = int(row["training_steps"])
            rows.append(
                {
                    "env": row["env"],
                    "algo": row["algo"],
                    "variant": row["variant"],
                    "seed": int(row["seed"]),
                    "eval_index": index,
                    "training_steps": steps,
                    "total_env_steps": steps,
                    "return": float(row["return"]),
                    "wall_seconds": float("nan"),
                    "train_seconds": float("nan"),
                }
            )
    return rows


def run_cost(points) -> float:
    """Training wall seconds of a run (falls back to wall seconds)."""
    last = points[-1]
    return last["train_seconds"] if not math.isnan(last["train_seconds"]) else last["wall_seconds"]


def order(variants):
    known = [v for v in VARIANT_ORDER if v in variants]
    return known + sorted(v for v in variants if v not in VARIANT_ORDER)


def task_verdict(paired, low, scores, base_scores, reps, rng) -> dict:
    """One task's paired verdict over seeds run by both the variant and the baseline.

    ``paired`` holds ``(variant score, baseline score)`` per seed; progress is a score minus the
    random policy's ``low``. The verdict's ratio is the ratio of mean progress, sum(variant) /
    sum(baseline), with a 95% bootstrap interval that resamples seeds (pairs kept together):
    "better" or "worse" when that interval excludes 1. The mean of the per-seed ratios is given
    beside it; it is not the verdict's because one seed whose baseline barely left the random
    policy's score (HalfCheetah) can make it any size.
    """
    pairs = [(v - low, b - low) for v, b in paired if b != low]
    if len(pairs) < 2 or not base_scores:
        return {}
    generator = np.random.default_rng(rng)
    progress = np.asarray(pairs, float)  # (seeds, 2): the variant's and the baseline's
    picks = generator.integers(0, len(progress), (reps, len(progress)))
    totals = progress[picks].sum(1)  # (reps, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        resampled = np.where(totals[:, 1] > 0, totals[:, 0] / totals[:, 1], np.nan)
    low_ci, high_ci = (float(x) for x in np.nanpercentile(resampled, [2.5, 97.5]))
    ratio = float(progress[:, 0].sum() / progress[:, 1].sum())
    per_seed = progress[:, 0] / progress[:, 1]
    per_seed_means = per_seed[picks].mean(1)
    resolved = "better" if low_ci > 1 else "worse" if high_ci < 1 else "unresolved"
    point, iqm_low, iqm_high = iqm_ci([normalise(scores, base_scores, low)], reps, rng=generator)
    p, p_low, p_high = prob_improvement_ci([scores], [np.asarray(base_scores)], reps, rng=generator)
    return {
        "paired_ratio": ratio,
        "paired_ratio_ci": [low_ci, high_ci],
        "paired_ratio_mean": float(per_seed.mean()),
        "paired_ratio_mean_ci": [float(x) for x in np.percentile(per_seed_means, [2.5, 97.5])],
        "resolved": resolved,
        "task_iqm": point,
        "task_iqm_ci": [iqm_low, iqm_high],
        "task_prob_improvement": p,
        "task_prob_improvement_ci": [p_low, p_high],
    }


def verdict_table(summary) -> list[str]:
    """Per task and variant: the paired per-seed ratio with its interval, wins, IQM and P(better)."""
    rows = [r for r in summary["table"] if r["variant"] != summary["baseline"] and "resolved" in r]
    if not rows:
        return []
    lines = [
        "| task | variant | seeds (pairs) | paired ratio [95% CI] | resolved | wins | "
        "mean per-seed ratio [95% CI] | IQM normalised [95% CI] | P(better) [95% CI] | physics |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    setups = sorted({s for r in summary["table"] for s in r.get("physics", [])})
    for r in rows:
        physics = "one setup" if len(r["physics"]) == 1 else f"MIXED: {len(r['physics'])} setups"
        lines.append(
            f"| {r['algo'].upper()} {r['env']} | {r['variant']} | {r['seeds']} ({r['pairs']}) | "
            f"{_with_ci(r['paired_ratio'], r['paired_ratio_ci'])} | {r['resolved']} | "
            f"{r['wins']}/{r['pairs']} | {_with_ci(r['paired_ratio_mean'], r['paired_ratio_mean_ci'])} | "
            f"{_with_ci(r['task_iqm'], r['task_iqm_ci'])} | "
            f"{_with_ci(r['task_prob_improvement'], r['task_prob_improvement_ci'])} | {physics} |"
        )
    lines += [
        "",
        "Paired ratio: the variant's progress over a random policy's return (final score minus the",
        "random score), summed over the seeds both ran, over the baseline's on the same seeds; the",
        "interval resamples seeds, pairs kept together. Resolved: that interval excludes 1. Wins: seeds",
        "on which the variant scored higher. Mean per-seed ratio: each seed's progress ratio, averaged",
        "(not the verdict's: a seed whose baseline barely beat the random policy can make it any",
        "size). IQM normalised: the variant's scores over the baseline's mean progress; the baseline's",
        "own IQM is below 1 where its seeds are spread. Physics and numerics setups "
        "of these runs: " + "; ".join(f"`{s}`" for s in setups) + ".",
    ]
    if len(setups) > 1:
        lines.append(
            "**The runs were made under more than one setup: rows marked MIXED compare runs whose "
            "simulator, numerics or CPU differ.**"
        )
    return [*lines, ""]


def summarise(rows, last_k=3, reps=10_000, anchor=True, rng=0, baseline=BASELINE, final=final_score):
    """Per-task table and aggregate statistics of every variant against ``baseline``.

    ``final(points, last_k)`` is a run's final score (default: its last ``last_k`` evaluations).
    """
    runs = runs_of(rows)
    tasks = sorted({(env, algo) for env, algo, _ in runs})
    variants = order({v for _, _, v in runs})
    table = []
    normalised: dict = defaultdict(dict)  # variant -> task -> normalised scores
    finals: dict = defaultdict(dict)  # variant -> task -> raw final scores
    cost_ratio: dict = defaultdict(list)  # variant -> per-run wall ratio to the baseline
    base_on_seeds: dict = defaultdict(dict)  # variant -> task -> the baseline's normalised scores
    for env, algo in tasks:
        base = runs.get((env, algo, baseline), {})
        base_scores = [final(p, last_k) for p in base.values()]
        base_cost = float(np.mean([run_cost(p) for p in base.values()])) if base else float("nan")
        low = random_score(env, anchor)
        for variant in variants:
            cell = runs.get((env, algo, variant))
            if not cell:
                continue
            scores = np.array([final(p, last_k) for p in cell.values()])
            costs = np.array([run_cost(p) for p in cell.values()])
            mean = float(scores.mean())
            std = float(scores.std(ddof=1)) if len(scores) > 1 else float("nan")
            base_mean = float(np.mean(base_scores)) if base_scores else float("nan")
            finals[variant][(env, algo)] = scores
            if base_scores:
                normalised[variant][(env, algo)] = normalise(scores, base_scores, low)
                same_seeds = [final(base[seed], last_k) for seed in cell if seed in base]
                base_on_seeds[variant][(env, algo)] = normalise(same_seeds, base_scores, low)
                cost_ratio[variant] += list(costs / base_cost)
            # the same seed of both: the scripts share the seed's env starts and initial weights
            paired = [(final(cell[seed], last_k), final(base[seed], last_k)) for seed in cell if seed in base]
            ratios = [v / b for v, b in paired if b != 0]
            # the verdict counts progress over a random policy, as the normalised scores do, so a
            # baseline near 0 (HalfCheetah early on) does not flip its sign
            verdict = task_verdict(paired, low, scores, base_scores, reps, rng)
            setups = {p[0].get("physics", "unrecorded") for p in (*cell.values(), *base.values())}
            table.append(
                {
                    "env": env,
                    "algo": algo,
                    "variant": variant,
                    "seeds": len(scores),
                    "final_mean": mean,
                    "final_std": std,
                    "ratio_to_baseline": mean / base_mean if base_scores else float("nan"),
                    "normalised_mean": float(np.mean(normalised[variant][(env, algo)]))
                    if base_scores
                    else float("nan"),
                    "training_steps": float(np.mean([p[-1]["training_steps"] for p in cell.values()])),
                    "total_env_steps": float(np.mean([p[-1]["total_env_steps"] for p in cell.values()])),
                    "train_seconds": float(costs.mean()),
                    "wall_ratio_to_baseline": float(costs.mean()) / base_cost
                    if base_scores
                    else float("nan"),
                    "pairs": len(paired),
                    "wins": sum(v > b for v, b in paired),
                    "paired_median_ratio": float(np.median(ratios)) if ratios else float("nan"),
                    **verdict,
                    "physics": sorted(setups),
                }
            )
    aggregate = []
    for i, variant in enumerate(variants):
        per_task = normalised.get(variant, {})
        common = [t for t in tasks if t in per_task and np.all(np.isfinite(per_task[t]))]
        if not common:
            continue
        point, low, high = iqm_ci([per_task[t] for t in common], reps, rng=rng + i)
        entry = {
            "variant": variant,
            "tasks": len(common),
            "runs": int(sum(len(per_task[t]) for t in common)),
            "iqm": point,
            "iqm_ci": [low, high],
            "wall_ratio_iqm": float(iqm(cost_ratio[variant])) if cost_ratio[variant] else None,
        }
        # the baseline's own IQM on the same tasks and seeds: below 1 where its seeds spread
        base_runs = [base_on_seeds[variant][t] for t in common if len(base_on_seeds[variant][t])]
        if len(base_runs) == len(common):
            entry["baseline_iqm"] = float(iqm(np.concatenate(base_runs)))
        if variant != baseline:
            pairs = [t for t in common if t in finals.get(baseline, {})]
            if pairs:
                p, pl, ph = prob_improvement_ci(
                    [finals[variant][t] for t in pairs],
                    [finals[baseline][t] for t in pairs],
                    reps,
                    rng=rng + 100 + i,
                )
                entry.update(prob_improvement=p, prob_improvement_ci=[pl, ph])
        aggregate.append(entry)
    return {
        "baseline": baseline,
        "tasks": [list(t) for t in tasks],
        "variants": variants,
        "table": table,
        "aggregate": aggregate,
        "last_k": last_k,
        "bootstrap_reps": reps,
        "random_anchor": anchor,
    }


# ---------------------------------------------------------------------------------------------
# markdown


def _f(x, digits=1):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _with_ci(value, ci) -> str:
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def compact_table(summary) -> list[str]:
    """One row per task, one column per variant: the table the README shows (no retyping)."""
    variants = summary["variants"]
    cells = {(r["env"], r["algo"], r["variant"]): r for r in summary["table"]}
    lines = [
        "| " + " | ".join(["task", *variants]) + " |",
        "|---" + "|---:" * len(variants) + "|",
    ]
    for env, algo in summary["tasks"]:
        base = cells.get((env, algo, summary["baseline"]))
        row = [f"{algo.upper()} {env}"]
        for v in variants:
            r = cells.get((env, algo, v))
            if r is None:
                row.append("-")
                continue
            text = f"{r['final_mean']:,.0f} +- {r['final_std']:,.0f}"
            if v != summary["baseline"]:
                text += f" ({r['ratio_to_baseline']:.2f}x)"
            if base is not None and r["total_env_steps"] > 1.05 * base["total_env_steps"]:
                text += f", {r['total_env_steps'] / base['total_env_steps']:.1f}x env steps"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    agg = {a["variant"]: a for a in summary["aggregate"]}
    if agg:
        iqm_row, pi_row = ["IQM normalised [95% CI]"], ["P(better than baseline) [95% CI]"]
        for v in variants:
            a = agg.get(v, {})
            iqm_row.append(_with_ci(a["iqm"], a["iqm_ci"]) if "iqm" in a else "-")
            pi_row.append(
                _with_ci(a["prob_improvement"], a["prob_improvement_ci"]) if "prob_improvement" in a else "-"
            )
        lines += ["| " + " | ".join(iqm_row) + " |", "| " + " | ".join(pi_row) + " |"]
    return lines


def sweep_lines(sweep: dict | None) -> list[str]:
    """How long the sweep's runs took against the protocol's budget, and how fast the machine was."""
    if not sweep:
        return []
    runs = sweep.get("runs", {})
    text = f"Sweep: {sum(v == 'done' for v in runs.values())}/{len(runs)} runs done"
    span = sweep.get("wall_span_seconds")
    if span is not None:
        text += f", {span / 60:.1f} minutes from the first start to the last end"
        if sweep.get("budget_minutes"):
            verdict = "within" if span <= 60 * sweep["budget_minutes"] else "over"
            text += f" ({verdict} the protocol's {sweep['budget_minutes']:.0f}-minute budget)"
    if sweep.get("run_seconds_total") is not None:
        text += f"; the runs add up to {sweep['run_seconds_total'] / 60:.1f} minutes of one core"
    speed = sweep.get("machine_speed")
    if speed:
        text += f"; machine speed {speed['steps_per_second']:,.0f} raw {speed['env_id']} steps/s"
    prov = sweep.get("provenance", {})
    machine = prov.get("machine", {})
    if machine:
        text += f"; {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    if prov.get("date"):
        text += f"; run from commit {prov.get('git_commit', '?')} on {prov['date'][:10]}"
    return [text + ".", ""]


def markdown(summary, title, sweep: dict | None = None, paper: dict | None = None) -> str:
    lines = [f"# {title}", ""]
    lines += ["## Summary", "", *compact_table(summary), "", *sweep_lines(sweep)]
    verdicts = verdict_table(summary)
    if verdicts:
        lines += ["## Per-task verdicts", "", *verdicts]
    if paper is not None:
        lines += [
            "## The paper's metric, beside the honest one",
            "",
            *compact_table(paper),
            "",
            "The same runs, scored as the paper scores them (`paper/episodic_return`): for an "
            "ExploRLer run, the best candidate's selection score at each search; for a plain run, "
            "3 deterministic episodes on the run's fixed start states at the points where the "
            "paper's schedule searches. Final score: the mean of a run's last 10% of points. Env "
            "steps as the paper counts them: training steps only. Compare with the table above "
            "to see how much of a gain the metric alone makes.",
            "",
        ]
    lines += [
        f"Final score of a run: mean of its last {summary['last_k']} honest evaluations "
        "(deterministic policy, frozen observation statistics, held-out seeds). Mean +- std over "
        "seeds. Ratio: variant mean / baseline mean. Paired: the same seed of the variant and the "
        "baseline; the median of their ratios, and the seeds on which the variant scored higher. "
        "Wall ratio: training wall-clock (honest evaluation excluded, candidate search included) / "
        "the baseline's.",
        "",
    ]
    by_task = defaultdict(list)
    for row in summary["table"]:
        by_task[(row["env"], row["algo"])].append(row)
    for (env, algo), rows in by_task.items():
        lines += [
            f"## {env} / {algo.upper()}",
            "",
            "| variant | seeds | final return | ratio | paired median ratio | wins | training steps "
            "| total env steps | wall (s) | wall ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['variant']} | {r['seeds']} | {_f(r['final_mean'])} +- {_f(r['final_std'])} "
                f"| {_f(r['ratio_to_baseline'], 2)} | {_f(r.get('paired_median_ratio'), 2)} "
                f"| {r.get('wins', 0)}/{r.get('pairs', 0)} | {_f(r['training_steps'], 0)} "
                f"| {_f(r['total_env_steps'], 0)} | {_f(r['train_seconds'], 0)} "
                f"| {_f(r['wall_ratio_to_baseline'], 2)} |"
            )
        lines.append("")
    if summary["aggregate"]:
        anchor = "a random policy's return" if summary["random_anchor"] else "0"
        lines += [
            "## Aggregate over all env x algorithm tasks",
            "",
            f"Baseline-normalised final score: (score - r) / (baseline mean - r), r = {anchor}; "
            "1.0 = the baseline's mean (its own IQM on each variant's tasks and seeds, given beside it, "
            "is below 1 where its seeds spread: compare a variant's IQM with it). IQM with 95% "
            "stratified-bootstrap CI "
            f"({summary['bootstrap_reps']:,} resamples); probability of improvement "
            "P(variant > baseline) averaged over tasks, with CI; wall ratio: IQM over runs of "
            "training wall-clock / the baseline's mean on the same task.",
            "",
            "| variant | tasks | runs | IQM normalised score [95% CI] | baseline's IQM, same runs "
            "| P(improvement) [95% CI] | wall ratio (IQM) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for a in summary["aggregate"]:
            pi = (
                f"{a['prob_improvement']:.2f} [{a['prob_improvement_ci'][0]:.2f}, "
                f"{a['prob_improvement_ci'][1]:.2f}]"
                if "prob_improvement" in a
                else "-"
            )
            lines.append(
                f"| {a['variant']} | {a['tasks']} | {a['runs']} | {a['iqm']:.3f} "
                f"[{a['iqm_ci'][0]:.3f}, {a['iqm_ci'][1]:.3f}] | {_f(a.get('baseline_iqm'), 3)} | {pi} "
                f"| {_f(a['wall_ratio_iqm'], 2)} |"
            )
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# plots


def curve_band(curves, grid):
    """Mean and t-based 95% band over seeds of curves [(x, y)] interpolated onto ``grid``."""
    ys = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[i, inside] = np.interp(grid[inside], x, y)
    count = np.sum(np.isfinite(ys), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a point no seed reaches is NaN, silently
        mean = np.nanmean(ys, axis=0)
        sem = np.nanstd(ys, axis=0, ddof=1) / np.sqrt(count)
    half = np.array([t975(c - 1) for c in count]) * sem
    half[count < 2] = 0.0
    return mean, mean - half, mean + half


def same_runs(cell, other) -> bool:
    """Whether two variants' runs of a task logged the same seeds, steps and returns."""
    return cell.keys() == other.keys() and all(
        [(p["training_steps"], p["total_env_steps"], p["return"]) for p in cell[seed]]
        == [(p["training_steps"], p["total_env_steps"], p["return"]) for p in other[seed]]
        for seed in cell
    )


def _steps_label(x, _position=None) -> str:
    """Env steps on an axis, short enough that neighbouring ticks do not run together: 150k, 1.2M."""
    return f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def plot_curves(rows, out: Path, x_key: str, xlabel: str, filename: str):
    """One panel per task that has runs; a curve per variant, drawn only over the steps every seed
    of it reached (runs end at different steps: past the first end, the mean would be over fewer
    seeds); a variant whose runs equal another's is drawn dashed and says so in the legend."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    runs = runs_of(rows)
    tasks = sorted({(e, a) for e, a, _ in runs})
    variants = order({v for _, _, v in runs})
    colors = {v: f"C{i}" for i, v in enumerate(variants)}
    columns = min(len(tasks), 2)
    rows_of_panels = math.ceil(len(tasks) / columns)
    fig, axes = plt.subplots(
        rows_of_panels, columns, figsize=(5.6 * columns, 3.8 * rows_of_panels), squeeze=False
    )
    for ax in axes.flat[len(tasks) :]:
        ax.remove()  # no empty panel for a task the grid did not run
    for ax, (env, algo) in zip(axes.flat, tasks):
        drawn = []
        for variant in variants:
            cell = runs.get((env, algo, variant))
            if not cell:
                continue
            twin = next((v for v in drawn if same_runs(cell, runs[(env, algo, v)])), None)
            drawn.append(variant)
            curves = [
                (np.array([p[x_key] for p in pts], float), np.array([p["return"] for p in pts]))
                for pts in cell.values()
            ]
            lo, hi = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
            grid = np.linspace(lo, hi, 200)
            mean, low, high = curve_band(curves, grid)
            label = f"{variant} ({len(cell)})" + (f", identical to {twin}" if twin else "")
            style = {"ls": (0, (4, 3)), "lw": 2.2} if twin else {"lw": 1.4}
            ax.plot(grid, mean, color=colors[variant], label=label, **style)
            if not twin:
                ax.fill_between(grid, low, high, color=colors[variant], alpha=0.2, lw=0)
        ax.set_title(f"{env} / {algo.upper()}")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_label))
        ax.set_ylabel("honest return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Honest return: mean over seeds, 95% CI band (t); (n) = seeds; each curve ends where its "
        "earliest-ending seed does",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / filename, dpi=110)
    plt.close(fig)


def plot_wall_clock(summary, out: Path, rows):
    plt = pyplot()
    runs = runs_of(rows)
    tasks = [tuple(t) for t in summary["tasks"]]
    variants = summary["variants"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) * max(1, len(variants)) / 2), 4))
    width = 0.8 / max(1, len(variants))
    for k, variant in enumerate(variants):
        means, errs, xs = [], [], []
        for i, task in enumerate(tasks):
            cell = runs.get((*task, variant))
            if not cell:
                continue
            per_step = np.array([run_cost(p) / max(p[-1]["training_steps"], 1) * 1e3 for p in cell.values()])
            xs.append(i + (k - (len(variants) - 1) / 2) * width)
            means.append(per_step.mean())
            errs.append(per_step.std(ddof=1) if len(per_step) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=errs, label=variant, color=f"C{k}", capsize=2)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{e}\n{a.upper()}" for e, a in tasks], fontsize=8)
    ax.set_ylabel("training wall-clock per training step (ms)")
    ax.set_title("Wall-clock per training step (mean +- std over seeds; search included)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "wall_clock_per_step.png", dpi=110)
    plt.close(fig)


def plot_aggregate(summary, out: Path):
    plt = pyplot()
    agg = summary["aggregate"]
    if not agg:
        return
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(agg) + 1.2))
    for k, a in enumerate(agg):
        ax.errorbar(
            a["iqm"],
            k,
            xerr=[[a["iqm"] - a["iqm_ci"][0]], [a["iqm_ci"][1] - a["iqm"]]],
            fmt="o",
            color=f"C{k}",
            capsize=4,
        )
    ax.axvline(1.0, color="gray", ls="--", lw=1)
    ax.set_yticks(range(len(agg)))
    ax.set_yticklabels([a["variant"] for a in agg])
    ax.set_xlabel("IQM of baseline-normalised final score (95% stratified-bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "aggregate.png", dpi=110)
    plt.close(fig)


def make_plots(rows, summary, out: Path) -> list[str]:
    if pyplot() is None:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    plot_curves(rows, out, "training_steps", "training env steps", "return_vs_training_steps.png")
    plot_curves(
        rows,
        out,
        "total_env_steps",
        "total env steps (training + candidates)",
        "return_vs_total_env_steps.png",
    )
    plot_wall_clock(summary, out, rows)
    plot_aggregate(summary, out)
    return [
        "return_vs_training_steps.png",
        "return_vs_total_env_steps.png",
        "wall_clock_per_step.png",
        "aggregate.png",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", help="reads benchmarks/results/<protocol>/evaluations.csv")
    p.add_argument("--csv", type=Path, help="the sweep's CSV (instead of --protocol)")
    p.add_argument("--out", type=Path, help="output folder (default: the CSV's folder)")
    p.add_argument("--last-k", type=int, default=3, help="evaluations averaged for the final score")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    p.add_argument("--no-random-anchor", action="store_true", help="normalise by baseline only")
    p.add_argument("--baseline", help="the variant others are compared with (default: the protocol's)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    if args.csv is None and args.protocol is None:
        p.error("give --protocol or --csv")
    path = args.csv or HERE / "results" / args.protocol / "evaluations.csv"
    out = args.out or path.parent
    out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(path)
    if not rows:
        print(f"no evaluations in {path}", file=sys.stderr)
        return 1
    protocol = PROTOCOLS.get(args.protocol or "")
    baseline = args.baseline or (protocol.baseline if protocol else BASELINE)
    summary = summarise(
        rows, args.last_k, args.bootstrap, anchor=not args.no_random_anchor, rng=args.seed, baseline=baseline
    )
    plots = [] if args.no_plots else make_plots(rows, summary, out)
    title = f"Benchmark results: {args.protocol or path.parent.name}"
    sweep = None
    with contextlib.suppress(OSError, json.JSONDecodeError):
        sweep = json.loads((path.parent / "sweep.json").read_text())
    paper = None
    paper_csv = path.parent / "paper_metric.csv"
    paper_rows = load_paper_rows(paper_csv) if paper_csv.exists() else []
    if paper_rows:
        paper = summarise(
            paper_rows,
            None,
            args.bootstrap,
            not args.no_random_anchor,
            args.seed,
            baseline,
            paper_final_score,
        )
    text = markdown(summary, title, sweep, paper)
    if plots:
        text += "\n" + "\n".join(f"![{Path(f).stem}]({f})" for f in plots) + "\n"
    write_results(out, {**summary, "csv": str(path), "plots": plots, "paper_metric": paper}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
