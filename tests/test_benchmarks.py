"""Tests of the benchmark machinery (issue 6): sweep (local, resumable, Ray), report statistics."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common, protocols, report, sweep
from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]

SCRIPT_ALGOS = ["ppo", "trpo"]
HAS_MPL = importlib.util.find_spec("matplotlib") is not None


def run_cli(script, *args, timeout=HANG_GUARD_S):
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{Path(script).stem}", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------------------------------------
# sweep


def test_commands_put_variant_flags_last_and_sb3_gets_budget_flags_only():
    proto = protocols.PROTOCOLS["small"]
    cmd = sweep.build_command(proto, sweep.Run("Hopper-v5", "ppo", "explorler-paper", 2))
    assert cmd[1] == str(protocols.SCRIPTS["ppo"])
    assert cmd[-3:] == ["--explore-every", "1", "--no-count-eval-steps"]
    assert cmd[cmd.index("--seed") + 1] == "2" and "--quiet" in cmd
    base = sweep.build_command(proto, sweep.Run("Hopper-v5", "trpo", "baseline", 1))
    assert base[1] == str(protocols.SCRIPTS["trpo"]) and base[-1] == "--no-explorler"
    paper = protocols.PROTOCOLS["paper"]
    sb3 = sweep.build_command(paper, sweep.Run("Ant-v5", "trpo", "sb3", 1))
    assert sb3[1] == str(protocols.SB3_RUNNER) and sb3[sb3.index("--algo") + 1] == "trpo"
    assert "--total-timesteps" in sb3 and "--explore-start-step" not in sb3
    assert "--explore-start-step" in sweep.build_command(paper, sweep.Run("Ant-v5", "ppo", "explorler", 1))
    trpo_paper = sweep.build_command(proto, sweep.Run("Hopper-v5", "trpo", "explorler-paper", 1))
    assert trpo_paper[-3:] == ["--explore-every", "10", "--no-count-eval-steps"]  # the paper's TRPO schedule
    # the full paper variant spells out the authors' scoring, so it does not move with the defaults
    full = sweep.build_command(paper, sweep.Run("Hopper-v5", "ppo", "explorler-paper-full", 1))
    tail = full[full.index("--explore-every") :]
    for flag, value in [("--explore-every", "1"), ("--eval-episodes", "3"), ("--esa-snapshot-every", "20")]:
        assert tail[tail.index(flag) + 1] == value
    assert "--no-include-incumbent" in tail and "--no-count-eval-steps" in tail
    trpo_full = sweep.build_command(paper, sweep.Run("Hopper-v5", "trpo", "explorler-paper-full", 1))
    assert trpo_full[trpo_full.index("--explore-every") + 1] == "10"


def test_protocol_grids():
    small = protocols.PROTOCOLS["small"]
    assert set(small.envs) == {"Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"}
    assert set(small.variants) == {"baseline", "explorler", "explorler-paper"}
    assert len(small.seeds) >= 3 and protocols.SMALL_STEPS >= 200_000
    assert len(sweep.grid(small)) == 3 * 2 * 3 * len(small.seeds)
    paper = protocols.PROTOCOLS["paper"]
    assert len(paper.envs) == 5 and len(paper.seeds) >= 5


def test_finetune_grid_shares_one_pretraining_run_per_task_and_seed(tmp_path):
    finetune = protocols.PROTOCOLS["finetune"]
    runs = sweep.grid(finetune)
    tasks = {(r.env, r.algo) for r in runs}
    assert tasks == {("Hopper-v5", "ppo"), ("Hopper-v5", "trpo"), ("Walker2d-v5", "ppo")}
    full = {(r.env, r.algo) for r in runs if r.variant == "explorler-paper-full"}
    assert full == {("Hopper-v5", "ppo")}
    assert len(runs) == 3 * 3 * 3 + 3  # three variants on three tasks, the authors' scoring on one
    pretrained = {sweep.pretrain_run(r) for r in runs}
    assert len(pretrained) == 3 * 3  # one per task and seed, whatever the variants
    pretrain = sweep.build_command(finetune, sweep.Run("Hopper-v5", "ppo", sweep.PRETRAIN, 2), out=tmp_path)
    assert "--no-explorler" in pretrain and pretrain[pretrain.index("--total-timesteps") + 1] == "1000000"
    checkpoint = pretrain[pretrain.index("--checkpoint-path") + 1]
    assert checkpoint == str(tmp_path / "pretrained" / "Hopper-v5__ppo__2" / "checkpoint.pt")
    for variant in finetune.variants:
        run = sweep.Run("Hopper-v5", "ppo", variant, 2)
        command = sweep.build_command(finetune, run, out=tmp_path)
        assert command[command.index("--init-from") + 1] == checkpoint  # every variant forks from it
        own = command[command.index("--checkpoint-path") + 1]
        assert own == str(tmp_path / "runs" / run.name / "checkpoint.pt")
    full_cmd = sweep.build_command(finetune, sweep.Run("Hopper-v5", "ppo", "explorler-paper-full", 1))
    assert "--fixed-candidate-starts" in full_cmd  # the authors' scoring, only in the variant that copies it
    assert "--fixed-candidate-starts" not in sweep.build_command(
        finetune, sweep.Run("Hopper-v5", "ppo", "explorler", 1)
    )


def test_headline_pretrains_the_fine_tuning_tasks_and_runs_bipedal_walker_from_scratch(tmp_path):
    headline = protocols.PROTOCOLS["headline"]
    runs = sweep.grid(headline)
    assert {(r.env, r.algo) for r in runs} == {
        ("Humanoid-v5", "ppo"), ("Ant-v5", "ppo"), ("Hopper-v5", "trpo"), ("BipedalWalker-v3", "ppo")
    }  # fmt: skip
    assert len(runs) == 4 * 3 * 10 and headline.seeds == tuple(range(1, 11))
    pretrained = sweep.pretrain_runs(headline, runs)
    assert len(pretrained) == 3 * 10 and not any(r.env == "BipedalWalker-v3" for r in pretrained)
    humanoid = sweep.build_command(headline, sweep.Run("Humanoid-v5", "ppo", "explorler", 4), out=tmp_path)
    assert humanoid[humanoid.index("--init-from") + 1].endswith(
        "pretrained/Humanoid-v5__ppo__4/checkpoint.pt"
    )
    assert humanoid[humanoid.index("--paper-metric-every") + 1] == "1"  # both metrics for every run
    for variant in headline.variants:
        walker = sweep.build_command(headline, sweep.Run("BipedalWalker-v3", "ppo", variant, 4), out=tmp_path)
        # from scratch; no checkpoint: Box2D's world cannot be saved for an exact resume
        assert "--init-from" not in walker and "--checkpoint-path" not in walker
        last = {flag: walker[i + 1] for i, flag in enumerate(walker[:-1]) if flag.startswith("--")}
        assert (
            last["--total-timesteps"] == "1000000" and last["--num-envs"] == "4"
        )  # the task's own flags win
    paper = sweep.build_command(headline, sweep.Run("BipedalWalker-v3", "ppo", "explorler-paper", 1))
    assert paper[-3:] == ["--explore-every", "1", "--no-count-eval-steps"]  # the variant's flags come last
    # a BipedalWalker run does not wait for a pretraining stage it does not have
    args = sweep.parse_args(["--protocol", "headline"])
    todo, _ = sweep.plan(headline, [sweep.Run("BipedalWalker-v3", "ppo", "baseline", 1)], tmp_path, args, [])
    assert len(todo) == 1


def test_no_protocol_asks_a_box2d_run_for_a_checkpoint(tmp_path):
    # the scripts refuse --save-model where exact resume cannot save the env (test_box2d.py)
    for protocol in protocols.ALL:
        for run in sweep.grid(protocol):
            if run.env in protocols.UNRESUMABLE_ENVS and not sweep.is_sb3(run.variant):
                command = sweep.build_command(protocol, run, out=tmp_path)
                assert "--save-model" not in command, (protocol.name, run.name)


def test_plan_resumes_a_stopped_run_and_waits_for_its_pretraining(tmp_path):
    finetune = protocols.PROTOCOLS["finetune"]
    args = sweep.parse_args(["--protocol", "finetune"])
    pretrain = sweep.Run("Hopper-v5", "ppo", sweep.PRETRAIN, 1)
    run = sweep.Run("Hopper-v5", "ppo", "baseline", 1)
    todo, _ = sweep.plan(finetune, [run], tmp_path, args, [])
    assert todo == []  # its pretraining has not finished: nothing to fork from
    todo, _ = sweep.plan(finetune, [pretrain], tmp_path, args, [])
    assert [entry[0] for entry in todo] == [pretrain] and todo[0][3] is None  # a fresh start
    sweep.checkpoint_path(tmp_path, pretrain).parent.mkdir(parents=True)
    sweep.checkpoint_path(tmp_path, pretrain).write_bytes(b"stopped half way")
    todo, _ = sweep.plan(finetune, [pretrain], tmp_path, args, [])
    assert todo[0][3] == str(sweep.checkpoint_path(tmp_path, pretrain))  # resumes from its checkpoint
    command = todo[0][1]
    record = {"returncode": 0, "evaluations": [{"return": 1.0}], "command": sweep.shlex.join(command)}
    (sweep.run_dir_of(tmp_path, pretrain) / sweep.RESULT_FILE).write_text(json.dumps(record))
    todo, skipped = sweep.plan(finetune, [pretrain, run], tmp_path, args, [])
    assert [entry[0] for entry in todo] == [run] and skipped == 1 and todo[0][3] is None
    for proto in protocols.PROTOCOLS.values():
        assert set(proto.variants) <= set(protocols.VARIANTS)


def test_a_finished_run_recorded_from_another_checkout_is_not_run_again(tmp_path):
    finetune = protocols.PROTOCOLS["finetune"]
    args = sweep.parse_args(["--protocol", "finetune"])
    pretrain = sweep.Run("Hopper-v5", "ppo", sweep.PRETRAIN, 1)
    command = sweep.build_command(finetune, pretrain, [], sys.executable, tmp_path)
    elsewhere = [token.replace(str(sweep.REPO), "/elsewhere/checkout") for token in command]
    assert elsewhere[1] != command[1]
    run_dir = sweep.run_dir_of(tmp_path, pretrain)
    run_dir.mkdir(parents=True)
    record = {"returncode": 0, "evaluations": [{"return": 1.0}], "command": sweep.shlex.join(elsewhere)}
    (run_dir / sweep.RESULT_FILE).write_text(json.dumps(record))
    todo, skipped = sweep.plan(finetune, [pretrain], tmp_path, args, [])
    assert todo == [] and skipped == 1
    changed = [*elsewhere, "--learning-rate", "1e-4"]
    (run_dir / sweep.RESULT_FILE).write_text(json.dumps({**record, "command": sweep.shlex.join(changed)}))
    todo, skipped = sweep.plan(finetune, [pretrain], tmp_path, args, [])
    assert [entry[0] for entry in todo] == [pretrain] and skipped == 0  # flags changed: run again


def test_a_run_finished_in_a_reused_protocol_is_copied_not_run_again(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "RESULTS", tmp_path / "results")
    schedule = protocols.PROTOCOLS["free-schedule"]
    verdict = protocols.PROTOCOLS["verdict"]
    assert schedule.reuse_from == ("verdict",)
    args = sweep.parse_args(["--protocol", "free-schedule"])
    out = tmp_path / "results" / "free-schedule"
    run = sweep.Run("Hopper-v5", "ppo", "baseline", 1)
    other = sweep.Run("Hopper-v5", "ppo", "explorler-surrogate", 1)
    source = sweep.run_dir_of(tmp_path / "results" / "verdict", run)
    (source / "runs").mkdir(parents=True)
    (source / "runs" / "events").write_text("tensorboard")
    (source / sweep.CHECKPOINT_FILE).write_bytes(b"not needed by a finished run")
    command = sweep.build_command(verdict, run, [], sys.executable, tmp_path / "results" / "verdict")
    here = {"packages": sweep.package_versions(sweep.PHYSICS_PACKAGES), "machine": {"cpu": sweep.cpu_model()}}
    record = {"returncode": 0, "evaluations": [{"return": 1.0}], "command": sweep.shlex.join(command), **here}
    (source / sweep.RESULT_FILE).write_text(json.dumps(record))
    stopped = sweep.run_dir_of(out, run)
    stopped.mkdir(parents=True)
    (stopped / sweep.CHECKPOINT_FILE).write_bytes(b"a stopped run of our own")
    todo, skipped = sweep.plan(schedule, [run, other], out, args, [])
    assert [entry[0] for entry in todo] == [other] and skipped == 1  # no finished surrogate run to take
    assert (stopped / "runs" / "events").read_text() == "tensorboard"
    assert (
        not (stopped / sweep.CHECKPOINT_FILE).exists()
        and not stopped.with_name(stopped.name + ".adopting").exists()
    )
    assert sweep.done(stopped, sweep.build_command(schedule, run, [], sys.executable, out))
    changed = [*command, "--learning-rate", "1e-4"]
    (source / sweep.RESULT_FILE).write_text(json.dumps({**record, "command": sweep.shlex.join(changed)}))
    sweep.shutil.rmtree(stopped)
    todo, _ = sweep.plan(schedule, [run], out, args, [])
    assert [entry[0] for entry in todo] == [run] and not stopped.exists()  # other flags: not the same run
    elsewhere = {**record, "machine": {"cpu": "Another CPU model"}}
    (source / sweep.RESULT_FILE).write_text(json.dumps(elsewhere))
    todo, _ = sweep.plan(schedule, [run], out, args, [])
    assert [entry[0] for entry in todo] == [run] and not stopped.exists()  # another CPU: another sample


@pytest.mark.slow
def test_smoke_sweep_local_resumable_and_report(tmp_path):
    out = tmp_path / "smoke"
    args = ["--protocol", "smoke", "--out", out, "--jobs", 2, "--seeds", 1, "--algos"]
    args += SCRIPT_ALGOS
    proc = run_cli("sweep.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = [f"Hopper-v5__{a}__{v}__1" for a in SCRIPT_ALGOS for v in ("baseline", "explorler")]
    for name in names:
        record = json.loads((out / "runs" / name / "result.json").read_text())
        assert record["returncode"] == 0
        assert record["command"].split()[1].endswith("_continuous_action_research.py")
        assert record["git_commit"] and record["packages"]["torch"]
        assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
        assert record["wall_seconds"] > 0 and record["evaluations"]
        assert list((out / "runs" / name / "runs").rglob("events.out.tfevents.*"))
    rows = read_csv(out / "evaluations.csv")
    assert set(rows[0]) == set(sweep.CSV_FIELDS)
    assert {(r["algo"], r["variant"]) for r in rows} == {
        (a, v) for a in SCRIPT_ALGOS for v in ("baseline", "explorler")
    }
    for r in rows:
        assert int(r["total_env_steps"]) >= int(r["training_steps"]) > 0
        assert float(r["wall_seconds"]) >= 0 and np.isfinite(float(r["return"]))
        if r["variant"] == "baseline":
            assert r["total_env_steps"] == r["training_steps"]
    explorler = [r for r in rows if r["variant"] == "explorler"]
    assert int(explorler[-1]["total_env_steps"]) > int(explorler[-1]["training_steps"])
    first = json.loads((out / "sweep.json").read_text())
    assert first["provenance"]["git_commit"] and 0 < first["wall_span_seconds"]
    walls = [json.loads((out / "runs" / n / "result.json").read_text())["wall_seconds"] for n in names]
    assert first["run_seconds_total"] == pytest.approx(sum(walls))
    assert "runs span" in proc.stderr
    assert first["machine_speed"]["env_id"] == "Hopper-v5" and first["machine_speed"]["steps_per_second"] > 0

    # resumable: the second invocation finds every run done and starts none
    stamps = {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in names}
    again = run_cli("sweep.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "runs to do" not in again.stderr
    assert f"from {len(names)}/{len(names)} runs" in again.stderr
    assert stamps == {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in names}
    assert read_csv(out / "evaluations.csv") == rows
    # re-collecting keeps the provenance of the invocation that ran the runs
    collected = run_cli("sweep.py", *args, "--collect-only")
    assert collected.returncode == 0, collected.stderr[-3000:]
    record = json.loads((out / "sweep.json").read_text())
    assert record["wall_span_seconds"] == first["wall_span_seconds"]
    assert record["machine_speed"] == first["machine_speed"]  # measured only by runs that ran
    assert "--collect-only" not in record["provenance"]["command"]
    assert "--collect-only" in record["collected_by"]["command"]
    changed = run_cli("sweep.py", *args, "--extra=--eval-every 2", "--dry-run")
    assert changed.returncode == 0 and "--eval-every 2" in changed.stdout
    probe = sweep.build_command(
        protocols.PROTOCOLS["smoke"], sweep.Run("Hopper-v5", SCRIPT_ALGOS[0], "baseline", 1)
    )
    assert sweep.done(out / "runs" / names[0], probe)
    assert not sweep.done(out / "runs" / names[0], [*probe, "--eval-every", "2"])
    # a result recorded before a flag was renamed is still done
    result_file = out / "runs" / names[0] / "result.json"
    record = json.loads(result_file.read_text())
    record["command"] = record["command"].replace("--heldout-episodes", "--final-eval-episodes")
    result_file.write_text(json.dumps(record))
    assert "--final-eval-episodes" in record["command"] and sweep.done(out / "runs" / names[0], probe)

    # the report runs on the sweep's CSV
    rep = run_cli("report.py", "--csv", out / "evaluations.csv", "--bootstrap", 200)
    assert rep.returncode == 0, rep.stderr[-3000:]
    text = (out / "results.md").read_text()
    for algo in SCRIPT_ALGOS:
        assert f"Hopper-v5 / {algo.upper()}" in text
    assert "IQM" in text and "Commit:" in text
    data = json.loads((out / "results.json").read_text())
    assert {a["variant"] for a in data["aggregate"]} == {"baseline", "explorler"}
    if HAS_MPL:
        for name in (
            "return_vs_training_steps",
            "return_vs_total_env_steps",
            "wall_clock_per_step",
        ):
            assert (out / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.ray
def test_smoke_run_through_local_ray(tmp_path):
    pytest.importorskip("ray", reason="Ray is optional (pip install 'explorler-optim[ray]')")
    out = tmp_path / "ray"
    proc = run_cli(
        "sweep.py", "--protocol", "smoke", "--out", out, "--ray", "--jobs", 2,
        "--algos", "ppo", "--variants", "baseline", "--seeds", 3,
        timeout=HANG_GUARD_S,  # starting Ray on a busy 2-core machine took >240 s
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(ray)" in proc.stderr
    record = json.loads((out / "runs" / "Hopper-v5__ppo__baseline__3" / "result.json").read_text())
    assert record["returncode"] == 0 and record["evaluations"]
    rows = read_csv(out / "evaluations.csv")
    assert rows and {r["seed"] for r in rows} == {"3"}


def test_sb3_rows_are_skipped_clearly_without_sb3(tmp_path):
    if importlib.util.find_spec("stable_baselines3") and importlib.util.find_spec("sb3_contrib"):
        pytest.skip("sb3 is installed here; the skip path is not reachable")
    proc = run_cli("sweep.py", "--protocol", "smoke", "--out", tmp_path, "--variants", "sb3", "--seeds", 1)
    assert proc.returncode == 0, proc.stderr
    assert "skipping sb3 runs" in proc.stderr
    runner = run_cli("sb3_runner.py", "--algo", "ppo")
    assert runner.returncode == 3 and "not installed" in runner.stderr


def test_failed_run_is_recorded_and_retried(tmp_path):
    run_dir = tmp_path / "runs" / "Hopper-v5__ppo__baseline__1"
    record = sweep.execute_run("x", [sys.executable, "-c", "import sys; sys.exit(4)"], str(run_dir))
    assert record["returncode"] == 4 and record["evaluations"] == [] and "log_tail" in record
    (run_dir / "result.json").write_text(json.dumps(record))
    assert not sweep.done(run_dir)  # failed runs are not skipped on the next invocation


# ---------------------------------------------------------------------------------------------
# report statistics on synthetic data with known answers


def test_iqm_known_values():
    assert report.iqm(np.arange(8)) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    assert report.iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # 1 and 100 trimmed
    assert report.iqm([[0, 1, 2, 3], [4, 5, 6, 7]]) == pytest.approx(3.5)  # pooled
    np.testing.assert_allclose(report.iqm([[0, 1, 2, 9], [4, 5, 6, 7]], axis=1), [1.5, 5.5])
    x = np.random.default_rng(0).normal(size=101)
    if importlib.util.find_spec("scipy"):
        from scipy.stats import trim_mean

        assert report.iqm(x) == pytest.approx(trim_mean(x, 0.25))


def test_stratified_bootstrap_keeps_strata():
    tasks = [np.zeros(4), np.ones(6)]  # every replicate has 4 zeros and 6 ones
    reps = report.stratified_bootstrap(tasks, lambda x: x.mean(axis=1), reps=50, rng=1)
    np.testing.assert_allclose(reps, 0.6)


def test_bootstrap_ci_covers_the_truth_in_most_repetitions():
    rng = np.random.default_rng(123)
    truth = 1.0  # IQM of a symmetric distribution centred on 1
    covered = 0
    repetitions = 200
    for _ in range(repetitions):
        tasks = [rng.normal(truth, 0.3, size=10) for _ in range(3)]
        _, low, high = report.iqm_ci(tasks, reps=400, rng=rng.integers(1 << 31))
        covered += low <= truth <= high
    assert 0.85 <= covered / repetitions <= 1.0


def test_normalisation_by_baseline():
    np.testing.assert_allclose(report.normalise([2.0, 4.0], [1.0, 3.0]), [1.0, 2.0])
    # with a random-policy anchor: random -> 0, baseline mean -> 1
    np.testing.assert_allclose(report.normalise([-20.0, 80.0, 180.0], [80.0], low=-20.0), [0, 1, 2])
    assert np.isnan(report.normalise([1.0], [0.0])).all()  # baseline no better than random


def test_probability_of_improvement_known_cases():
    assert report.prob_improvement([5, 6, 7], [1, 2, 3]) == 1.0
    assert report.prob_improvement([1, 2, 3], [1, 2, 3]) == 0.5
    assert report.prob_improvement([1, 2, 3], [5, 6, 7]) == 0.0
    p, low, high = report.prob_improvement_ci([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]], reps=300)
    assert p == 0.5 and low <= 0.5 <= high
    p, low, high = report.prob_improvement_ci([[5, 6], [9, 9]], [[1, 2], [3, 4]], reps=300)
    assert p == low == high == 1.0


def synthetic_rows(scale, variant, env="Hopper-v5", algo="ppo", seeds=(1, 2, 3), seconds=1.0):
    rows = []
    for seed in seeds:
        for i in range(6):  # returns 10 * seed * (i + 1) * scale; the last 3 average to 50*seed
            rows.append(
                {
                    "env": env, "algo": algo, "variant": variant, "seed": seed, "eval_index": i,
                    "training_steps": 1000 * (i + 1), "total_env_steps": 1500 * (i + 1),
                    "return": 10.0 * seed * (i + 1) * scale, "wall_seconds": seconds * (i + 1),
                    "train_seconds": seconds * (i + 1),
                }
            )  # fmt: skip
    return rows


def test_summary_of_synthetic_sweep():
    rows = synthetic_rows(1.0, "baseline") + synthetic_rows(2.0, "explorler", seconds=3.0)
    rows += synthetic_rows(1.0, "baseline", env="Walker2d-v5")
    rows += synthetic_rows(2.0, "explorler", env="Walker2d-v5", seconds=3.0)
    summary = report.summarise(rows, last_k=3, reps=500, anchor=False)
    table = {(r["env"], r["variant"]): r for r in summary["table"]}
    base = table[("Hopper-v5", "baseline")]
    assert base["final_mean"] == pytest.approx(100.0)  # seeds 1..3 -> 50, 100, 150
    assert base["final_std"] == pytest.approx(50.0)
    assert base["ratio_to_baseline"] == pytest.approx(1.0)
    expl = table[("Hopper-v5", "explorler")]
    assert expl["ratio_to_baseline"] == pytest.approx(2.0)
    assert expl["wall_ratio_to_baseline"] == pytest.approx(3.0)
    assert expl["total_env_steps"] == 9000 and expl["training_steps"] == 6000
    agg = {a["variant"]: a for a in summary["aggregate"]}
    # normalised scores: baseline 0.5, 1, 1.5 per task; explorler twice that
    assert agg["baseline"]["iqm"] == pytest.approx(1.0)
    assert agg["explorler"]["iqm"] == pytest.approx(2.0)
    assert agg["explorler"]["baseline_iqm"] == pytest.approx(agg["baseline"]["iqm"])  # the same tasks
    assert agg["explorler"]["iqm_ci"][0] <= 2.0 <= agg["explorler"]["iqm_ci"][1]
    assert agg["explorler"]["wall_ratio_iqm"] == pytest.approx(3.0)
    # P(explorler > baseline) per task: (100, 200, 300) vs (50, 100, 150): 7 of 9 pairs greater,
    # one tie (100 = 100) counts a half
    assert agg["explorler"]["prob_improvement"] == pytest.approx(7.5 / 9)
    md = report.markdown(summary, "synthetic")
    assert "## Hopper-v5 / PPO" in md and "| explorler | 3 |" in md
    # the compact table the README shows: one row per task, ratios, and the aggregate rows
    compact = report.compact_table(summary)
    assert compact[0] == "| task | baseline | explorler |"
    assert "| PPO Hopper-v5 | 100 +- 50 | 200 +- 100 (2.00x) |" in compact
    assert compact[-2].startswith("| IQM normalised [95% CI] | 1.00 [") and "| 2.00 [" in compact[-2]
    assert compact[-1].startswith("| P(better than baseline) [95% CI] | - | 0.83 [")
    extra = report.summarise(rows + synthetic_rows(1.0, "explorler-paper"), reps=50, anchor=False)
    extra["table"] = [
        dict(r, total_env_steps=2 * r["total_env_steps"]) if r["variant"] == "explorler-paper" else r
        for r in extra["table"]
    ]
    assert "(1.00x), 2.0x env steps |" in report.compact_table(extra)[2]


def test_budget_applies_to_the_whole_protocol_only(tmp_path):
    whole = run_cli("sweep.py", "--protocol", "small", "--out", tmp_path / "whole", "--collect-only")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert json.loads((tmp_path / "whole" / "sweep.json").read_text())["budget_minutes"] == 90
    part = tmp_path / "part"
    subset = run_cli(
        "sweep.py", "--protocol", "small", "--out", part, "--variants", "baseline", "--collect-only"
    )
    assert subset.returncode == 0, subset.stderr[-3000:]
    assert json.loads((part / "sweep.json").read_text())["budget_minutes"] is None


def test_machine_speed_probe():
    speed = common.machine_speed("Hopper-v5", steps=200)
    assert speed["env_id"] == "Hopper-v5" and speed["steps"] == 200 and speed["steps_per_second"] > 0
    assert common.machine_speed("NoSuchEnv-v0") is None  # no probe rather than a crashed sweep


def test_sweep_lines_state_the_budget_verdict():
    sweep = {
        "runs": {"a": "done", "b": "done", "c": "failed"},
        "wall_span_seconds": 5430.0,
        "budget_minutes": 90,
        "run_seconds_total": 14402.7,
        "machine_speed": {"env_id": "Hopper-v5", "steps": 4000, "steps_per_second": 4178.2},
        "provenance": {
            "machine": {"cpu": "AMD EPYC", "cores": 2},
            "git_commit": "abc1234",
            "date": "2026-11-29T08:00:00+00:00",
        },
    }
    line = report.sweep_lines(sweep)[0]
    assert line.startswith("Sweep: 2/3 runs done, 90.5 minutes from the first start to the last end")
    assert "(over the protocol's 90-minute budget); the runs add up to 240.0 minutes of one core" in line
    assert "machine speed 4,178 raw Hopper-v5 steps/s; AMD EPYC, 2 cores" in line
    assert "commit abc1234 on 2026-11-29" in line
    assert (
        "(within the protocol's 90-minute budget)"
        in report.sweep_lines(dict(sweep, wall_span_seconds=5400.0))[0]
    )
    assert report.sweep_lines(None) == []
    bare = report.sweep_lines({"runs": {"a": "done"}})[0]
    assert bare == "Sweep: 1/1 runs done."


def test_report_cli_on_synthetic_csv(tmp_path):
    rows = synthetic_rows(1.0, "baseline") + synthetic_rows(1.5, "explorler-paper")
    path = tmp_path / "evaluations.csv"
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sweep.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    proc = run_cli("report.py", "--csv", path, "--bootstrap", 300, "--no-random-anchor")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    agg = {a["variant"]: a for a in data["aggregate"]}
    assert agg["explorler-paper"]["iqm"] == pytest.approx(1.5)
    assert "provenance" in data and data["paper_metric"] is None
    if HAS_MPL:
        assert (tmp_path / "return_vs_total_env_steps.png").exists()
        assert (tmp_path / "aggregate.png").exists()


def test_report_puts_the_papers_metric_beside_the_honest_one(tmp_path):
    rows = synthetic_rows(1.0, "baseline") + synthetic_rows(1.5, "explorler-paper")
    with open(tmp_path / "evaluations.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sweep.CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    # the paper's metric: 20 points per run; only the last 10% (2 points) make the final score
    with open(tmp_path / "paper_metric.csv", "w", newline="") as file:
        file.write("env,algo,variant,seed,training_steps,return\n")
        for variant, end in (("baseline", 100.0), ("explorler-paper", 300.0)):
            for seed in (1, 2, 3):
                for point in range(20):
                    value = end if point >= 18 else -1000.0
                    file.write(f"Hopper-v5,ppo,{variant},{seed},{point * 2048},{value}\n")
    proc = run_cli("report.py", "--csv", tmp_path / "evaluations.csv", "--bootstrap", 300, "--no-plots")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    paper = {(r["variant"], r["env"]): r for r in data["paper_metric"]["table"]}
    assert paper[("explorler-paper", "Hopper-v5")]["final_mean"] == pytest.approx(300.0)
    assert paper[("explorler-paper", "Hopper-v5")]["ratio_to_baseline"] == pytest.approx(3.0)
    assert "The paper's metric, beside the honest one" in (tmp_path / "results.md").read_text()


# ---------------------------------------------------------------------------------------------
# compare_runs


def fake_sweep(root, runs):
    for name, points in runs.items():
        run_dir = root / "runs" / name
        run_dir.mkdir(parents=True)
        evaluations = [{"training_steps": t, "return": r} for t, r in points]
        (run_dir / "result.json").write_text(json.dumps({"returncode": 0, "evaluations": evaluations}))
    return root


def test_compare_runs_matches_names_and_common_points(tmp_path):
    old = fake_sweep(
        tmp_path / "old",
        {
            "Hopper-v5__ppo__baseline__1": [(100, 1.0), (200, 2.0), (300, 3.0)],
            "Hopper-v5__ppo__lean__1": [(100, 5.0), (300, 7.0)],
            "Hopper-v5__ppo__gaussian__1": [(100, 5.0)],  # no counterpart
        },
    )
    new = fake_sweep(
        tmp_path / "new",
        {
            "Hopper-v5__ppo__baseline__1": [(200, 2.0), (300, 3.0), (400, 9.0)],  # other interval
            "Hopper-v5__ppo__explorler__1": [(100, 5.0), (300, 7.5)],
        },
    )
    compare_runs = importlib.import_module("benchmarks.compare_runs")
    rows = {
        r["run"]: r
        for r in compare_runs.compare(compare_runs.load_runs(old), compare_runs.load_runs(new), {})
    }
    assert set(rows) == {"Hopper-v5__ppo__baseline__1"}
    assert (
        rows["Hopper-v5__ppo__baseline__1"]["points"] == 2
        and rows["Hopper-v5__ppo__baseline__1"]["max_abs_diff"] == 0
    )
    mapped = compare_runs.compare(
        compare_runs.load_runs(old), compare_runs.load_runs(new), {"lean": "explorler"}
    )
    assert {r["run"]: r["max_abs_diff"] for r in mapped}["Hopper-v5__ppo__explorler__1"] == pytest.approx(0.5)
    proc = run_cli("compare_runs.py", old, new, "--map", "lean=explorler")
    assert proc.returncode == 0 and "2 runs matched, 1 identical" in proc.stdout
    assert run_cli("compare_runs.py", old, tmp_path / "new" / "runs").returncode == 1  # nothing to match


def test_selection_truth_metrics_on_a_known_search(tmp_path):
    from benchmarks import selection_truth

    assert selection_truth.spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    record = {
        "incumbent_row": True,
        "selection": [5.0, 9.0, 1.0, 7.0],  # row 1 looks best to the selection ...
        "truth": [10.0, 8.0, 14.0, 12.0],  # ... but is truly worse than the incumbent; row 2 is best
        "paper": [0.0, 1.0, 3.0, 2.0],  # the paper's scoring picks row 2
        "selected_row": 1,
        "committed": True,
        "global_step": 50,
        "total_timesteps": 100,
        "cycle": 0,
    }
    metrics = selection_truth.search_metrics(record)
    assert metrics["oracle_gain"] == 4.0 and metrics["realised_gain"] == -2.0 and metrics["worse"] == 1.0
    assert metrics["paper_realised_gain"] == 4.0 and metrics["paper_spearman"] == pytest.approx(0.8)
    run = tmp_path / "runs" / "Hopper-v5__ppo__audit__1" / "runs" / "tb"
    run.mkdir(parents=True)
    lines = [json.dumps(record), json.dumps({**record, "selected_row": 2})]  # cycle 0 logged twice: last wins
    (run / "selection_audit.jsonl").write_text("\n".join(lines) + "\n")
    rows = selection_truth.load(tmp_path)
    assert len(rows) == 1 and rows[0]["realised_gain"] == 4.0 and rows[0]["phase"] == "middle"
    assert selection_truth.main([str(tmp_path)]) == 0 and (tmp_path / "results.md").exists()


def test_the_papers_metric_is_read_from_a_runs_tensorboard_files(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "runs" / "Hopper-v5__ppo__baseline__1"
    writer = SummaryWriter(str(run_dir / "runs" / "tb"))
    for step, value in [(0, 10.0), (64, 12.5)]:
        writer.add_scalar("paper/episodic_return", value, step)
    writer.add_scalar("eval/episodic_return", 1.0, 64)
    writer.close()
    assert sweep.read_paper_metric(run_dir / "runs") == [
        {"training_steps": 0, "return": 10.0},
        {"training_steps": 64, "return": 12.5},
    ]
    (run_dir / sweep.RESULT_FILE).write_text(json.dumps({"returncode": 0, "evaluations": [{"return": 1.0}]}))
    rows = sweep.collect_paper_metric(tmp_path)  # an older record without the field: read from the files
    assert [(r["variant"], r["training_steps"], r["return"]) for r in rows] == [
        ("baseline", 0, 10.0),
        ("baseline", 64, 12.5),
    ]


def test_sweep_refuses_versions_other_than_the_pinned_ones(tmp_path, monkeypatch, capsys):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# a comment\nmujoco==0.0.1  # no such release\nnumpy==" + np.__version__ + "\n")
    monkeypatch.setattr(sweep, "CONSTRAINTS", constraints)
    assert sweep.pinned_versions() == {"mujoco": "0.0.1", "numpy": np.__version__}
    wrong = sweep.unpinned(sys.executable)
    assert len(wrong) == 1 and wrong[0].startswith("mujoco ") and "(pinned 0.0.1)" in wrong[0]
    args = ["--protocol", "small", "--out", str(tmp_path / "out"), "--seeds", "1", "--envs", "Hopper-v5"]
    args += ["--algos", "ppo", "--variants", "baseline"]
    assert sweep.main(args) == 2
    assert "constraints.txt" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()  # nothing ran


def test_physics_names_the_versions_and_the_cpu():
    record = {
        "packages": {"mujoco": "4.0.0", "gymnasium": "1.4.0", "torch": "2.13.0+cpu", "numpy": "2.4.6"},
        "machine": {"cpu": "AMD EPYC"},
    }
    assert sweep.physics(record) == "mujoco 4.0.0, gymnasium 1.4.0, torch 2.13.0+cpu, numpy 2.4.6, AMD EPYC"
    assert sweep.physics({}) == "mujoco ?, gymnasium ?, torch ?, numpy ?, ?"


def test_per_task_verdict_resolves_a_clear_gain_and_flags_mixed_physics():
    rows = synthetic_rows(1.0, "baseline", seeds=(1, 2, 3, 4)) + synthetic_rows(
        1.5, "explorler", seeds=(1, 2, 3, 4)
    )
    rows += synthetic_rows(1.0, "noisy", seeds=(1, 2, 3, 4))
    for row in rows:  # seed 4's noisy run: far below; seed 1's: far above
        if row["variant"] == "noisy" and row["seed"] in (1, 4):
            row["return"] *= 1.8 if row["seed"] == 1 else 0.3
        row["physics"] = "setup A" if row["seed"] < 4 else "setup B"
    summary = report.summarise(rows, last_k=3, reps=500, anchor=False)
    table = {r["variant"]: r for r in summary["table"]}
    assert table["explorler"]["paired_ratio"] == pytest.approx(1.5)
    assert table["explorler"]["paired_ratio_mean"] == pytest.approx(1.5)
    assert table["explorler"]["resolved"] == "better" and table["explorler"]["wins"] == 4
    assert table["noisy"]["resolved"] == "unresolved"
    lines = report.verdict_table(summary)
    assert any(
        "| explorler |" in line and "| better |" in line and "MIXED: 2 setups" in line for line in lines
    )
    assert any("more than one setup" in line for line in lines)
    for row in rows:
        row["physics"] = "setup A"
    assert not any("MIXED" in line for line in report.verdict_table(report.summarise(rows, 3, 500, False)))


def test_one_seed_whose_baseline_barely_progressed_does_not_decide_the_verdict():
    # progress over random (low = 0 with anchor=False): the variant matches the baseline on 9 seeds
    # and makes 50 where the baseline made 1 on the tenth; the per-seed mean reads 5.9x
    paired = [(100.0 + seed, 100.0 + seed) for seed in range(9)] + [(50.0, 1.0)]
    verdict = report.task_verdict(paired, 0.0, [v for v, _ in paired], [b for _, b in paired], 2000, 0)
    assert verdict["paired_ratio_mean"] == pytest.approx((9 + 50) / 10)
    assert verdict["paired_ratio"] == pytest.approx(
        (sum(100.0 + s for s in range(9)) + 50) / (sum(100.0 + s for s in range(9)) + 1)
    )
    assert verdict["paired_ratio"] < 1.06 and verdict["resolved"] == "unresolved"
    assert verdict["paired_ratio_mean_ci"][1] > 5  # the per-seed mean's interval spans that seed
    lower = report.task_verdict([(b * 0.8, b) for _, b in paired[:9]], 0.0, [1.0], [1.0], 2000, 0)
    assert lower["paired_ratio"] == pytest.approx(0.8) and lower["resolved"] == "worse"


def test_a_finished_run_counts_wherever_it_kept_its_checkpoint(tmp_path):
    proto = protocols.PROTOCOLS["verdict"]
    run = sweep.Run("Hopper-v5", "ppo", "baseline", 1)
    here = sweep.build_command(proto, run, out=tmp_path / "verdict")
    elsewhere = sweep.build_command(proto, run, out=tmp_path / "other")
    assert here != elsewhere and "--checkpoint-path" in here
    run_dir = tmp_path / "verdict" / "runs" / run.name
    run_dir.mkdir(parents=True)
    record = {"returncode": 0, "evaluations": [{"return": 1.0}], "command": sweep.shlex.join(elsewhere)}
    (run_dir / sweep.RESULT_FILE).write_text(json.dumps(record))
    assert sweep.done(run_dir, here)
    changed = [*elsewhere[:-4], "--seed", "2", *elsewhere[-4:]]
    (run_dir / sweep.RESULT_FILE).write_text(json.dumps({**record, "command": sweep.shlex.join(changed)}))
    assert not sweep.done(run_dir, here)  # other flags still count


def test_random_policy_score_is_reproducible_and_in_the_tasks_range():
    from benchmarks.random_scores import random_policy_return

    mean, stderr = random_policy_return("Pendulum-v1", episodes=3, seed=5)
    assert (mean, stderr) == random_policy_return("Pendulum-v1", episodes=3, seed=5)
    assert -16.3 * 200 <= mean < 0 and stderr > 0  # Pendulum's reward lies in [-16.3, 0] a step


# ------------------------------------------------------------------ figures (issue 28)


def curve_rows(variant, seeds, steps, returns):
    return [
        {"env": "Hopper-v5", "algo": "ppo", "variant": variant, "seed": seed, "eval_index": i,
         "training_steps": step, "total_env_steps": step, "return": value, "wall_seconds": 1.0,
         "train_seconds": 1.0}
        for seed, seed_steps in zip(seeds, steps)
        for i, (step, value) in enumerate(zip(seed_steps, returns))
    ]  # fmt: skip


def test_learning_curves_have_a_panel_per_task_mark_identical_variants_and_end_with_their_data(
    tmp_path, monkeypatch
):
    pytest.importorskip("matplotlib")
    drawn = {}
    plt = common.pyplot()
    real_subplots = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = real_subplots(*args, **kwargs)
        drawn["fig"] = fig
        return fig, axes

    monkeypatch.setattr(plt, "subplots", spy)
    monkeypatch.setattr(plt, "close", lambda fig: None)
    rows = curve_rows("baseline", [1, 2], [[10, 20, 30], [10, 20, 30]], [1.0, 2.0, 3.0])
    rows += curve_rows("explorler-surrogate", [1, 2], [[10, 20, 30], [10, 20, 30]], [1.0, 2.0, 3.0])
    rows += curve_rows("explorler", [1, 2], [[10, 20, 25], [10, 20, 28]], [1.0, 2.0, 9.0])  # ends early
    rows += [{**r, "env": "Walker2d-v5"} for r in rows if r["variant"] == "baseline"]
    rows += [{**r, "algo": "trpo"} for r in rows if r["variant"] == "baseline" and r["env"] == "Hopper-v5"]
    report.plot_curves(rows, tmp_path, "training_steps", "steps", "curves.png")
    axes = drawn["fig"].axes
    assert len(axes) == 3  # Hopper PPO and TRPO, Walker2d PPO: no empty Walker2d TRPO panel
    hopper = next(ax for ax in axes if ax.get_title() == "Hopper-v5 / PPO")
    lines = {line.get_label(): line for line in hopper.get_lines()}
    assert "explorler-surrogate (2), identical to baseline" in lines
    assert lines["explorler-surrogate (2), identical to baseline"].get_linestyle() != "-"
    explorler = lines["explorler (2)"].get_xdata()
    assert explorler[-1] == 25  # where the earliest-ending seed ends: no mean over one seed past it
    assert (tmp_path / "curves.png").exists()


def test_overview_figure_rows_are_the_committed_verdicts(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks import figures

    rows, sources = figures.rows_of()
    cheetah = next(r for r in rows if r["label"] == "PPO HalfCheetah-v5" and "verdict" in r["group"])
    table = json.loads((ROOT / "benchmarks/results/verdict/results.json").read_text())["table"]
    committed = next(r for r in table if r["env"] == "HalfCheetah-v5" and r["variant"] == "explorler")
    assert cheetah["ratio"] == committed["paired_ratio"] and cheetah["resolved"] == "worse"
    assert set(sources) == {f"benchmarks/results/{p}/results.json" for _, p, _, _ in figures.ROWS}
    assert figures.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "does_it_help.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "sources.json").read_text())["rows"] == rows


def test_compare_runs_scalars_names_a_differing_tag_and_ignores_the_clock(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from benchmarks.compare_runs import scalar_summary

    for side, loss in (("old", 1.0), ("new", 2.0)):
        writer = SummaryWriter(str(tmp_path / side / "runs" / "r"))
        writer.add_scalar("eval/episodic_return", 5.0, 1)
        writer.add_scalar("losses/value_loss", loss, 1)
        writer.add_scalar("charts/SPS", 100.0 if side == "old" else 90.0, 1)  # wall clock: not compared
        writer.close()
    assert scalar_summary(tmp_path / "old", tmp_path / "new") == (
        "scalars: 1 of 2 tags identical (differ: losses/value_loss)"
    )
    (tmp_path / "kept-none").mkdir()  # a committed run whose TensorBoard files were not kept
    assert (
        scalar_summary(tmp_path / "kept-none", tmp_path / "new")
        == f"scalars: none kept in {tmp_path / 'kept-none'}"
    )


def test_run_scores_lists_each_finished_run_of_the_seed():
    from benchmarks.run_scores import rows

    table = rows(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "headline", 1)
    assert len(table) == 2 + 12 and "| Ant-v5 PPO `explorler` | 722.1 |" in "\n".join(table)
