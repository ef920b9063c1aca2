"""Training speed of the single-file PPO: `--no-explorler` vs CleanRL, and ExploRLer's overhead.

Issue 3 asks that `single_file_baselines/ppo_continuous_action.py --no-explorler` trains at least
as fast as CleanRL's `ppo_continuous_action.py` on the same machine, measured side by side, and for
the wall-clock cost of ExploRLer per training step. Two pairs, each run as two concurrent
single-threaded processes (OMP_NUM_THREADS=1, one process per core of a 2-core machine), each
process in its own temporary working directory:

* pair A: CleanRL vs ours `--no-explorler --no-cuda --quiet --eval-every 1000000`;
* pair B: ours `--no-explorler` vs ours with the ExploRLer defaults (both `--no-cuda --quiet
  --eval-every 1000000`, same seed).

`--eval-every 1000000` makes our honest evaluation (10 deterministic episodes, never counted in the
budget) run once, at the end; it is excluded from our `charts/SPS` but included in the process wall
time. Each pair is repeated `--repeats` times, alternating which process is started first.

Figures, per process: the last `charts/SPS` in its TensorBoard file (CleanRL: steps / all elapsed
time; ours: training steps / elapsed time minus honest-evaluation time, candidate evaluation
included), the last `global_step` (steps actually trained: with `count_eval_steps`, the default,
ExploRLer's candidate env steps count toward `--total-timesteps`, so the ExploRLer run trains
fewer), the whole process wall time and CPU time, and training steps per wall second. ExploRLer's
overhead per training step is `wall_explorler / steps_explorler - wall_baseline / steps_baseline`
(ms) and the ratio of the two per-step wall times.

CleanRL is NOT a dependency and its code is never copied into this repository; get it yourself:

    git clone https://github.com/vwxyzjn/cleanrl /tmp/cleanrl
    python -m benchmarks.bench_ppo_sps --cleanrl /tmp/cleanrl/cleanrl/ppo_continuous_action.py \\
        --cleanrl-commit "$(git -C /tmp/cleanrl rev-parse HEAD)"

It needs only what our venv has (gymnasium, mujoco, torch, tyro, tensorboard). CleanRL's file
calls `gym.wrappers.TransformObservation(env, f)` without the `observation_space` argument that
gymnasium >= 1.0 requires; when that exact call is present, the run directory gets a copy with
`, env.observation_space` appended to it (the only change) and the results record the diff.
Results go to benchmarks/results/ppo_sps/ (results.json, results.md).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import REPO, tensorboard_runs, write_results

OURS = REPO / "single_file_baselines" / "ppo_continuous_action.py"  # the file a user copies
OUT = REPO / "benchmarks" / "results" / "ppo_sps"
GYM1_OLD = "gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10))"
GYM1_NEW = "gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def prepare_cleanrl(path: Path, workdir: Path) -> tuple[Path, str]:
    """Copy CleanRL's script into ``workdir`` (gymnasium-1.x shim applied if needed); return diff."""
    text = path.read_text()
    patched = text.replace(GYM1_OLD, GYM1_NEW) if GYM1_OLD in text else text
    target = workdir / path.name
    target.write_text(patched)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            patched.splitlines(keepends=True),
            fromfile=f"a/{path.name}",
            tofile=f"b/{path.name}",
        )
    )
    return target, diff


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the (single) TensorBoard run under ``run_dir``/runs, as (step, value) lists."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for acc in tensorboard_runs(run_dir / "runs"):
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    if not scalars:
        raise RuntimeError(f"no TensorBoard scalars under {run_dir / 'runs'}")
    return scalars


def last(scalars, tag, default=None):
    values = scalars.get(tag)
    return values[-1][1] if values else default


