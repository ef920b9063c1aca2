"""Run a benchmark protocol: env x algorithm x variant x seed, one process per run.

Each run is a single-file script (``single_file_baselines/{ppo,trpo}_continuous_action_research.py``) or,
for the ``sb3`` variant, ``benchmarks/sb3_runner.py``, started as its own process in its own
folder ``<out>/runs/<env>__<algo>__<variant>__<seed>/`` (TensorBoard under ``runs/`` there, console
output in ``log.txt``). When a run ends, ``result.json`` is written there atomically: the command,
git commit, package versions, machine, wall time, return code and the run's honest evaluations
read from its TensorBoard file. A run whose ``result.json`` says it succeeded is skipped next time
(resumable); failed runs are retried. At the end ``<out>/evaluations.csv`` (one row per honest
evaluation: env, algo, variant, seed, training_steps, total_env_steps, return, wall_seconds,
train_seconds) and ``<out>/sweep.json`` are rebuilt from all result files; ``sweep.json`` also
records the span from the first run's start to the last run's end against the protocol's budget,
the runs' wall times added up (the machine time the grid needs, one core per run), and the machine's
speed (raw Hopper-v5 steps per second, measured in this process just before the
runs start; with Ray, on the driver's machine).

    python -m benchmarks.sweep --protocol small                 # local, one job per core
    python -m benchmarks.sweep --protocol smoke --jobs 2 --algos ppo --seeds 1
    python -m benchmarks.sweep --protocol paper --ray-address auto   # an existing Ray cluster
    python -m benchmarks.sweep --protocol small --dry-run       # print the commands only

With Ray (``--ray`` starts a local instance with ``--jobs`` CPUs; ``--ray-address`` joins a
cluster) every run is a Ray task (1 CPU) that starts the same command; the repository and the
Python environment must be at the same paths on every node. The result records come back to this
machine; the TensorBoard files stay where the run ran.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import datetime
import importlib.util
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    atomic_write,
    cpu_model,
    die_with_parent,
    git_commit,
    machine_speed,
    package_versions,
    provenance,
    scalar_events,
    tensorboard_runs,
)
from benchmarks.protocols import (
    PROTOCOLS,
    RENAMED_FLAGS,
    RENAMED_SCRIPTS,
    SB3_FLAGS,
    SB3_RUNNER,
    SCRIPTS,
    VARIANTS,
    Protocol,
    variant_flags,
)

HERE = Path(__file__).resolve().parent

REPO = HERE.parent
RESULTS = HERE / "results"
CSV_FIELDS = (
    "env",
    "algo",
    "variant",
    "seed",
    "eval_index",
    "training_steps",
    "total_env_steps",
    "return",
    "wall_seconds",
    "train_seconds",
    "physics",
)
PACKAGES = (
    "torch",
    "numpy",
    "gymnasium",
    "mujoco",
    "tyro",
    "tensorboard",
    "ray",
    "stable-baselines3",
    "sb3-contrib",
    "cma",  # the cma-es search's (design-space)
    "explorler-optim",
)
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
PRETRAIN = "pretrain"  # the variant name of a protocol's pretraining stage
RAY_RETRIES = 3  # attempts after the first when a Ray worker or node is lost mid-run


@dataclass(frozen=True)
class Run:
    env: str
    algo: str
    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.env}__{self.algo}__{self.variant}__{self.seed}"


# ---------------------------------------------------------------------------------------------
# commands


def split_flags(flags) -> list[tuple[str, ...]]:
    """Group a flat flag list into ('--flag', value...) tuples."""
    groups: list[list[str]] = []
    for token in flags:
        if token.startswith("--") or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    return [tuple(g) for g in groups]


def build_command(protocol: Protocol, run: Run, extra=(), python: str | None = None, out: Path | None = None):
    """The command line of one run (absolute paths; run it from the run's folder).

    With ``out`` (the sweep's folder), a protocol with a pretraining stage continues from that
    stage's checkpoint, and a resumable protocol's run saves its own checkpoint in its folder.
    """
    python = python or sys.executable
    base = [
        "--env-id",
        run.env,
        "--seed",
        str(run.seed),
        "--exp-name",
        f"{run.algo}__{run.variant}",
    ]
    if is_sb3(run.variant):
        kept = [t for g in split_flags(protocol.flags) if g[0] in SB3_FLAGS for t in g]
        kept += [t for g in split_flags(extra) if g[0] in SB3_FLAGS for t in g]
        return [python, str(SB3_RUNNER), "--algo", run.algo, *base, *kept, *VARIANTS[run.variant]]
    if run.variant == PRETRAIN:
        stage = protocol.pretrain
        assert stage is not None, f"protocol {protocol.name!r} has no pretraining stage"
        flags = [*stage.flags, *stage.algo_flags.get(run.algo, ())]
        checkpoint = ["--save-model", "--checkpoint-path", str(checkpoint_path(out, run))] if out else []
        return [python, str(SCRIPTS[run.algo]), *base, "--quiet", *flags, *checkpoint]
    flags = [
        *protocol.flags,
        *protocol.algo_flags.get(run.algo, ()),
        *protocol.task_flags.get((run.env, run.algo), ()),
        *variant_flags(run.variant, run.algo),
    ]
    stages = []
    if out is not None and protocol.pretrains(run.env, run.algo):
        stages += ["--init-from", str(checkpoint_path(out, pretrain_run(run)))]
    if out is not None and protocol.keeps_checkpoints(run.env, run.algo):
        stages += ["--save-model", "--checkpoint-path", str(checkpoint_path(out, run))]
    return [python, str(SCRIPTS[run.algo]), *base, "--quiet", *flags, *extra, *stages]


def is_sb3(variant: str) -> bool:
    """Whether ``variant`` runs stable-baselines3 (``benchmarks/sb3_runner.py``), not a script."""
    return variant == "sb3" or variant.startswith("sb3-")


def pretrain_run(run: Run) -> Run:
    """The pretraining run that ``run`` continues from."""
    return Run(run.env, run.algo, PRETRAIN, run.seed)


def pretrain_runs(protocol: Protocol, runs: list[Run]) -> list[Run]:
    """The pretraining runs that ``runs`` continue from (one per env, algorithm and seed)."""
    stage = {pretrain_run(r) for r in runs if not is_sb3(r.variant) and protocol.pretrains(r.env, r.algo)}
    return sorted(stage, key=lambda r: r.name)


def run_dir_of(out: Path, run: Run) -> Path:
    """Where a run's files live: ``<out>/pretrained/<env>__<algo>__<seed>`` or ``<out>/runs/<name>``."""
    if run.variant == PRETRAIN:
        return out / "pretrained" / f"{run.env}__{run.algo}__{run.seed}"
    return out / "runs" / run.name


def checkpoint_path(out: Path, run: Run) -> Path:
    return run_dir_of(out, run) / CHECKPOINT_FILE


# ---------------------------------------------------------------------------------------------
# TensorBoard -> honest evaluation points


def read_paper_metric(tb_root: Path) -> list[dict]:
    """The paper's metric of one run (``paper/episodic_return``): training step and value per point.

    For an ExploRLer run it is the best candidate's selection score at each search; for a plain run
    a 3-episode deterministic evaluation on the run's fixed start states (``--paper-metric-every``).
    Empty when the run did not log it.
    """
    return [
        {"training_steps": int(e.step), "return": float(e.value)}
        for acc in tensorboard_runs(tb_root)
        for e in scalar_events(acc, "paper/episodic_return")
    ]


def read_evaluations(tb_root: Path) -> list[dict]:
    """Honest evaluations of one run from its TensorBoard events (under ``tb_root``).

    ``eval/episodic_return`` is logged at global_step (training steps); its twin
    ``eval/episodic_return_vs_total_steps`` at total env steps (falls back to
    ``charts/total_env_steps``). ``wall_seconds`` counts from the writer's first event;
    ``train_seconds`` = training steps / ``charts/SPS`` (the scripts' SPS excludes the time of
    honest evaluation, so this is the training cost including any candidate search).
    """
    points = []
    for acc in tensorboard_runs(tb_root):
        evals = scalar_events(acc, "eval/episodic_return")
        if not evals:
            continue
        try:
            t0 = acc.FirstEventTimestamp()
        except ValueError:
            t0 = evals[0].wall_time
        totals = scalar_events(acc, "eval/episodic_return_vs_total_steps")
        charts_total = sorted((e.step, e.value) for e in scalar_events(acc, "charts/total_env_steps"))
        sps = {e.step: e.value for e in scalar_events(acc, "charts/SPS")}
        for i, e in enumerate(evals):
            if len(totals) == len(evals):
                total = totals[i].step
            else:
                before = [v for s, v in charts_total if s <= e.step]
                total = int(before[-1]) if before else e.step
            rate = sps.get(e.step)
            points.append(
                {
                    "eval_index": i,
                    "training_steps": int(e.step),
                    "total_env_steps": int(total),
                    "return": float(e.value),
                    "wall_seconds": round(float(e.wall_time - t0), 3),
                    "train_seconds": round(e.step / rate, 3) if rate else None,
                }
            )
    return points


# ---------------------------------------------------------------------------------------------
# one run (runs in a thread locally, or inside a Ray task on any node)


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "hostname": platform.node(),
        "platform": platform.platform(),
    }


def interpreter_versions(python: str) -> dict:
    """Package versions as seen by the interpreter that runs the command."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # venv: not realpath
        return package_versions(PACKAGES)
    code = (
        "import importlib.metadata as m, json, platform\n"
        f"names = {list(PACKAGES)!r}\n"
        "v = {'python': platform.python_version()}\n"
        "for n in names:\n"
        "    try:\n"
        "        v[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(v))\n"
    )
    probe = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    try:
        return json.loads(probe.stdout)
    except json.JSONDecodeError:
        return {"error": probe.stderr[-500:]}


def execute_run(
    name: str, command: list[str], run_dir: str, timeout: float | None = None, resume: str | None = None
) -> dict:
    """Start one run's process in ``run_dir`` and return its record (not written here).

    With ``resume`` (a checkpoint the run wrote before it was stopped) the run continues from it:
    ``--resume`` is added to the command, and the earlier attempt's logs are kept (the script
    continues its TensorBoard file from the checkpoint's step).
    """
    run_dir_path = Path(run_dir)
    run_dir_path.mkdir(parents=True, exist_ok=True)
    if resume is None:
        shutil.rmtree(run_dir_path / "runs", ignore_errors=True)  # a failed earlier attempt's logs
    started_command = command if resume is None else [*command, "--resume", resume]
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    timed_out = False
    with open(run_dir_path / "log.txt", "w" if resume is None else "a") as log:
        try:
            proc = subprocess.run(
                die_with_parent(started_command),
                cwd=run_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                check=False,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode, timed_out = -9, True
    wall = time.perf_counter() - t0
    record = {
        "name": name,
        "command": shlex.join(command),
        "cwd": str(run_dir),
        "returncode": returncode,
        "timed_out": timed_out,
        "resumed_from": resume,
        "wall_seconds": round(wall, 2),
        "started": started,
        "git_commit": git_commit(),
        "python": command[0],
        "packages": interpreter_versions(command[0]),
        "machine": machine_info(),
    }
    try:
        record["evaluations"] = read_evaluations(run_dir_path / "runs")
        record["paper_metric"] = read_paper_metric(run_dir_path / "runs")
    except Exception as exc:  # a broken event file must not lose the record
        record["evaluations"] = []
        record["read_error"] = repr(exc)
    if returncode != 0:
        text = (run_dir_path / "log.txt").read_text(errors="replace")
        record["log_tail"] = text[-3000:]
    return record


# ---------------------------------------------------------------------------------------------
# sweep


def grid(protocol: Protocol, envs=None, algos=None, variants=None, seeds=None) -> list[Run]:
    envs = envs or protocol.envs
    algos = algos or protocol.algos
    variants = variants or protocol.variants
    seeds = seeds or protocol.seeds
    # seed-major order: a sweep stopped half way has every cell with its first seeds done; within
    # a seed the costliest variant (a search every iteration) starts first, so that the short runs
    # fill the cores at the end
    runs = [
        Run(env, algo, variant, int(seed))
        for seed in seeds
        for env in envs
        for algo in algos
        for variant in variants
        if protocol.runs_task(variant, env, algo)
    ]
    position = {seed: i for i, seed in enumerate(seeds)}
    return sorted(runs, key=lambda r: (position[r.seed], not r.variant.startswith("explorler-paper")))


def load_result(run_dir: Path) -> dict | None:
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def done(run_dir: Path, command: list[str] | None = None) -> bool:
    """The run succeeded (and, given ``command``, with the same arguments: script and flags)."""
    record = load_result(run_dir)
    ok = record is not None and record.get("returncode") == 0 and bool(record.get("evaluations"))
    if ok and command is not None:
        script, *flags = shlex.split(record["command"])[1:]
        recorded = without_checkpointing([renamed_script(script), *(RENAMED_FLAGS.get(t, t) for t in flags)])
        wanted = without_checkpointing(command[1:])
        return len(recorded) == len(wanted) and all(
            same_token(old, new, checkout_of(recorded[0])) for old, new in zip(recorded, wanted)
        )
    return ok


def finished_elsewhere(protocol: Protocol, run: Run, command: list[str]) -> Path | None:
    """The folder of ``run`` finished with the same command in a protocol ``protocol`` reuses, if any.

    Only a run made on this machine's physics setup counts (``physics``: the package versions and the
    CPU model): the same seed gives other returns on another CPU model, so such a run is a new sample,
    not this one. A run passed over for that reason is said on stderr.
    """
    for name in protocol.reuse_from:
        source = run_dir_of(RESULTS / name, run)
        if done(source, command):
            made_on, here = physics(load_result(source) or {}), this_setup()
            if made_on == here:
                return source
            print(f"{run.name}: not taken from {name}, made on {made_on}; here: {here}", file=sys.stderr)
    return None


def this_setup() -> str:
    """This machine's physics setup, written as ``physics`` writes a run's."""
    return physics({"packages": package_versions(PHYSICS_PACKAGES), "machine": machine_info()})


def adopt(source: Path, run_dir: Path) -> None:
    """Copy a finished run's folder (less its checkpoint) to ``run_dir``, replacing a stopped run there.

    The copy is made beside ``run_dir`` and renamed into place, so a crash leaves no half-copied run.
    """
    staging = run_dir.with_name(run_dir.name + ".adopting")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(CHECKPOINT_FILE))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)


def without_checkpointing(tokens: list[str]) -> list[str]:
    """``tokens`` less ``--save-model`` and ``--checkpoint-path PATH``: where a run keeps its resume
    checkpoint does not change its results, so a run made in another protocol's folder counts."""
    kept, skip = [], False
    for token in tokens:
        if skip:
            skip = False
        elif token == "--checkpoint-path":
            skip = True
        elif token != "--save-model":
            kept.append(token)
    return kept


