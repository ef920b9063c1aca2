"""The search operators and the anchor subspace."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from explorler_optim import (
    AnchorSubspace,
    CheckpointAverage,
    EmptySpaceSearch,
    GaussianSearch,
    RandomWalkSearch,
    SearchOperator,
    make_search,
)
from tests.reference_esa import raw_space_esa


def ppo_like_anchors(n, p, seed, step=1e-2):
    """Anchors like the epoch ends of one PPO iteration: a random walk with a drift."""
    rng = np.random.default_rng(seed)
    drift = rng.normal(size=p) * step
    steps = drift + rng.normal(size=(n, p)) * step
    return rng.normal(size=p) + np.cumsum(steps, axis=0)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("scale", [1e-3, 1e-2, 0.3])
def test_subspace_esa_matches_raw_space(n, scale):
    anchors = ppo_like_anchors(n, 257, seed=n, step=scale)
    expected = raw_space_esa(anchors)
    got = EmptySpaceSearch(snapshot_every=20).candidates(torch.tensor(anchors)).numpy()
    assert got.shape == expected.shape
    # The force law is steep (d**-13), so a trajectory can amplify round-off: with 2 anchors a
    # 1e-14 nudge moves the raw-space result itself by ~1e-4. "Floating-point tolerance" is
    # therefore measured against the raw algorithm's own sensitivity to such a nudge.
    nudged = raw_space_esa(anchors + np.random.default_rng(0).normal(size=anchors.shape) * 1e-14)
    own_sensitivity = np.abs(nudged - expected).max()
    assert np.abs(got - expected).max() <= max(1e-9, 10 * own_sensitivity)
    if n >= 5:  # the paper's regime: well conditioned, a match to round-off
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-11)


def test_subspace_esa_matches_raw_space_with_other_settings():
    anchors = ppo_like_anchors(8, 100, seed=3)
    settings_ = dict(
        agents=3, steps=17, step_size=3e-3, momentum=0.6, epsilon=0.2, neighbors=4, snapshot_every=5
    )
    expected = raw_space_esa(anchors, **settings_)
    got = EmptySpaceSearch(**settings_).candidates(torch.tensor(anchors)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_the_authors_setting_gives_twenty_candidates_agent_by_agent():
    anchors = torch.tensor(ppo_like_anchors(10, 64, seed=0))
    esa = EmptySpaceSearch(snapshot_every=20)
    out = esa.candidates(anchors)
    assert out.shape == (20, 64) and esa.num_candidates(10) == 20
    # The first snapshot of each agent is its start: the mean of the 5 nearest other anchors of
    # anchors 0, 2, 4, 6, 8.
    for agent, anchor in enumerate([0, 2, 4, 6, 8]):
        distances = (anchors - anchors[anchor]).norm(dim=1)
        distances[anchor] = math.inf
        start = anchors[distances.argsort()[:5]].mean(0)
        torch.testing.assert_close(out[4 * agent], start)


def test_fewer_anchors_and_neighbors_than_defaults():
    for n in (2, 3, 4):
        anchors = torch.tensor(ppo_like_anchors(n, 30, seed=n))
        out = EmptySpaceSearch(snapshot_every=20).candidates(anchors)
        assert out.shape == (min(5, n) * 4, 30)
        assert torch.isfinite(out).all()


def test_needs_two_anchors():
    with pytest.raises(ValueError, match="at least 2 anchors"):
        EmptySpaceSearch().candidates(torch.randn(1, 10))


def test_identical_anchors_give_that_point():
    anchors = torch.ones(4, 7)
    out = EmptySpaceSearch().candidates(anchors)
    torch.testing.assert_close(out, torch.ones(out.shape[0], 7))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(agents=0),
        dict(steps=-1),
        dict(step_size=0.0),
        dict(momentum=1.0),
        dict(epsilon=0),
        dict(neighbors=1),
    ],
)
def test_esa_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        EmptySpaceSearch(**kwargs)


anchor_sets = st.builds(
    lambda n, p, seed, scale: ppo_like_anchors(n, p, seed, scale),
    st.integers(2, 10),
    st.integers(2, 40),
    st.integers(0, 10_000),
    st.sampled_from([1e-3, 1e-2, 1e-1]),
)


@settings(max_examples=40, deadline=None)
@given(anchors=anchor_sets)
def test_esa_candidates_stay_in_the_affine_hull_and_move_boundedly(anchors):
    esa = EmptySpaceSearch(snapshot_every=20)
    tensor = torch.tensor(anchors)
    out = esa.candidates(tensor)
    sub = AnchorSubspace(tensor)
    for row in out:
        _, residual = sub.project(row)
        assert residual <= 1e-7 * (1 + float(tensor.norm()))
    # Each snapshot is at most snapshot_every moves of step_size from the agent's previous one.
    per_agent = out.reshape(-1, 4, out.shape[1])
    hops = (per_agent[:, 1:] - per_agent[:, :-1]).norm(dim=-1)
    assert (hops <= 20 * 1e-3 + 1e-9).all()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(anchors=anchor_sets, seed=st.integers(0, 1000))
def test_esa_is_equivariant_under_rigid_motions(anchors, seed):
    # With 2-3 anchors the d^-13 force makes ESA chaotic: rounding differences of a rotation grow to
    # ~1e-4 (see test_subspace_esa_matches_raw_space); equivariance is exact from 5 on.
    assume(anchors.shape[0] >= 5)
    rng = np.random.default_rng(seed)
    p = anchors.shape[1]
    rotation, _ = np.linalg.qr(rng.normal(size=(p, p)))
    shift = rng.normal(size=p)
    out = EmptySpaceSearch().candidates(torch.tensor(anchors)).numpy()
    moved = EmptySpaceSearch().candidates(torch.tensor(anchors @ rotation + shift)).numpy()
    np.testing.assert_allclose(moved, out @ rotation + shift, atol=1e-8)


@settings(max_examples=25, deadline=None)
@given(anchors=anchor_sets)
def test_subspace_round_trip_and_orthonormal_coordinates(anchors):
    tensor = torch.tensor(anchors)
    sub = AnchorSubspace(tensor)
    assert sub.rank <= tensor.shape[0] - 1
    torch.testing.assert_close(sub.lift(sub.coords), tensor, atol=1e-9, rtol=0)
    # Coordinates preserve pairwise distances.
    torch.testing.assert_close(
        torch.cdist(sub.coords, sub.coords), torch.cdist(tensor, tensor), atol=1e-9, rtol=0
    )


def test_subspace_with_origin_low_precision_rows_and_rank_deficiency():
    torch.manual_seed(0)
    origin = torch.randn(50, dtype=torch.float64)
    direction = torch.randn(50, dtype=torch.float64)
    rows = torch.stack([k * direction for k in range(4)])  # collinear: rank 1
    sub = AnchorSubspace(rows, origin=origin)
    assert sub.rank == 1
    coords, residual = sub.project(origin + 2.5 * direction)
    assert residual < 1e-9 and abs(float(coords.abs().sum()) - 2.5 * float(direction.norm())) < 1e-9
    low = AnchorSubspace(rows.to(torch.bfloat16), origin=origin)  # rounding breaks collinearity
    lifted = low.lift(low.coords)
    torch.testing.assert_close(lifted, origin + rows.to(torch.bfloat16).double(), atol=1e-9, rtol=0)


def test_checkpoint_average_is_the_mean():
    anchors = torch.randn(6, 20, dtype=torch.float64)
    torch.testing.assert_close(CheckpointAverage().candidates(anchors), anchors.mean(0, keepdim=True))


def test_gaussian_matches_the_anchor_mean_and_covariance():
    anchors = torch.tensor(ppo_like_anchors(6, 5, seed=1, step=0.5))
    samples = GaussianSearch(num_candidates=40_000).candidates(anchors, torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples.mean(0), anchors.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(samples.T.cov(), anchors.T.cov(), atol=0.05, rtol=0.05)
    again = GaussianSearch(num_candidates=40_000).candidates(anchors, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_random_walk_shares_starts_and_schedule_with_esa():
    anchors = torch.tensor(ppo_like_anchors(10, 40, seed=2))
    walk = RandomWalkSearch(snapshot_every=20).candidates(anchors, torch.Generator().manual_seed(0))
    esa = EmptySpaceSearch(snapshot_every=20).candidates(anchors)
    assert walk.shape == esa.shape
    torch.testing.assert_close(walk[::4], esa[::4])  # same start points
    hops = (walk.reshape(5, 4, 40)[:, 1:] - walk.reshape(5, 4, 40)[:, :-1]).norm(dim=-1)
    assert (hops <= 20 * 1e-3 + 1e-12).all() and (hops > 0).all()
    other = RandomWalkSearch(snapshot_every=20).candidates(anchors, torch.Generator().manual_seed(1))
    assert not torch.equal(walk, other)


def test_reprs_show_settings():
    assert "agents=5" in repr(EmptySpaceSearch()) and "step_size=0.001" in repr(EmptySpaceSearch())
    assert repr(GaussianSearch(num_candidates=3)) == "GaussianSearch(num_candidates=3, scale=1)"


@pytest.mark.parametrize("name", ["esa", "random-walk", "checkpoint-average", "gaussian"])
@pytest.mark.parametrize("num_anchors", [2, 3, 10])
def test_every_search_says_how_many_candidates_it_makes(name, num_anchors):
    search = make_search(name)
    anchors = torch.randn(num_anchors, 40, dtype=torch.float64)
    made = search.candidates(anchors, torch.Generator().manual_seed(0)).shape[0]
    assert search.num_candidates(num_anchors) == made
    assert SearchOperator.num_candidates(search, num_anchors) == made  # the generic answer agrees
    if num_anchors == 10:  # one default: 10 candidates (the average: 1)
        assert made == (1 if name == "checkpoint-average" else 10)


def test_make_search_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        make_search("esa2")
    with pytest.raises(ValueError, match="its options are"):
        make_search("checkpoint-average", agents=3)
    assert make_search("esa", snapshot_every=20).num_candidates(10) == 20
