"""ReplayBuffer: a ring of transitions whose checkpoint resumes sampling exactly."""

import numpy as np
import pytest
import torch

from explorler_optim.rl import ReplayBuffer


def fill(rb, start, rows):
    obs = np.arange(start, start + rows, dtype=np.float32).reshape(rows, 1).repeat(2, 1)
    rb.add(obs, obs + 0.5, obs[:, :1], obs[:, 0], np.zeros(rows))


def test_the_ring_keeps_the_newest_transitions():
    rb = ReplayBuffer(4, (2,), (1,), "cpu")
    fill(rb, 0, 3)
    assert len(rb) == 3 and not rb.full
    fill(rb, 3, 3)  # 6 transitions into 4 slots: 0 and 1 overwritten
    assert len(rb) == 4 and rb.full and rb.pos == 2
    assert sorted(rb.stores["rewards"].tolist()) == [2.0, 3.0, 4.0, 5.0]
    batch = rb.sample(64)
    assert set(batch.rewards.tolist()) <= {2.0, 3.0, 4.0, 5.0}
    assert torch.equal(batch.next_observations, batch.observations + 0.5)
    assert batch.actions.shape == (64, 1) and batch.dones.dtype == torch.float32


@pytest.mark.parametrize("rows", [3, 6])
def test_a_restored_buffer_samples_what_the_saved_one_would(rows):
    saved = ReplayBuffer(4, (2,), (1,), "cpu")
    fill(saved, 0, rows)
    restored = ReplayBuffer(4, (2,), (1,), "cpu")
    restored.load_state_dict(saved.state_dict())
    np.random.seed(0)
    expected = saved.sample(16)
    np.random.seed(0)
    got = restored.sample(16)
    assert all(torch.equal(getattr(expected, k), getattr(got, k)) for k in vars(expected))
    fill(saved, 10, 1), fill(restored, 10, 1)
    assert (restored.pos, restored.full) == (saved.pos, saved.full)
    assert "of 4 transitions" in repr(restored)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, (2,), (1,), "cpu").sample(1)
    with pytest.raises(ValueError, match="size"):
        ReplayBuffer(0, (2,), (1,), "cpu")
    rb = ReplayBuffer(4, (2,), (1,), "cpu")
    fill(rb, 0, 2)
    other = ReplayBuffer(4, (3,), (1,), "cpu")
    with pytest.raises(ValueError, match="saved size and shapes"):
        other.load_state_dict(rb.state_dict())
    assert len(other) == 0  # nothing loaded
