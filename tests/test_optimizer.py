"""The ExploRLerOptimizer contract."""

import io
import math

import pytest
import torch
from torch import nn

from explorler_optim import (
    CheckpointAverage,
    EmptySpaceSearch,
    ExploreResult,
    ExploRLerOptimizer,
    GaussianSearch,
)


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def train_steps(model, opt, steps, record=False, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 3, generator=generator, dtype=next(model.parameters()).dtype)
        loss = (model(x) - 1.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if record:
            opt.record()


def distance_score(model, target=0.5):
    """A deterministic 'return': higher when the parameters are closer to ``target``."""
    return -sum(float((p.detach() - target).square().sum()) for p in model.parameters())


class BatchScorer:
    """An evaluate_many implementation with the same scores as ``distance_score``."""

    def __init__(self, target=0.5):
        self.target = target
        self.calls = []

    def evaluate_many(self, params, candidates):
        self.calls.append((params, [c.clone() for c in candidates]))
        total = 0
        for c in candidates:
            total = total + (c.double() - self.target).square().flatten(1).sum(1)
        return -total


def fresh(seed=0, **kwargs):
    model = make_model(seed)
    opt = ExploRLerOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), **kwargs)
    return model, opt


# ----------------------------------------------------------------------------- torch.optim contract
def test_is_a_torch_optimizer_with_live_forwarding():
    model, opt = fresh()
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is opt.optimizer.param_groups
    assert opt.state is opt.optimizer.state and opt.defaults is opt.optimizer.defaults
    other = torch.optim.Adam(model.parameters(), lr=0.123)
    opt.optimizer.load_state_dict(other.state_dict())  # replaces the inner group dicts
    assert opt.param_groups[0]["lr"] == 0.123
    opt.param_groups[0]["lr"] = 0.5
    assert opt.optimizer.param_groups[0]["lr"] == 0.5


def test_training_is_bit_identical_to_the_inner_optimizer():
    plain = make_model(0)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    wrapped, opt = fresh(0, record_every=3)
    train_steps(plain, plain_opt, 25)
    train_steps(wrapped, opt, 25)
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        assert torch.equal(a, b)
    assert opt.num_anchors == 8  # 25 // 3 auto-recorded anchors, none beyond max_anchors=10


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0 - step / 10),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    ],
)
def test_lr_schedulers_drive_the_inner_optimizer(make_scheduler):
    plain = make_model(0)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    wrapped = make_model(0)
    opt = ExploRLerOptimizer(torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9))
    plain_sched, sched = make_scheduler(plain_opt), make_scheduler(opt)
    for _ in range(6):
        train_steps(plain, plain_opt, 1)
        train_steps(wrapped, opt, 1)
        plain_sched.step()
        sched.step()
        assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(plain_opt.param_groups[0]["lr"])
    for a, b in zip(plain.parameters(), wrapped.parameters()):
        assert torch.equal(a, b)


def test_step_hooks_and_closure():
    model, opt = fresh()
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o)))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o)))
    x = torch.randn(4, 3)

    def closure():
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor)
    assert seen == [("pre", opt), ("post", opt)]


def test_every_torch_optimizer_attribute_is_the_inner_ones():
    """What `Optimizer.__init__` sets on a plain optimizer (the hook dictionaries among it) is
    readable on the wrapper, and is the inner optimizer's own object."""
    model, opt = fresh()
    plain = torch.optim.Adam(make_model().parameters())
    for name, value in vars(plain).items():
        assert getattr(opt, name) is getattr(opt.optimizer, name), name
        assert type(getattr(opt, name)) is type(value), name
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: None)
    assert handle.id in opt._optimizer_step_pre_hooks  # registered where the inner optimizer runs it
    handle.remove()
    assert not opt._optimizer_step_pre_hooks


def test_state_dict_hooks_run_with_the_wrapper_and_can_be_removed():
    model, opt = fresh()
    train_steps(model, opt, 2, record=True)
    seen = []
    handles = [
        opt.register_state_dict_pre_hook(lambda o: seen.append(("sd-pre", o))),
        opt.register_state_dict_post_hook(lambda o, sd: seen.append(("sd-post", o, "state" in sd))),
        opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append(("load-pre", o))),
        opt.register_load_state_dict_post_hook(lambda o: seen.append(("load-post", o))),
    ]
    state = opt.state_dict()
    opt.load_state_dict(state)
    assert seen == [("sd-pre", opt), ("sd-post", opt, True), ("load-pre", opt), ("load-post", opt)]
    assert "explorler" in state and opt.num_anchors == 2
    for handle in handles:
        handle.remove()
    opt.load_state_dict(opt.state_dict())
    assert len(seen) == 4
    plain = torch.optim.Adam(model.parameters())
    plain.load_state_dict(state)  # still loadable by a plain inner optimizer
    assert plain.state_dict()["state"].keys() == opt.optimizer.state_dict()["state"].keys()


