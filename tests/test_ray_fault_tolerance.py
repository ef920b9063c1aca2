"""A sweep on a Ray cluster survives losing a node mid-run (issue 30).

A head and a worker are started with ``ray start`` on this machine (one CPU each, so each runs one of
``smoke-resumable``'s two runs). Once the run on the worker has written a checkpoint, the worker
node is killed: its raylet and Ray workers, not the run itself, which must end with its Ray worker.
The sweep, started once, must finish both runs with no re-run command; the lost run is retried by
Ray, resumes from its checkpoint, and ends with the same honest evaluations as the same run made
without a stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import sweep
from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = "smoke-resumable"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc to find the node's processes"
    ),
]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry.name)] = (parent, cmdline)
    return found


def descendants(root: int, table: dict[int, tuple[int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def raylets(marker: str) -> set[int]:
    return {pid for pid, (_, cmd) in processes().items() if "raylet" in cmd.split(" ")[0] and marker in cmd}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, timeout: float = HANG_GUARD_S, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def ended(pid: int) -> bool:
    """Whether ``pid`` is gone (or a zombie: ended, not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def cluster():
    """A Ray head and one worker node on this machine, started with ``ray start``; torn down after."""
    pytest.importorskip("ray", reason="Ray is optional (pip install -e '.[ray]')")
    ray = str(Path(sys.executable).parent / "ray")
    # every process of this cluster carries its temp dir in its command line: that is how the test
    # finds them, and stops only them (never another Ray on this machine)
    temp = tempfile.mkdtemp(prefix="rayft", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    # Ray keeps an auth token in ~/.ray (some releases write one when a local instance starts, and a
    # head then asks for it): the cluster, its driver and its workers get a home of their own
    env = {
        **os.environ,
        "HOME": tempfile.mkdtemp(prefix="rayft-home"),
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={temp}"]
    start = dict(env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False)
    try:
        head = subprocess.run(
            [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], **start
        )
        assert head.returncode == 0, head.stdout + head.stderr
        head_raylets = raylets(temp)
        worker = subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], **start)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        worker_raylet = wait_for(lambda: raylets(temp) - head_raylets, "the worker node's raylet", 120).pop()
        yield f"127.0.0.1:{port}", worker_raylet, env
    finally:
        table = processes()
        kill([pid for pid, (_, cmd) in table.items() if temp in cmd])


def test_a_lost_worker_node_is_retried_and_the_run_resumes_from_its_checkpoint(cluster, tmp_path):
    address, worker_raylet, env = cluster
    out = tmp_path / "ray"
    sweep_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.sweep",
            "--protocol",
            PROTOCOL,
            "--out",
            str(out),
            "--ray-address",
            address,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the run on the worker node, once it has written a checkpoint
        def run_on_worker_with_checkpoint():
            table = processes()
            for pid in descendants(worker_raylet, table):
                cmd = table[pid][1].split(" ")
                if "ppo_continuous_action" in " ".join(cmd) and "--checkpoint-path" in cmd:
                    checkpoint = Path(cmd[cmd.index("--checkpoint-path") + 1])
                    if checkpoint.exists():
                        return pid, cmd[cmd.index("--seed") + 1], checkpoint
            return None

        run_pid, seed, checkpoint = wait_for(
            run_on_worker_with_checkpoint, "a checkpoint of the worker's run"
        )
        table = processes()
        node = [worker_raylet, *descendants(worker_raylet, table)]
        kill(pid for pid in node if pid != run_pid)  # the node's Ray processes; the run must follow
        wait_for(lambda: ended(run_pid), "the run to end with its Ray worker", 60)
        _, stderr = sweep_proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
    assert sweep_proc.returncode == 0, stderr[-3000:]

    lost = sweep.load_result(out / "runs" / f"Hopper-v5__ppo__baseline__{seed}")
    assert lost is not None and lost["returncode"] == 0
    assert lost["resumed_from"] == str(checkpoint), "the retried run started over instead of resuming"
    for s in (1, 2):
        assert sweep.done(out / "runs" / f"Hopper-v5__ppo__baseline__{s}")

    # nothing lost: the stopped-and-resumed run ends exactly as the same run made in one go
    reference = tmp_path / "reference"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sweep", "--protocol", PROTOCOL, "--out", str(reference),
         "--seeds", seed, "--jobs", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    uninterrupted = sweep.load_result(reference / "runs" / f"Hopper-v5__ppo__baseline__{seed}")
    assert uninterrupted is not None
    steps = [(e["training_steps"], e["return"]) for e in lost["evaluations"]]
    assert len(steps) == 40
    assert steps == [(e["training_steps"], e["return"]) for e in uninterrupted["evaluations"]]
    assert json.loads((out / "sweep.json").read_text())["runs"] == {
        f"Hopper-v5__ppo__baseline__{s}": "done" for s in (1, 2)
    }


def test_a_run_ends_when_the_process_that_started_it_is_killed(tmp_path):
    """The guard behind the test above, alone: a sweep or Ray worker killed leaves no orphan run."""
    marker = tmp_path / "child.pid"
    child = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    starter = (
        "import subprocess, sys; from benchmarks.common import die_with_parent; "
        f"subprocess.run(die_with_parent([sys.executable, '-c', {child!r}]))"
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], cwd=ROOT)
    try:
        pid = int(wait_for(lambda: marker.exists() and marker.read_text(), "the child to start", 120))
        parent.kill()
        parent.wait(timeout=60)
        wait_for(lambda: ended(pid), "the child to end with its parent", 60)
    finally:
        if parent.poll() is None:
            parent.kill()
