"""How much does ``explore()`` cost outside ``evaluate``, and how does that compare to raw space?

For P parameters and 10 anchors (shaped like one PPO iteration's epoch ends), times on the CPU with
one torch thread, side by side in one run:

* ``explore()``'s ``search_seconds``: the whole call minus the time inside ``evaluate``, i.e. the
  subspace construction, the ESA, lifting the 20 candidates to P dimensions, and loading each one
  into the parameters (``evaluate`` is a no-op callable);
* the same ESA run directly in the raw P-dimensional space (``tests/reference_esa.py``).

Usage: ``python -m benchmarks.bench_explore_overhead [--sizes 10000 100000 1000000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import REPO, write_results  # noqa: E402
from explorler_optim import EmptySpaceSearch, ExploRLerOptimizer  # noqa: E402
from tests.reference_esa import raw_space_esa  # noqa: E402


def explore_once(num_params: int, seed: int) -> tuple[float, float, np.ndarray]:
    """One ``explore()`` on 10 drifting anchors: its search seconds, its CPU seconds, the anchors."""
    generator = torch.Generator().manual_seed(seed)
    param = torch.nn.Parameter(torch.randn(num_params, generator=generator))
    search = EmptySpaceSearch(snapshot_every=20)  # the authors' operator, as raw_space_esa: 20 candidates
    opt = ExploRLerOptimizer(torch.optim.SGD([param], lr=1.0), search=search, seed=seed)
    drift = torch.randn(num_params, generator=generator) * 1e-2
    for _ in range(10):
        with torch.no_grad():
            param.add_(drift + torch.randn(num_params, generator=generator) * 1e-2)
        opt.record()
    anchors = opt.anchors().double().numpy()
    cpu = time.process_time()
    result = opt.explore(lambda: 0.0)
    return result.search_seconds, time.process_time() - cpu, anchors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="timings per size; the median is reported")
    parser.add_argument("--raw-repeats", type=int, default=1, help="raw-space timings per size (slow)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "explore_overhead"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for size in args.sizes:
        explore_times, explore_cpu = [], []
        for repeat in range(args.repeats):
            seconds, cpu_seconds, anchors = explore_once(size, seed=repeat)
            explore_times.append(seconds)
            explore_cpu.append(cpu_seconds)
        raw_times, raw_cpu = [], []
        for _ in range(args.raw_repeats):
            tick, cpu = time.perf_counter(), time.process_time()
            raw_space_esa(anchors)
            raw_times.append(time.perf_counter() - tick)
            raw_cpu.append(time.process_time() - cpu)
        explore_s, raw_s = float(np.median(explore_times)), float(np.median(raw_times))
        explore_c, raw_c = float(np.median(explore_cpu)), float(np.median(raw_cpu))
        rows.append(
            {
                "params": size,
                "explore_seconds": explore_s,
                "raw_seconds": raw_s,
                "ratio": raw_s / explore_s,
                "explore_cpu_seconds": explore_c,
                "raw_cpu_seconds": raw_c,
            }
        )
        print(
            f"P={size:>9,}  explore() outside evaluate {explore_s:8.4f} s   raw-space ESA {raw_s:8.3f} s   "
            f"raw / explore {raw_s / explore_s:7.1f}x   (CPU s: {explore_c:.4f} vs {raw_c:.3f})",
            flush=True,
        )

    table = [
        "# explore() overhead vs raw-space ESA (10 anchors, 20 candidates, 1 torch thread, CPU)",
        "",
        "| P | explore() outside evaluate (s) | raw-space ESA (s) | ratio | explore() CPU s | raw CPU s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        table.append(
            f"| {row['params']:,} | {row['explore_seconds']:.4f} | {row['raw_seconds']:.3f} | "
            f"{row['ratio']:.1f}x | {row['explore_cpu_seconds']:.4f} | {row['raw_cpu_seconds']:.3f} |"
        )
    table.append("")
    table.append(f"explore(): median of {args.repeats} runs; raw space: median of {args.raw_repeats}.")
    load = os.getloadavg()
    table.append(f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores).")
    write_results(args.out, {"rows": rows, "repeats": args.repeats}, "\n".join(table))
    print(f"wrote {args.out}/results.md")


if __name__ == "__main__":
    main()