def test_a_step_post_hook_runs_before_the_automatic_anchor_and_is_removed_with_its_handle():
    model, opt = fresh(record_every=1)
    calls = []
    handle = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(o.num_anchors))
    train_steps(model, opt, 3)
    handle.remove()
    train_steps(model, opt, 2)
    assert calls == [0, 1, 2]  # the post hook runs inside the inner step, before the anchor
    assert opt.num_anchors == 5


def test_zero_grad_and_add_param_group_forward():
    model, opt = fresh()
    train_steps(model, opt, 1)
    model(torch.randn(2, 3)).sum().backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    extra = nn.Parameter(torch.zeros(3))
    opt.add_param_group({"params": [extra], "lr": 0.1})
    assert opt.optimizer.param_groups[-1]["params"][0] is extra


# ----------------------------------------------------------------------------- construction errors
def test_construction_errors_name_the_fix():
    model = make_model()
    inner = torch.optim.Adam(model[0].parameters())
    with pytest.raises(ValueError, match="not optimised by the inner optimizer"):
        ExploRLerOptimizer(inner, explore_params=model[2].parameters())
    with pytest.raises(ValueError, match="empty"):
        ExploRLerOptimizer(inner, explore_params=[])
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        ExploRLerOptimizer(model.parameters())
    ints = nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    sgd = torch.optim.SGD([ints], lr=0.1)
    with pytest.raises(ValueError, match="no dense floating-point or complex parameters"):
        ExploRLerOptimizer(sgd)
    with pytest.raises(ValueError, match="max_anchors"):
        ExploRLerOptimizer(inner, max_anchors=1)
    with pytest.raises(ValueError, match="on_invalid"):
        ExploRLerOptimizer(inner, on_invalid="ignore")


# ----------------------------------------------------------------------------- anchors
def test_record_keeps_the_newest_max_anchors():
    model, opt = fresh(max_anchors=3)
    snapshots = []
    for _ in range(5):
        train_steps(model, opt, 1)
        opt.record()
        snapshots.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert opt.num_anchors == 3
    torch.testing.assert_close(opt.anchors(), torch.stack(snapshots[-3:]))
    # a state saved with more anchors, or a lower max_anchors later, keeps the newest too
    _, small = fresh(max_anchors=2)
    small.load_state_dict(opt.state_dict())
    assert small.num_anchors == 2
    torch.testing.assert_close(small.anchors(), torch.stack(snapshots[-2:]))
    opt.max_anchors = 2
    torch.testing.assert_close(opt.anchors(), torch.stack(snapshots[-2:]))
    with pytest.raises(ValueError, match="max_anchors"):
        opt.max_anchors = 1
    assert opt.max_anchors == 2 and opt.num_anchors == 2


def test_shape_change_is_a_clear_error():
    model, opt = fresh()
    opt.record()
    model[0].weight.data = torch.zeros(8, 4)
    with pytest.raises(ValueError, match="changed shape"):
        opt.record()


def test_explore_needs_two_anchors():
    model, opt = fresh()
    opt.record()
    with pytest.raises(ValueError, match=r"call opt.record\(\)"):
        opt.explore(lambda: 0.0)


# ----------------------------------------------------------------------------- explore
def cycle(model, opt, anchors=10):
    for _ in range(anchors):
        train_steps(model, opt, 2)
        opt.record()


