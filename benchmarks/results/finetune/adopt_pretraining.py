"""How the finetune pretraining runs made outside the sweep (/work/pretrain, 2026-11-30) were adopted.

They ran with the pretraining stage's exact script flags from a frozen checkout of commit 0f3b51b, before
the stage existed. Run from the repository root:
    PYTHONPATH=. python benchmarks/results/finetune/adopt_pretraining.py
"""

import json
import shutil
import sys
from pathlib import Path

from benchmarks import protocols, sweep
from benchmarks.common import atomic_write, package_versions

out = Path("benchmarks/results/finetune").resolve()
proto = protocols.PROTOCOLS["finetune"]
for src in sorted(Path("/work/pretrain").glob("*__*__*")):
    env, algo, seed = src.name.split("__")
    run = sweep.Run(env, algo, sweep.PRETRAIN, int(seed))
    dst = sweep.run_dir_of(out, run)
    if sweep.done(dst) or not (src / "checkpoint.pt").exists():
        continue
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "checkpoint.pt", dst / "checkpoint.pt")
    shutil.rmtree(dst / "runs", ignore_errors=True)
    shutil.copytree(src / "runs", dst / "runs")
    shutil.copy2(src / "log.txt", dst / "log.txt")
    actual = (src / "command.txt").read_text().splitlines()
    if not (src / "done").exists():
        print("in progress:", src.name)
        continue
    command = sweep.build_command(proto, run, python=sys.executable, out=out)
    record = {
        "name": run.name,
        "command": sweep.shlex.join(command),
        "cwd": str(dst),
        "returncode": 0,
        "timed_out": False,
        "resumed_from": None,
        "wall_seconds": float((src / "done").read_text().split()[0])
        if (src / "done").read_text().split()[0].isdigit()
        else None,
        "started": None,
        "git_commit": actual[1][:7],
        "packages": package_versions(sweep.PACKAGES),
        "machine": sweep.machine_info(),
        "evaluations": sweep.read_evaluations(dst / "runs"),
        "note": "run outside the sweep (started before the sweep's pretraining stage existed) with the same "
        "script flags from a frozen checkout of commit " + actual[1][:7] + "; actual command: " + actual[0],
    }
    atomic_write(dst / sweep.RESULT_FILE, json.dumps(record, indent=2) + "\n")
    print("adopted:", src.name, len(record["evaluations"]), "evaluations")