class Proc:
    """One benchmark process: its command, working directory, wall and CPU time."""

    def __init__(self, label: str, cmd: list[str], workdir: Path):
        self.label, self.cmd, self.workdir = label, cmd, workdir
        self.wall = self.cpu = None
        self.returncode = None

    def start(self):
        env = {**os.environ, **THREAD_ENV, "PYTHONUNBUFFERED": "1"}
        self.stdout = open(self.workdir / "stdout.txt", "w")
        self.t0 = time.perf_counter()
        self.popen = subprocess.Popen(
            self.cmd, cwd=self.workdir, env=env, stdout=self.stdout, stderr=subprocess.STDOUT
        )
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self):
        _, status, usage = os.wait4(self.popen.pid, 0)  # reap ourselves to get its rusage
        self.wall = time.perf_counter() - self.t0
        self.cpu = usage.ru_utime + usage.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode
        self.stdout.close()

    def join(self, timeout: float):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.popen.kill()
            self.thread.join()
            raise RuntimeError(f"{self.label} exceeded {timeout:.0f} s")
        if self.returncode != 0:
            tail = (self.workdir / "stdout.txt").read_text()[-3000:]
            raise RuntimeError(f"{self.label} failed (exit {self.returncode}):\n{tail}")

    def result(self) -> dict:
        scalars = read_scalars(self.workdir)
        steps = int(scalars["charts/SPS"][-1][0])  # last global_step
        total = last(scalars, "charts/total_env_steps")
        eval_steps = last(scalars, "explorler/eval_env_steps", 0.0 if total is not None else None)
        explore_seconds = sum(v for _, v in scalars.get("explorler/seconds", []))
        out = {
            "label": self.label,
            "sps_tensorboard": float(last(scalars, "charts/SPS")),
            "global_step": steps,
            "wall_seconds": round(self.wall, 3),
            "cpu_seconds": round(self.cpu, 3),
            "steps_per_wall_second": round(steps / self.wall, 2),
            "wall_ms_per_step": round(1000.0 * self.wall / steps, 4),
            "cpu_ms_per_step": round(1000.0 * self.cpu / steps, 4),
        }
        if total is not None:
            out["total_env_steps"] = int(total)
            out["candidate_env_steps"] = int(eval_steps)
            out["explore_cycles"] = len(scalars.get("explorler/seconds", []))
            out["explore_seconds"] = round(explore_seconds, 3)
        return out


def run_pair(first: Proc, second: Proc, timeout: float) -> dict:
    before = loadavg()
    first.start()
    second.start()
    first.join(timeout)
    second.join(timeout)
    return {
        "started_first": first.label,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        first.label: first.result(),
        second.label: second.result(),
    }


def ours_cmd(args, *extra: str) -> list[str]:
    return [
        sys.executable, str(OURS), "--env-id", args.env_id, "--total-timesteps",
        str(args.total_timesteps), "--seed", str(args.seed), "--no-cuda", "--quiet",
        "--eval-every", "1000000", *extra,
    ]  # fmt: skip


