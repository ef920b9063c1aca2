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
        "--final-eval-episodes", "1", "--max-episode-steps", "30", "--save-model", "--checkpoint-path",
        str(checkpoint), "--quiet", "--landscape-every", "1",
    ]  # fmt: skip
    subprocess.run([sys.executable, str(script), *tiny], cwd=tmp_path, check=True, timeout=120)
    from explorler_optim.landscape import main

    png = main([str(checkpoint), "--grid", "3", "--episodes", "1", "--out", str(tmp_path / "grid.png")])
    assert png.exists() and png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main([str(checkpoint), "--grid", "1"])


def test_landscape_needs_anchors_in_the_checkpoint():
    from explorler_optim.landscape import anchors_from_checkpoint

    with pytest.raises(ValueError, match="fewer than 2 anchors"):
        anchors_from_checkpoint({"optimizer": {"state": {}, "param_groups": []}, "last_cycle_anchors": None})