def renamed_script(script: str) -> str:
    """A recorded script path under the script's present name (``RENAMED_SCRIPTS``).

    Example:
        >>> renamed_script("/x/single_file_baselines/ppo_continuous_action.py")
        '/x/single_file_baselines/ppo_continuous_action_research.py'
    """
    for old, new in RENAMED_SCRIPTS.items():
        if script.endswith(old):
            return script[: -len(old)] + new
    return script


def checkout_of(script: str) -> str | None:
    """The repository folder a recorded script path lies in, or None if it is not one of ours."""
    for ours in (*SCRIPTS.values(), SB3_RUNNER):
        relative = str(ours.relative_to(REPO))
        if script.endswith(relative):
            return script[: -len(relative)]
    return None


def same_token(old: str, new: str, old_checkout: str | None) -> bool:
    """Equal, or equal once a path in the recorded checkout is moved to this one.

    A sweep started from another clone or worktree of the repository must not re-run finished runs
    only because the scripts' absolute paths changed.
    """
    if old == new:
        return True
    if old_checkout is None or not old.startswith(old_checkout):
        return False
    return str(REPO / old[len(old_checkout) :]) == new


def sb3_available(python: str) -> bool:
    if python == sys.executable:
        return all(importlib.util.find_spec(m) for m in ("stable_baselines3", "sb3_contrib"))
    probe = subprocess.run(
        [python, "-c", "import stable_baselines3, sb3_contrib"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _run_spans(out: Path, names) -> list[tuple[float, float]]:
    spans = []
    for name in names:
        record = load_result(out / "runs" / name)
        if record and record.get("started") and record.get("wall_seconds") is not None:
            start = datetime.datetime.fromisoformat(record["started"]).timestamp()
            spans.append((start, start + float(record["wall_seconds"])))
    return spans


def wall_span(out: Path, names) -> float | None:
    """Seconds from the first run's start to the last run's end (pauses of a resumed sweep count)."""
    spans = _run_spans(out, names)
    if not spans:
        return None
    return max(end for _, end in spans) - min(start for start, _ in spans)


def run_seconds_total(out: Path, names) -> float | None:
    """The runs' wall seconds added up: the machine time the grid needs, one core per run."""
    spans = _run_spans(out, names)
    return sum(end - start for start, end in spans) if spans else None


# What a run's numbers depend on besides the code and the seed: the simulator, the numerics and the
# CPU (the same code, packages and seed gave other returns on an Intel Xeon than on an AMD EPYC).
PHYSICS_PACKAGES = ("mujoco", "gymnasium", "torch", "numpy")
CONSTRAINTS = HERE / "constraints.txt"


def physics(record: dict) -> str:
    """A run's physics and numerics setup, e.g. ``mujoco 4.0.0, gymnasium 1.4.0, ..., AMD EPYC``."""
    packages = record.get("packages", {})
    versions = [f"{name} {packages.get(name, '?')}" for name in PHYSICS_PACKAGES]
    return ", ".join([*versions, record.get("machine", {}).get("cpu", "?")])


def pinned_versions(path: Path | None = None) -> dict[str, str]:
    """The ``name==version`` lines of the benchmarks' constraints file (default: ``CONSTRAINTS``)."""
    pins = {}
    for line in (path or CONSTRAINTS).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def unpinned(python: str) -> list[str]:
    """The pinned packages that ``python`` has at another version (or lacks), as 'name X (pinned Y)'."""
    installed = interpreter_versions(python)
    wrong = []
    for name, version in pinned_versions().items():
        have = installed.get(name)
        if have is None or have.split("+", 1)[0] != version:
            wrong.append(f"{name} {have or 'missing'} (pinned {version})")
    return wrong


def collect(out: Path) -> list[dict]:
    """All evaluation rows of the finished runs under ``out/runs`` (CSV order)."""
    rows = []
    for run_dir in sorted((out / "runs").glob("*__*__*__*")):
        record = load_result(run_dir)
        if record is None or record.get("returncode") != 0:
            continue
        env, algo, variant, seed = run_dir.name.split("__")
        setup = physics(record)
        for point in record.get("evaluations", []):
            rows.append(
                {"env": env, "algo": algo, "variant": variant, "seed": int(seed), **point, "physics": setup}
            )
    rows.sort(key=lambda r: (r["env"], r["algo"], r["variant"], r["seed"], r["eval_index"]))
    return rows


def write_csv(out: Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    path = out / "evaluations.csv"
    atomic_write(path, buffer.getvalue())
    return path


def run_local(todo, jobs, timeout, on_done):
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(execute_run, run.name, command, str(run_dir), timeout, resume): (run, run_dir)
            for run, command, run_dir, resume in todo
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                run, run_dir = futures[future]
                on_done(run, run_dir, future.result())
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise


def run_ray(todo, jobs, timeout, address, on_done):
    try:
        import ray
    except ImportError as exc:
        raise SystemExit("--ray needs Ray: pip install 'explorler-optim[ray]'") from exc
    pythonpath = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")])
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath.rstrip(os.pathsep)}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=jobs, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    try:
        # a task whose worker or node is lost is started again (Ray retries system failures only,
        # not a run that failed by itself); the new attempt resumes from the run's checkpoint
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(_ray_execute_run)
        pending = {
            task.remote(run.name, command, str(run_dir), timeout, resume_point(command)): (run, run_dir)
            for run, command, run_dir, _ in todo
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                run, run_dir = pending.pop(ref)
                on_done(run, run_dir, ray.get(ref))
    finally:
        ray.shutdown()


def _ray_execute_run(name, command, run_dir, timeout, checkpoint):
    # imported on the worker so that this task does not depend on how the driver imported us
    from benchmarks import sweep as worker_sweep

    # decided here, not when the grid was planned: a retried attempt continues from the checkpoint
    # that the lost attempt wrote (the run's folder must be on storage every node sees)
    resume = checkpoint if checkpoint is not None and Path(checkpoint).exists() else None
    return worker_sweep.execute_run(name, command, run_dir, timeout, resume)


def resume_point(command: list[str]) -> str | None:
    """The checkpoint a run keeps (its ``--checkpoint-path`` when it saves one), else None."""
    if "--save-model" not in command or "--checkpoint-path" not in command:
        return None
    return command[command.index("--checkpoint-path") + 1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<protocol>")
    p.add_argument("--envs", nargs="+", help="subset/override of the protocol's envs")
    p.add_argument("--algos", nargs="+", choices=sorted(SCRIPTS))
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument(
        "--extra",
        default="",
        help="extra flags for every run (last, so they win), e.g. --extra='--racing'",
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs")
    p.add_argument("--ray", action="store_true", help="run as tasks of a local Ray instance")
    p.add_argument("--ray-address", default=None, help="run on an existing Ray cluster")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run (default none)")
    p.add_argument("--sb3-python", default=sys.executable, help="interpreter for sb3 runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument("--collect-only", action="store_true", help="only rebuild the CSV")
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="run although the environment differs from benchmarks/constraints.txt",
    )
    return p.parse_args(argv)


def plan(protocol: Protocol, runs: list[Run], out: Path, args, extra) -> tuple[list, int]:
    """The runs still to do as (run, command, run_dir, resume checkpoint or None), and how many are done."""
    todo, skipped = [], 0
    for run in runs:
        run_dir = run_dir_of(out, run)
        python = args.sb3_python if is_sb3(run.variant) else sys.executable
        command = build_command(protocol, run, extra, python, out)
        if args.dry_run:
            print(shlex.join(command))
            continue
        if args.collect_only or done(run_dir, command):
            skipped += 1
            continue
        source = finished_elsewhere(protocol, run, command)
        if source is not None:
            adopt(source, run_dir)
            print(f"{run.name}: taken from {source.parent.parent}", file=sys.stderr)
            skipped += 1
            continue
        if done(run_dir):
            print(f"{run.name}: flags changed since its result; running it again", file=sys.stderr)
        elif protocol.pretrains(run.env, run.algo) and run.variant != PRETRAIN and not is_sb3(run.variant):
            if not done(run_dir_of(out, pretrain_run(run))):
                print(f"{run.name}: skipped, its pretraining run did not finish", file=sys.stderr)
                continue
        checkpoint = checkpoint_path(out, run)
        resumable = protocol.keeps_checkpoints(run.env, run.algo) or run.variant == PRETRAIN
        resume = str(checkpoint) if resumable and checkpoint.exists() and not done(run_dir) else None
        todo.append((run, command, run_dir, resume))
    return todo, skipped


def execute(todo: list, args, protocol: Protocol, out: Path, skipped: int, label: str) -> list[str]:
    """Run ``todo`` (locally or on Ray) with a progress bar; write each run's record; return the failed."""
    from tqdm import tqdm

    failed: list[str] = []
    mode = f"ray {args.ray_address}" if args.ray_address else "ray" if args.ray else "local"
    print(
        f"{label}: {len(todo)} runs to do, {skipped} done already; {args.jobs} jobs ({mode}); output {out}",
        file=sys.stderr,
    )
    resumed = [run.name for run, _, _, resume in todo if resume]
    if resumed:
        print(f"resuming from their checkpoints: {', '.join(resumed)}", file=sys.stderr)
    bar = tqdm(total=len(todo), unit="run", dynamic_ncols=True, desc=label)

    def on_done(run, run_dir, record):
        atomic_write(run_dir / RESULT_FILE, json.dumps(record, indent=2) + "\n")
        if record["returncode"] != 0 or not record["evaluations"]:
            failed.append(run.name)
            bar.write(f"FAILED {run.name} (rc={record['returncode']}); see {run_dir}/log.txt")
        elif run.variant != PRETRAIN:  # a finished run's checkpoint only served to resume it
            (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
        bar.set_postfix(failed=len(failed), last=run.name, refresh=False)
        bar.update(1)

    try:
        if args.ray or args.ray_address:
            run_ray(todo, args.jobs, args.timeout, args.ray_address, on_done)
        else:
            run_local(todo, args.jobs, args.timeout, on_done)
    finally:
        bar.close()
    return failed


def available_runs(runs: list[Run], args) -> list[Run]:
    """``runs`` less those whose script or (for sb3) packages are missing, each said once."""
    missing = sorted({r.algo for r in runs if not is_sb3(r.variant) and not SCRIPTS[r.algo].exists()})
    for algo in missing:
        print(f"skipping {algo}: {SCRIPTS[algo]} does not exist", file=sys.stderr)
    runs = [r for r in runs if is_sb3(r.variant) or r.algo not in missing]
    if any(is_sb3(r.variant) for r in runs) and not sb3_available(args.sb3_python):
        print(
            f"skipping sb3 runs: stable-baselines3 and sb3-contrib are not importable by "
            f"{args.sb3_python} (install them in the benchmark environment, or --sb3-python)",
            file=sys.stderr,
        )
        runs = [r for r in runs if not is_sb3(r.variant)]
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    out = (args.out or RESULTS / protocol.name).resolve()
    extra = shlex.split(args.extra)
    runs = available_runs(grid(protocol, args.envs, args.algos, args.variants, args.seeds), args)
    subset = any(x is not None for x in (args.envs, args.algos, args.variants, args.seeds))
    # a pretraining stage runs first: its checkpoints are where every variant starts
    stages = [runs]
    if protocol.pretrain is not None:
        stages.insert(0, pretrain_runs(protocol, runs))

    checked = protocol.pinned and not (args.dry_run or args.collect_only)
    wrong = unpinned(sys.executable) if checked else []
    if wrong and not args.allow_unpinned:
        print(
            "the benchmark environment differs from benchmarks/constraints.txt: " + "; ".join(wrong) + ". "
            'Install it with `pip install torch==2.13.0 -c benchmarks/constraints.txt -e ".[scripts]"` '
            "(runs under other versions are not comparable with the committed ones), or pass "
            "--allow-unpinned to run anyway (the report then says the physics differ)",
            file=sys.stderr,
        )
        return 2
    failed: list[str] = []
    speed = None
    for stage in stages:
        todo, skipped = plan(protocol, stage, out, args, extra)
        if args.dry_run or not todo:
            continue
        if protocol.ray and not (args.ray or args.ray_address):
            print(f"note: protocol {protocol.name!r} is meant for a Ray cluster", file=sys.stderr)
        if speed is None:
            speed = machine_speed()
            if speed is not None:
                rate = f"{speed['steps_per_second']:,.0f}"
                say = f"machine speed: {speed['env_id']} raw at {rate} steps/s (one process)"
                print(say, file=sys.stderr)
        label = protocol.name if stage is stages[-1] else f"{protocol.name} (pretraining)"
        failed += execute(todo, args, protocol, out, skipped, label)
    if args.dry_run:
        return 0
    return summarize(protocol, runs, out, args, extra, subset, speed, failed)


def collect_paper_metric(out: Path) -> list[dict]:
    """The paper's metric of every finished run under ``out/runs`` (read from its TensorBoard files
    when its record predates ``paper_metric``); rows of env, algo, variant, seed, step and value."""
    rows = []
    for run_dir in sorted((out / "runs").glob("*__*__*__*")):
        record = load_result(run_dir)
        if record is None or record.get("returncode") != 0:
            continue
        points = record.get("paper_metric")
        if points is None and (run_dir / "runs").exists():
            points = read_paper_metric(run_dir / "runs")
        env, algo, variant, seed = run_dir.name.split("__")
        rows += [{"env": env, "algo": algo, "variant": variant, "seed": int(seed), **p} for p in points or []]
    return rows


def summarize(protocol, runs, out, args, extra, subset, speed, failed) -> int:
    """Rebuild ``evaluations.csv`` and ``sweep.json`` from every result file; print where they are."""
    rows = collect(out)
    path = write_csv(out, rows)
    paper_rows = collect_paper_metric(out)
    if paper_rows:  # the protocol logs the paper's metric too (`--paper-metric-every`)
        fields = ("env", "algo", "variant", "seed", "training_steps", "return")
        lines = [",".join(fields)] + [",".join(str(r[f]) for f in fields) for r in paper_rows]
        atomic_write(out / "paper_metric.csv", "\n".join(lines) + "\n")
    summary = {
        "protocol": protocol.name,
        "grid": {
            "envs": sorted({r.env for r in runs}),
            "algos": sorted({r.algo for r in runs}),
            "variants": sorted({r.variant for r in runs}),
            "seeds": sorted({r.seed for r in runs}),
        },
        "flags": list(protocol.flags),
        "extra": extra,
        "runs": {r.name: ("done" if done(out / "runs" / r.name) else "failed") for r in runs},
        "wall_span_seconds": wall_span(out, [r.name for r in runs]),
        "run_seconds_total": run_seconds_total(out, [r.name for r in runs]),
        # the budget is the whole protocol's: a subset of its grid is not held to it
        "budget_minutes": None if subset else protocol.budget_minutes,
        "machine_speed": speed,
        "provenance": provenance(),
    }
    if protocol.pretrain is not None:
        pretrained = pretrain_runs(protocol, runs)
        summary["pretrained"] = {
            r.name: ("done" if done(run_dir_of(out, r)) else "failed") for r in pretrained
        }
        summary["pretrain_run_seconds_total"] = sum(
            (load_result(run_dir_of(out, r)) or {}).get("wall_seconds") or 0.0 for r in pretrained
        )
    previous = out / "sweep.json"
    if previous.exists():
        with contextlib.suppress(json.JSONDecodeError):
            before = json.loads(previous.read_text())
            if speed is None:  # nothing ran now: the speed stays that of the invocation that ran runs
                summary["machine_speed"] = before.get("machine_speed")
            if args.collect_only and "provenance" in before:
                # re-collecting does not make this the sweep's command: keep the one that ran the runs
                summary["collected_by"] = summary["provenance"]
                summary["provenance"] = before["provenance"]
    atomic_write(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    span = summary["wall_span_seconds"]
    if span is not None:
        budget = (
            f" (the protocol is sized to {summary['budget_minutes']:.0f})"
            if summary["budget_minutes"]
            else ""
        )
        print(f"runs span {span / 60:.1f} minutes from first start to last end{budget}", file=sys.stderr)
    print(
        f"{len(rows)} evaluation rows from {sum(v == 'done' for v in summary['runs'].values())}"
        f"/{len(runs)} runs -> {path}" + (f"; {len(failed)} failed" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
