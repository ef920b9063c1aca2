"""Smoke tests of single_file_baselines/ppo.py (discrete PPO) and sac_continuous_action.py."""

import json

import pytest

from tests.conftest import ROOT, ScriptUnderTest

pytestmark = pytest.mark.slow  # runs the scripts

pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")
pytest.importorskip("tyro")
pytest.importorskip("tensorboard")

PPO = ROOT / "single_file_baselines" / "ppo.py"
SAC = ROOT / "single_file_baselines" / "sac_continuous_action.py"
PPO_TINY = [
    "--num-envs", "2", "--num-steps", "32", "--max-episode-steps", "50", "--explore-every", "2",
    "--esa-steps", "4", "--heldout-episodes", "2", "--eval-every", "2", "--quiet",
]  # fmt: skip
SAC_TINY = [
    "--env-id", "Hopper-v5", "--max-episode-steps", "50", "--learning-starts", "64", "--batch-size", "32",
    "--explore-every", "32", "--esa-steps", "4", "--heldout-episodes", "2", "--eval-every", "64", "--quiet",
]  # fmt: skip
SAVE = ["--save-model", "--checkpoint-path", "run.pt"]
CLEANRL_SAC_TAGS = ["charts/episodic_return", "losses/qf_loss", "losses/actor_loss", "losses/alpha"]


def counted(run):
    """(global_step, total_env_steps, candidate env steps so far) at every logged total."""
    eval_steps = dict(run.scalars.get("explorler/eval_env_steps", []))
    rows = []
    for step, total in run.scalars["charts/total_env_steps"]:
        rows.append((step, total, max([0] + [v for s, v in eval_steps.items() if s <= step])))
    return rows


def test_discrete_ppo_scores_argmax_candidates_and_counts_their_env_steps(tmp_path_factory, explorler_tags):
    script = ScriptUnderTest(PPO, PPO_TINY, tmp_path_factory)
    budget = 1024
    run = script.train("explorler", "--total-timesteps", budget)
    for tag in [*explorler_tags, "losses/value_loss", "charts/episodic_return", "eval/episodic_return"]:
        assert tag in run.scalars, tag
    rows = counted(run)
    assert all(total == step + spent for step, total, spent in rows)  # candidate steps are counted
    assert rows[-1][2] > 0 and rows[-1][1] <= budget + int(0.01 * budget)
    assert rows[-1][0] < budget  # the candidates' steps took the place of training steps
    baseline = script.train("baseline", "--no-explorler", "--total-timesteps", 256, *SAVE)
    assert_eval_checkpoint_scores_as_training_did(script, baseline)
    assert not [tag for tag in baseline.scalars if tag.startswith("explorler/")]
    assert baseline.steps("losses/value_loss") == [64, 128, 192, 256]
    assert all(step == total for step, total in baseline.scalars["charts/total_env_steps"])
    assert 1 <= min(baseline.values("charts/episodic_length"))  # CartPole's episodes are logged


@pytest.mark.parametrize("score_with", ["env", "critic"])
def test_sac_searches_the_actor_and_counts_env_scoring_only(score_with, tmp_path_factory, explorler_tags):
    script = ScriptUnderTest(SAC, SAC_TINY, tmp_path_factory)
    # env scoring: 2 gaussian candidates + the incumbent, 1 episode of <= 50 steps fit the budget
    search = ["--search", "gaussian", "--gaussian-candidates", "2"] if score_with == "env" else []
    run = script.train(score_with, "--total-timesteps", 320, "--score-with", score_with, *search)
    for tag in [*explorler_tags, *CLEANRL_SAC_TAGS, "eval/episodic_return"]:
        assert tag in run.scalars, tag
    assert len(run.values("explorler/best_score")) >= (2 if score_with == "critic" else 1)
    rows = counted(run)
    assert all(total == step + spent for step, total, spent in rows)
    if score_with == "critic":  # the critics score on replay states: zero env steps
        assert set(run.values("explorler/eval_env_steps")) == {0.0} and rows[-1][0] == 320
    else:
        assert rows[-1][2] > 0 and rows[-1][0] < 320 and rows[-1][1] <= 320 + 3


def test_sac_baseline_logs_cleanrls_scalars_and_no_search(tmp_path_factory):
    script = ScriptUnderTest(SAC, SAC_TINY, tmp_path_factory)
    run = script.train("baseline", "--no-explorler", "--total-timesteps", 256, *SAVE)
    assert_eval_checkpoint_scores_as_training_did(script, run)
    for tag in CLEANRL_SAC_TAGS:
        assert tag in run.scalars, tag
    assert not [tag for tag in run.scalars if tag.startswith("explorler/")]
    assert run.steps("eval/episodic_return") == [64, 128, 192, 256]
    assert all(step == total for step, total in run.scalars["charts/total_env_steps"])


def assert_eval_checkpoint_scores_as_training_did(script, run):
    """--eval-checkpoint replays the last held-out evaluation: same policy, same seeds, same score."""
    proc = script.run(run.cwd, "--eval-checkpoint", "run.pt", "--heldout-episodes", 2)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["eval_episodic_return"] == pytest.approx(run.values("eval/episodic_return")[-1])
    assert result["eval_episodic_return"] == result["saved_eval_episodic_return"]
