"""Compare two sweeps run by run: did a re-run reproduce the committed one?

Runs are matched by name (``ENV__ALGO__VARIANT__SEED``); ``--map old=new`` matches a variant under
another name (e.g. ``--map lean=explorler`` when a tuned setting became the default). For every
matched pair the honest returns are compared at the training steps both runs evaluated (the two
sweeps may evaluate at different intervals). The single-file scripts are deterministic on the CPU
for a given seed, so on the same machine type the differences should be 0; on other hardware or
library versions expect seed-noise-sized differences instead.

    python -m benchmarks.compare_runs benchmarks/results/small-2026-11-28 benchmarks/results/small
    python -m benchmarks.compare_runs benchmarks/results/tune benchmarks/results/small --map lean=explorler
    python -m benchmarks.compare_runs OLD NEW --scalars   # also every TensorBoard scalar, where kept

Prints one line per matched run and a summary; exits 1 if nothing could be matched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.sweep import load_result


def load_runs(sweep_dir: Path) -> dict[str, list[dict]]:
    """Run name -> its honest evaluations, for every finished run under ``sweep_dir/runs``."""
    runs = {}
    for run_dir in sorted((sweep_dir / "runs").glob("*/")):
        record = load_result(run_dir)
        if record and record.get("returncode") == 0 and record.get("evaluations"):
            runs[run_dir.name] = record["evaluations"]
    return runs


def rename(name: str, mapping: dict[str, str]) -> str:
    env, algo, variant, seed = name.split("__")
    return "__".join((env, algo, mapping.get(variant, variant), seed))


def compare(old: dict[str, list[dict]], new: dict[str, list[dict]], mapping: dict[str, str]) -> list[dict]:
    """For each run in both: the common evaluation points and the largest return difference."""
    rows = []
    for old_name, old_evals in old.items():
        new_name = rename(old_name, mapping)
        if new_name not in new:
            continue
        old_at = {e["training_steps"]: e["return"] for e in old_evals}
        new_at = {e["training_steps"]: e["return"] for e in new[new_name]}
        common = sorted(set(old_at) & set(new_at))
        if not common:
            continue
        diffs = [abs(old_at[t] - new_at[t]) for t in common]
        rows.append(
            {"run": new_name, "points": len(common), "max_abs_diff": max(diffs), "last_step": common[-1]}
        )
    return rows


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of a finished run (its ``runs/*`` folder), less the wall-clock ones."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((run_dir / "runs").glob("*/")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag != "charts/SPS" and "seconds" not in tag:
                out[tag] = out.get(tag, []) + [(e.step, e.value) for e in acc.Scalars(tag)]
    return out


def scalar_summary(old_dir: Path, new_dir: Path) -> str:
    """How many scalar tags of two runs are identical and which differ (or exist on one side only);
    a run that kept no TensorBoard file is named instead, since it has nothing to compare."""
    old, new = scalars(old_dir), scalars(new_dir)
    missing = [str(d) for d, held in ((old_dir, old), (new_dir, new)) if not held]
    if missing:
        return f"scalars: none kept in {' and '.join(missing)}"
    differ = sorted(tag for tag in old | new if old.get(tag) != new.get(tag))
    tags = len(old | new)
    return f"scalars: {tags - len(differ)} of {tags} tags identical" + (
        f" (differ: {', '.join(differ)})" if differ else ""
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="a sweep folder (holding runs/)")
    p.add_argument("new", type=Path, help="the sweep folder to compare with it")
    p.add_argument("--map", nargs="*", default=[], metavar="OLD=NEW", help="variant renames")
    p.add_argument(
        "--scalars", action="store_true", help="also compare every TensorBoard scalar (clock tags excepted)"
    )
    args = p.parse_args(argv)
    mapping = dict(item.split("=", 1) for item in args.map)
    rows = compare(load_runs(args.old), load_runs(args.new), mapping)
    if not rows:
        print(f"no run of {args.old} has a finished counterpart with common evaluation points in {args.new}")
        return 1
    for r in rows:
        line = f"{r['run']:<44} {r['points']:>3} common points  max |diff| {r['max_abs_diff']:.6g}"
        if args.scalars:
            old_name = next(n for n in load_runs(args.old) if rename(n, mapping) == r["run"])
            line += "  " + scalar_summary(args.old / "runs" / old_name, args.new / "runs" / r["run"])
        print(line)
    identical = sum(r["max_abs_diff"] == 0 for r in rows)
    worst = max(rows, key=lambda r: r["max_abs_diff"])
    print(
        f"{len(rows)} runs matched, {identical} identical at every common point; "
        f"largest difference {worst['max_abs_diff']:.6g} ({worst['run']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