def test_explore_scores_incumbent_first_and_commits_only_a_better_candidate():
    model, opt = fresh()
    cycle(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    order = []

    def evaluate():
        order.append([p.detach().clone() for p in model.parameters()])
        return distance_score(model)

    result = opt.explore(evaluate)
    assert isinstance(result, ExploreResult)
    assert result.num_candidates == 10 and result.scores.shape == (10,)
    assert all(torch.equal(a, b) for a, b in zip(order[0], before))  # the incumbent first
    assert result.incumbent_score == pytest.approx(distance_score_of(before))
    assert result.best_index == int(result.scores.argmax())
    assert result.best_score == pytest.approx(float(result.scores.max()))
    assert result.committed == (result.best_score > result.incumbent_score)
    after = [p.detach() for p in model.parameters()]
    moved = math.sqrt(sum(float((a - b).double().square().sum()) for a, b in zip(after, before)))
    if result.committed:
        assert all(torch.equal(a, b) for a, b in zip(after, order[1 + result.best_index]))
        assert result.distance == pytest.approx(moved) and moved > 0
    else:
        assert moved == 0.0 and result.distance == 0.0
    assert opt.num_anchors == 0
    assert 0 <= result.search_seconds <= result.seconds
    assert result.gain == pytest.approx(result.best_score - result.incumbent_score)


def distance_score_of(params, target=0.5):
    return -sum(float((p - target).square().sum()) for p in params)


def test_commit_happens_when_a_candidate_wins_and_resets_only_explored_state():
    model, opt = fresh()  # explores all params
    cycle(model, opt)
    assert len(opt.state) > 0
    scores = iter([0.0] + [1.0 if i == 7 else -1.0 for i in range(10)])
    result = opt.explore(lambda: next(scores))
    assert result.committed and result.best_index == 7 and result.distance > 0
    assert len(opt.state) == 0  # Adam moments of the explored params cleared


def test_reset_state_false_and_partial_explore_params_keep_other_state():
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = ExploRLerOptimizer(inner, explore_params=model[2].parameters(), reset_state=True)
    cycle(model, opt)
    first_layer = [p.detach().clone() for p in model[0].parameters()]
    scores = iter([0.0] + [1.0] * 10)
    result = opt.explore(lambda: next(scores))
    assert result.committed
    assert all(p in opt.state for p in model[0].parameters())
    assert all(p not in opt.state for p in model[2].parameters())
    assert all(torch.equal(a, b) for a, b in zip(first_layer, model[0].parameters()))
    model2, opt2 = fresh(reset_state=False)
    cycle(model2, opt2)
    scores = iter([0.0] + [1.0] * 10)
    assert opt2.explore(lambda: next(scores)).committed
    assert len(opt2.state) == len(list(model2.parameters()))


def test_without_incumbent_the_best_candidate_always_wins():
    model, opt = fresh(include_incumbent=False)
    cycle(model, opt)
    calls = []
    result = opt.explore(lambda: calls.append(1) or -1e9 - len(calls))
    assert len(calls) == 10 and result.incumbent_score is None and result.gain is None
    assert result.committed and result.best_index == 0


def test_batch_protocol_gives_the_same_choice_and_sees_incumbent_as_row_zero():
    results = []
    for protocol in ("callable", "batch"):
        model, opt = fresh()
        cycle(model, opt)
        before = [p.detach().clone() for p in model.parameters()]
        if protocol == "callable":
            result = opt.explore(lambda model=model: distance_score(model))
        else:
            scorer = BatchScorer()
            result = opt.explore(scorer)
            params, candidates = scorer.calls[0]
            assert all(a is b for a, b in zip(params, model.parameters()))
            assert all(c.shape == (11, *p.shape) for c, p in zip(candidates, params))
            assert all(torch.equal(c[0], b) for c, b in zip(candidates, before))
        results.append((result, [p.detach().clone() for p in model.parameters()]))
    (a, params_a), (b, params_b) = results
    assert a.best_index == b.best_index and a.committed == b.committed
    torch.testing.assert_close(a.scores, b.scores)
    assert all(torch.equal(x, y) for x, y in zip(params_a, params_b))


def test_a_raising_incumbent_evaluation_is_named():
    model, opt = fresh()
    cycle(model, opt)
    with pytest.raises(RuntimeError, match="scoring the incumbent"):
        opt.explore(lambda: 1 / 0)
    assert opt.num_anchors == 10


def test_batch_protocol_checks_the_number_of_scores():
    model, opt = fresh()
    cycle(model, opt)

    class Short:
        def evaluate_many(self, params, candidates):
            return [0.0] * 3

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="returned 3 scores for 11 candidates"):
        opt.explore(Short())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.num_anchors == 10


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize("exception", [RuntimeError("simulator crashed"), KeyboardInterrupt()])
def test_a_raising_evaluate_restores_parameters_and_keeps_anchors(exception):
    model, opt = fresh()
    cycle(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def evaluate():
        calls.append(1)
        if len(calls) == 6:
            raise exception
        return 0.0

    with pytest.raises(type(exception) if isinstance(exception, KeyboardInterrupt) else RuntimeError) as info:
        opt.explore(evaluate)
    if isinstance(exception, KeyboardInterrupt):
        assert any(
            "candidate 4 of 10" in note for note in getattr(info.value, "__notes__", ["candidate 4 of 10"])
        )
    else:
        assert "candidate 4 of 10" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.num_anchors == 10
    result = opt.explore(lambda: 0.0)  # the anchors are still usable
    assert result.num_candidates == 10


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", None, torch.ones(2)])
def test_invalid_scores_raise_or_are_skipped(bad):
    model, opt = fresh()
    cycle(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    scores = [0.0] + [1.0] * 10
    scores[3] = bad
    with pytest.raises(ValueError, match="candidate 2 of 10") as info:
        opt.explore(iter(scores).__next__)
    assert "restored" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert opt.num_anchors == 10
    opt.on_invalid = "skip"
    result = opt.explore(iter(scores).__next__)
    assert result.scores[2] == -math.inf and result.committed and result.best_index == 0


def test_all_invalid_without_incumbent_commits_nothing():
    model, opt = fresh(include_incumbent=False, on_invalid="skip")
    cycle(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    result = opt.explore(lambda: float("nan"))
    assert not result.committed
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- state dict
def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("search", [EmptySpaceSearch(), GaussianSearch(num_candidates=7)])
def test_state_dict_round_trip_reproduces_the_next_explore(search):
    model, opt = fresh(seed=3, search=search, anchor_dtype=torch.bfloat16)
    cycle(model, opt, anchors=6)
    opt.explore(lambda: distance_score(model))  # advance the RNG once
    cycle(model, opt, anchors=6)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    state = roundtrip(opt.state_dict())

    model2 = make_model(99)
    model2.load_state_dict(saved_model)
    opt2 = ExploRLerOptimizer(
        torch.optim.Adam(model2.parameters(), lr=1e-2), search=search, seed=123, anchor_dtype=torch.bfloat16
    )
    opt2.load_state_dict(state)
    assert opt2.num_anchors == 6
    a = opt.explore(lambda: distance_score(model))
    b = opt2.explore(lambda: distance_score(model2))
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=0)
    assert a.best_index == b.best_index
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    train_steps(model, opt, 3)
    train_steps(model2, opt2, 3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_load_state_dict_accepts_a_plain_inner_state_dict_and_rejects_mismatches():
    model, opt = fresh()
    plain = torch.optim.Adam(model.parameters(), lr=0.777)
    opt.load_state_dict(roundtrip(plain.state_dict()))
    assert opt.param_groups[0]["lr"] == 0.777
    other_model = nn.Linear(5, 5)
    other = ExploRLerOptimizer(torch.optim.Adam(other_model.parameters()))
    with pytest.raises(ValueError, match="same explore_params"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="state dict"):
        opt.load_state_dict({"weights": 1})
    # an Explorer's own state under 'explorler' lacks the step count: refused before anything loads
    train_steps(model, opt, 1)
    opt.record()
    lr_before = opt.param_groups[0]["lr"]
    half = {**plain.state_dict(), "explorler": opt.explorer.state_dict()}
    half["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError, match="lacks 'steps'"):
        opt.load_state_dict(half)
    assert opt.param_groups[0]["lr"] == lr_before and opt.num_anchors == 1


def test_repr_shows_inner_optimizer_and_search():
    _, opt = fresh(search=CheckpointAverage())
    text = repr(opt)
    assert "Adam" in text and "CheckpointAverage()" in text and "max_anchors=10" in text


# ----------------------------------------------------------------------------- dtypes and devices
def test_float64_and_mixed_dtypes():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, dtype=torch.float64))
    b = nn.Parameter(torch.randn(3, dtype=torch.float32))
    c = nn.Parameter(torch.randn(2).to(torch.bfloat16))
    opt = ExploRLerOptimizer(torch.optim.SGD([a, b, c], lr=0.1), seed=0)
    for k in range(5):
        with torch.no_grad():
            for p in (a, b, c):
                p.add_(0.01 * (k + 1) * torch.randn(p.shape, dtype=p.dtype))
        opt.record()
    result = opt.explore(lambda: -float(a.square().sum() + b.square().sum() + c.float().square().sum()))
    assert a.dtype == torch.float64 and b.dtype == torch.float32 and c.dtype == torch.bfloat16
    assert result.num_candidates == 10  # starts at anchors 0, 2, 4, then 1, 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_parameters_with_cpu_anchors():
    model = make_model().cuda()
    opt = ExploRLerOptimizer(torch.optim.Adam(model.parameters()), anchor_device="cpu")
    for _ in range(4):
        model(torch.randn(2, 3, device="cuda")).sum().backward()
        opt.step()
        opt.record()
    result = opt.explore(lambda: distance_score(model))
    assert result.num_candidates == 8 and next(model.parameters()).is_cuda
