"""Each finished run's own scores, one table row a run: for a protocol still short of its seeds.

Not a comparison (one seed says nothing): the first and last held-out scores, the mean of the last 3,
the total env steps and the paper's metric at the end, read from each run's ``result.json``.

    python -m benchmarks.run_scores benchmarks/results/headline --seed 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(sweep_dir: Path, seed: int) -> list[str]:
    out = [
        f"| run (seed {seed}) | first held-out | held-out at end | mean of last 3 | total env steps "
        "| paper's metric, last |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path in sorted(sweep_dir.glob(f"runs/*__{seed}/result.json")):
        record = json.loads(path.read_text())
        evaluations, paper = record.get("evaluations") or [], record.get("paper_metric") or []
        if record.get("returncode") != 0 or not evaluations:
            continue
        env, algo, variant, _ = path.parent.name.split("__")
        last3 = sum(e["return"] for e in evaluations[-3:]) / len(evaluations[-3:])
        metric = f"{paper[-1]['return']:,.1f}" if paper else ""
        first, last = evaluations[0], evaluations[-1]
        out.append(
            f"| {env} {algo.upper()} `{variant}` | {first['return']:,.1f} | {last['return']:,.1f} | "
            f"{last3:,.1f} | {last['total_env_steps']:,} | {metric} |"
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print("\n".join(rows(args.sweep_dir, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
