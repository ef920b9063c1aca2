"""The landscape view: geometry, files, TensorBoard, and the command on a tiny checkpoint."""

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from explorler_optim import ExploRLerOptimizer  # noqa: E402
from explorler_optim.viz import (  # noqa: E402
    figure_from_result,
    landscape_figure,
    log_landscape,
    principal_plane,
    save_figure,
)
from tests.conftest import HANG_GUARD_S  # noqa: E402


def plane_anchors(num_params=300, seed=0):
    """Anchors on a known 2-D plane of a high-dimensional space, with known in-plane coordinates."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(num_params, 2)))
    planar = np.array([[0, 0], [1, 0.2], [2, 0.1], [2.5, 1.0], [2.0, 2.0], [1.0, 2.2]]) * 0.05
    origin = rng.normal(size=num_params)
    return origin + planar @ basis.T, planar


def explored_result():
    anchors, planar = plane_anchors()
    param = torch.nn.Parameter(torch.tensor(anchors[0], dtype=torch.float64))
    opt = ExploRLerOptimizer(torch.optim.SGD([param], lr=0.1))
    for row in anchors:
        with torch.no_grad():
            param.copy_(torch.tensor(row))
        opt.record()
    target = torch.tensor(anchors.mean(0))
    result = opt.explore(lambda: -float((param - target).norm()))
    return result, planar


def pairwise(points):
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_projected_anchor_coordinates_match_the_known_plane():
    result, planar = explored_result()
    center, basis = principal_plane(result.anchor_coords)
    projected = (result.anchor_coords.numpy() - center) @ basis
    # Same configuration up to a rigid motion: pairwise distances agree.
    np.testing.assert_allclose(pairwise(projected), pairwise(planar), atol=1e-9)
    # Candidates lie in the same plane, so projecting loses nothing either.
    candidates = result.candidate_coords.numpy()
    lost = (candidates - center) - ((candidates - center) @ basis) @ basis.T
    assert np.abs(lost).max() < 1e-9


def test_figure_png_and_tensorboard_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    result, _ = explored_result()
    figure = figure_from_result(result, title="synthetic")
    png = tmp_path / "landscape.png"
    save_figure(figure, str(png))
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    writer = SummaryWriter(str(tmp_path / "tb"))
    log_landscape(writer, result, step=7)
    writer.close()
    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    assert "explorler/landscape" in accumulator.Tags()["images"]
    assert accumulator.Images("explorler/landscape")[0].step == 7


def test_figure_tolerates_invalid_scores_and_collinear_points():
    anchors = np.array([[0.0], [1.0], [2.0]])
    candidates = np.array([[0.5], [1.5], [2.5]])
    figure = landscape_figure(anchors, candidates, np.array([1.0, np.nan, 3.0]), committed_index=2)
    assert figure.axes
    with pytest.raises(ValueError, match="scores"):
        landscape_figure(anchors, candidates, np.array([1.0]))


@pytest.mark.slow
def test_landscape_command_on_a_tiny_checkpoint(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("gymnasium")
    pytest.importorskip("tyro")
    script = Path(__file__).resolve().parent.parent / "single_file_baselines" / "ppo_continuous_action.py"
    checkpoint = tmp_path / "tiny.pt"
    tiny = [
        "--env-id", "Hopper-v5", "--total-timesteps", "512", "--num-steps", "128", "--num-minibatches", "2",
        "--update-epochs", "3", "--explore-every", "2", "--esa-steps", "4", "--eval-episodes", "1",
        "--heldout-episodes", "1", "--max-episode-steps", "30", "--save-model", "--checkpoint-path",
        str(checkpoint), "--quiet", "--landscape-every", "1",
    ]  # fmt: skip
    subprocess.run([sys.executable, str(script), *tiny], cwd=tmp_path, check=True, timeout=HANG_GUARD_S)
    from explorler_optim.landscape import main

    png = main([str(checkpoint), "--grid", "3", "--episodes", "1", "--out", str(tmp_path / "grid.png")])
    assert png.exists() and png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main([str(checkpoint), "--grid", "1"])


def test_landscape_needs_anchors_in_the_checkpoint():
    from explorler_optim.landscape import anchors_from_checkpoint

    with pytest.raises(ValueError, match="fewer than 2 anchors"):
        anchors_from_checkpoint({"optimizer": {"state": {}, "param_groups": []}, "last_cycle_anchors": None})


def test_png_has_the_permissions_of_a_plain_file(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        figure = landscape_figure(np.eye(3), np.eye(3) * 0.5, np.array([1.0, 2.0, 3.0]))
        png = tmp_path / "plot.png"
        save_figure(figure, str(png))
    finally:
        os.umask(mask)
    assert png.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left


def test_grid_figure_marks_the_best_point_with_round_colour_bar_ticks():
    anchors, _ = plane_anchors(num_params=4)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
    values = 65.31 + 139.49 * np.random.default_rng(0).random((5, 5))  # odd bounds: 65.31 .. 204.8
    figure = landscape_figure(
        anchors, np.zeros((0, 4)), np.zeros(0), grid=(xs, ys, values),
        anchor_scores=np.arange(len(anchors), dtype=float) + 100, note="a note",
    )  # fmt: skip
    axes, colour_bar = figure.axes
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert f"best grid point ({values.max():.4g})" in labels
    assert "anchors (filled with their score)" in labels
    ticks = colour_bar.get_yticks()
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9
    assert np.allclose(ticks / step, np.round(ticks / step))
    assert axes.get_title().endswith("\na note")


def test_line_figure_and_noise_note():
    from explorler_optim.landscape import noise_note
    from explorler_optim.viz import landscape_line_figure

    scores = np.array([10.0, 12.0, 11.0])
    assert "within the noise" in noise_note(scores, np.array([1.0, 1.0, 1.0]))
    assert "exceeds" in noise_note(scores, np.array([0.1, 0.1, 0.1]))
    assert "noise is unknown" in noise_note(scores, None)
    assert "nothing to show" in noise_note(np.array([np.nan, -np.inf]), None)
    figure = landscape_line_figure(
        np.linspace(-1, 1, 3), scores, anchor_positions=np.array([-0.5, 0.5]),
        anchor_scores=np.array([10.0, 11.0]), incumbent_position=0.5, incumbent_score=11.0,
        standard_errors=np.ones(3), note="2 anchors span a line",
    )  # fmt: skip
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "best point (12)" in labels and "+-2 standard errors" in labels


def test_landscape_checks_matplotlib_before_any_work(monkeypatch, tmp_path):
    import sys

    from explorler_optim.landscape import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    # the checkpoint does not even exist: the missing dependency is reported first
    with pytest.raises(ImportError, match=r'pip install -e "\.\[viz\]"'):  # extras.install_hint
        main([str(tmp_path / "missing.pt")])


def test_landscape_command_line_names_the_missing_install_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import runpy, sys; sys.modules['matplotlib'] = None; sys.argv = ['landscape', 'missing.pt']; "
        "runpy.run_module('explorler_optim.landscape', run_name='__main__')"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(root), os.environ.get("PYTHONPATH")] if p)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert 'pip install -e ".[viz]"' in proc.stderr  # extras.install_hint, from this clone


def test_landscape_command_on_a_two_anchor_trpo_checkpoint(tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("gymnasium")
    pytest.importorskip("tyro")
    script = Path(__file__).resolve().parent.parent / "single_file_baselines" / "trpo_continuous_action.py"
    checkpoint = tmp_path / "two.pt"
    tiny = [
        "--env-id", "Hopper-v5", "--total-timesteps", "256", "--num-steps", "64", "--critic-minibatch-size",
        "32", "--n-critic-updates", "1", "--max-anchors", "2", "--explore-every", "2", "--esa-steps", "4",
        "--heldout-episodes", "1", "--max-episode-steps", "30", "--save-model", "--checkpoint-path",
        str(checkpoint), "--quiet", "--no-count-eval-steps",
    ]  # fmt: skip
    subprocess.run([sys.executable, str(script), *tiny], cwd=tmp_path, check=True, timeout=HANG_GUARD_S)
    from explorler_optim.landscape import main

    png = main([str(checkpoint), "--grid", "3", "--episodes", "2", "--out", str(tmp_path / "line.png")])
    printed = capsys.readouterr().out
    assert "9 points on the anchors' line" in printed and "span a line" in printed
    assert "noise" in printed
    assert png.exists() and png.stat().st_size > 10_000