def mean(values):
    return round(statistics.fmean(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cleanrl", type=Path, required=True, help="CleanRL's ppo_continuous_action.py")
    parser.add_argument("--cleanrl-commit", default=None, help="CleanRL commit (default: git of --cleanrl)")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--total-timesteps", type=int, default=61440, help="61440 = 30 iterations")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    cleanrl_path = args.cleanrl.resolve()
    commit = args.cleanrl_commit
    if commit is None:
        git = subprocess.run(
            ["git", "-C", str(cleanrl_path.parent), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        commit = git.stdout.strip() if git.returncode == 0 else "unknown"

    load_start = loadavg()
    reps_a, reps_b, cleanrl_diff = [], [], ""
    with tempfile.TemporaryDirectory(prefix="bench_ppo_sps_") as tmp:
        for rep in range(args.repeats):
            dirs = {name: Path(tmp) / f"rep{rep}_{name}" for name in ("cleanrl", "ours", "base", "expl")}
            for d in dirs.values():
                d.mkdir()
            script, cleanrl_diff = prepare_cleanrl(cleanrl_path, dirs["cleanrl"])
            cleanrl = Proc("cleanrl", [
                sys.executable, str(script), "--env-id", args.env_id, "--total-timesteps",
                str(args.total_timesteps), "--seed", str(args.seed), "--no-cuda",
            ], dirs["cleanrl"])  # fmt: skip
            ours = Proc("ours_no_explorler", ours_cmd(args, "--no-explorler"), dirs["ours"])
            pair = (cleanrl, ours) if rep % 2 == 0 else (ours, cleanrl)
            print(f"rep {rep + 1} pair A: {pair[0].label} first ...", flush=True)
            result = run_pair(*pair, args.timeout)
            result["sps_ratio_ours_over_cleanrl"] = round(
                result["ours_no_explorler"]["sps_tensorboard"] / result["cleanrl"]["sps_tensorboard"], 4
            )
            result["wall_sps_ratio_ours_over_cleanrl"] = round(
                result["ours_no_explorler"]["steps_per_wall_second"]
                / result["cleanrl"]["steps_per_wall_second"],
                4,
            )
            reps_a.append(result)
            print(f"  {result}", flush=True)

            base = Proc("baseline", ours_cmd(args, "--no-explorler"), dirs["base"])
            expl = Proc("explorler", ours_cmd(args), dirs["expl"])
            pair = (base, expl) if rep % 2 == 0 else (expl, base)
            print(f"rep {rep + 1} pair B: {pair[0].label} first ...", flush=True)
            result = run_pair(*pair, args.timeout)
            b, e = result["baseline"], result["explorler"]
            result["overhead_ms_per_training_step"] = round(e["wall_ms_per_step"] - b["wall_ms_per_step"], 4)
            result["overhead_ratio_wall_per_step"] = round(e["wall_ms_per_step"] / b["wall_ms_per_step"], 4)
            result["overhead_ms_per_training_step_literal"] = round(
                1000.0 * (e["wall_seconds"] - b["wall_seconds"]) / e["global_step"], 4
            )
            result["overhead_cpu_ms_per_training_step"] = round(
                e["cpu_ms_per_step"] - b["cpu_ms_per_step"], 4
            )
            result["sps_ratio_explorler_over_baseline"] = round(
                e["sps_tensorboard"] / b["sps_tensorboard"], 4
            )
            reps_b.append(result)
            print(f"  {result}", flush=True)
    load_end = loadavg()

    def avg(reps, *keys):
        values = []
        for r in reps:
            v = r
            for k in keys:
                v = v[k]
            values.append(v)
        return mean(values)

    summary = {
        "pair_a": {
            "cleanrl_sps": avg(reps_a, "cleanrl", "sps_tensorboard"),
            "ours_sps": avg(reps_a, "ours_no_explorler", "sps_tensorboard"),
            "sps_ratio_ours_over_cleanrl": avg(reps_a, "sps_ratio_ours_over_cleanrl"),
            "cleanrl_steps_per_wall_second": avg(reps_a, "cleanrl", "steps_per_wall_second"),
            "ours_steps_per_wall_second": avg(reps_a, "ours_no_explorler", "steps_per_wall_second"),
            "wall_sps_ratio_ours_over_cleanrl": avg(reps_a, "wall_sps_ratio_ours_over_cleanrl"),
        },
        "pair_b": {
            "baseline_wall_ms_per_step": avg(reps_b, "baseline", "wall_ms_per_step"),
            "explorler_wall_ms_per_step": avg(reps_b, "explorler", "wall_ms_per_step"),
            "overhead_ms_per_training_step": avg(reps_b, "overhead_ms_per_training_step"),
            "overhead_ratio_wall_per_step": avg(reps_b, "overhead_ratio_wall_per_step"),
            "overhead_ms_per_training_step_literal": avg(reps_b, "overhead_ms_per_training_step_literal"),
            "overhead_cpu_ms_per_training_step": avg(reps_b, "overhead_cpu_ms_per_training_step"),
            "sps_ratio_explorler_over_baseline": avg(reps_b, "sps_ratio_explorler_over_baseline"),
            "explorler_global_step": avg(reps_b, "explorler", "global_step"),
            "explorler_candidate_env_steps": avg(reps_b, "explorler", "candidate_env_steps"),
        },
    }
    data = {
        "env_id": args.env_id,
        "total_timesteps": args.total_timesteps,
        "seed": args.seed,
        "repeats": args.repeats,
        "threads": THREAD_ENV,
        "cleanrl": {
            "path": str(cleanrl_path),
            "commit": commit,
            "sha256": hashlib.sha256(cleanrl_path.read_bytes()).hexdigest(),
            "modification": cleanrl_diff or "none",
        },
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "pair_a": reps_a,
        "pair_b": reps_b,
        "summary": summary,
    }
    write_results(args.out, data, markdown(data))
    print(f"results written to {args.out}")


def markdown(d: dict) -> str:
    s = d["summary"]
    lines = [
        "# PPO training speed: ours `--no-explorler` vs CleanRL, and ExploRLer's overhead",
        "",
        f"{d['env_id']}, `--total-timesteps {d['total_timesteps']}`, seed {d['seed']}, "
        f"{d['repeats']} repetitions per pair (first process alternates); every process "
        "single-threaded (OMP/MKL/OPENBLAS_NUM_THREADS=1), two at once, each in its own temporary "
        "directory, CPU only. Ours runs with `--eval-every 1000000`: one honest evaluation "
        "(10 episodes) at the end, excluded from its `charts/SPS`, included in its wall time.",
        "",
        f"CleanRL `cleanrl/ppo_continuous_action.py` at commit {d['cleanrl']['commit']} "
        f"(sha256 {d['cleanrl']['sha256'][:16]}...). Modification for gymnasium 1.x:",
        "",
        "```diff",
        d["cleanrl"]["modification"].rstrip(),
        "```",
        "",
        f"Load average (1/5/15 min, runnable/total, last pid): start `{d['loadavg_start']}`, "
        f"end `{d['loadavg_end']}`.",
        "",
        "## Pair A: CleanRL vs ours `--no-explorler`",
        "",
        "| rep | first | CleanRL SPS | ours SPS | ratio | CleanRL steps/wall-s | ours steps/wall-s "
        "| wall ratio | CleanRL wall s | ours wall s | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(d["pair_a"], 1):
        c, o = r["cleanrl"], r["ours_no_explorler"]
        lines.append(
            f"| {i} | {r['started_first']} | {c['sps_tensorboard']:.0f} | {o['sps_tensorboard']:.0f} "
            f"| {r['sps_ratio_ours_over_cleanrl']:.3f} | {c['steps_per_wall_second']:.0f} "
            f"| {o['steps_per_wall_second']:.0f} | {r['wall_sps_ratio_ours_over_cleanrl']:.3f} "
            f"| {c['wall_seconds']:.1f} | {o['wall_seconds']:.1f} "
            f"| {r['loadavg_before'].split()[0]} / {r['loadavg_after'].split()[0]} |"
        )
    a = s["pair_a"]
    lines += [
        f"| mean | | {a['cleanrl_sps']:.0f} | {a['ours_sps']:.0f} "
        f"| **{a['sps_ratio_ours_over_cleanrl']:.3f}** | {a['cleanrl_steps_per_wall_second']:.0f} "
        f"| {a['ours_steps_per_wall_second']:.0f} | **{a['wall_sps_ratio_ours_over_cleanrl']:.3f}** "
        "| | | |",
        "",
        "SPS = last `charts/SPS` (CleanRL: all elapsed time after env creation; ours: minus the honest "
        "evaluation). steps/wall-s = trained steps / whole process wall time (imports, env "
        "creation and, for ours, the final honest evaluation included).",
        "",
        "## Pair B: ours `--no-explorler` vs ours with ExploRLer defaults",
        "",
        "| rep | first | baseline steps | ExploRLer steps | candidate env steps | cycles "
        "| baseline wall s | ExploRLer wall s | baseline ms/step | ExploRLer ms/step "
        "| overhead ms/step | ratio | CPU overhead ms/step | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(d["pair_b"], 1):
        b, e = r["baseline"], r["explorler"]
        lines.append(
            f"| {i} | {r['started_first']} | {b['global_step']} | {e['global_step']} "
            f"| {e['candidate_env_steps']} | {e['explore_cycles']} | {b['wall_seconds']:.1f} "
            f"| {e['wall_seconds']:.1f} | {b['wall_ms_per_step']:.3f} | {e['wall_ms_per_step']:.3f} "
            f"| {r['overhead_ms_per_training_step']:.3f} | {r['overhead_ratio_wall_per_step']:.3f} "
            f"| {r['overhead_cpu_ms_per_training_step']:.3f} "
            f"| {r['loadavg_before'].split()[0]} / {r['loadavg_after'].split()[0]} |"
        )
    p = s["pair_b"]
    lines += [
        f"| mean | | | {p['explorler_global_step']:.0f} | {p['explorler_candidate_env_steps']:.0f} | "
        f"| | | {p['baseline_wall_ms_per_step']:.3f} | {p['explorler_wall_ms_per_step']:.3f} "
        f"| **{p['overhead_ms_per_training_step']:.3f}** | **{p['overhead_ratio_wall_per_step']:.3f}** "
        f"| {p['overhead_cpu_ms_per_training_step']:.3f} | |",
        "",
        "Steps = last `global_step` (steps actually trained): with `count_eval_steps` (default) the "
        "candidate env steps (`explorler/eval_env_steps`) count toward `--total-timesteps`, so the "
        "ExploRLer run trains fewer steps. ms/step = process wall time / its own trained steps; "
        "overhead = ExploRLer ms/step - baseline ms/step, ratio = ExploRLer / baseline. "
        f"The literal (wall_explorler - wall_baseline) / ExploRLer steps averages "
        f"{p['overhead_ms_per_training_step_literal']:.3f} ms (it credits ExploRLer with the "
        "training steps it skipped). Training SPS ratio ExploRLer / baseline (`charts/SPS`, "
        f"candidate evaluation included): {p['sps_ratio_explorler_over_baseline']:.3f}.",
        "",
        "Caveat: the 2-core machine is shared; other processes (see load averages) compete with "
        "both processes of a pair alike, but absolute SPS are load-dependent.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
