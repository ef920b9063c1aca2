"""The wrapper against every optimizer in ``torch.optim``: real and complex parameters, each
implementation the optimizer offers (its default loop, ``foreach=True``, ``fused=True``).

A case is (optimizer, parameter kind, option). For every case the wrapper must step bit-identically
to the bare optimizer; hand its state dict to a bare optimizer (and to another wrapper) that then
trains alike; train alike after pickling and deep-copying; drive an LR scheduler alike; restore the
parameters when ``explore()`` fails, and after a commit step as a fresh optimizer would. A case the
inner optimizer itself rejects is listed in ``REJECTED`` with the error it raises: the contract
tests skip it with that reason, and ``test_the_inner_optimizer_rejects_these_cases`` checks that the
inner optimizer still raises exactly that, through the wrapper too. ``NOT_COPYABLE`` lists what torch
cannot step after a copy, where the wrapper must fail alike. Tiny tensors and few steps keep the
whole matrix at seconds of CPU time.
"""

import copy
import inspect
import io
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from explorler_optim import CheckpointAverage, ExploRLerOptimizer

# name -> keyword arguments of the bare optimizer (SGD with momentum, so that it has state)
OPTIMIZERS: dict[str, dict] = {
    "ASGD": {"lr": 0.01},
    "Adadelta": {"lr": 0.5},
    "Adafactor": {"lr": 0.01},
    "Adagrad": {"lr": 0.1},
    "Adam": {"lr": 0.01},
    "AdamW": {"lr": 0.01},
    "Adamax": {"lr": 0.01},
    "LBFGS": {"lr": 0.5, "max_iter": 3},
    "Muon": {"lr": 0.02, "ns_steps": 1},  # one Newton-Schulz step: bfloat16 matmuls are slow on CPU
    "NAdam": {"lr": 0.01},
    "RAdam": {"lr": 0.01},
    "RMSprop": {"lr": 0.01},
    "Rprop": {"lr": 0.01},
    "SGD": {"lr": 0.1, "momentum": 0.9},
    "SparseAdam": {"lr": 0.01},
}
KINDS = {"real": torch.float32, "complex": torch.complex64}
SHAPES = [(4, 3), (3, 2)]  # two matrices: Muon takes only 2-D parameters
SPARSE_ROWS = torch.tensor([0, 2])  # SparseAdam needs sparse gradients: a loss through an embedding

_FUSED_REAL_ONLY = (RuntimeError, "`fused=True` requires all the params to be floating point")
# (optimizer, kind, option) -> the error the bare optimizer raises, by type and message
REJECTED: dict[tuple[str, str, str], tuple[type[Exception], str]] = {
    ("Adafactor", "complex", "default"): (RuntimeError, "Adafactor does not support complex parameters"),
    ("Adafactor", "complex", "foreach"): (RuntimeError, "Adafactor does not support complex parameters"),
    ("Muon", "complex", "default"): (RuntimeError, "Muon does not support complex parameters"),
    ("SparseAdam", "complex", "default"): (ValueError, "SparseAdam does not support complex parameters"),
    ("Adagrad", "complex", "fused"): _FUSED_REAL_ONLY,
    ("Adam", "complex", "fused"): _FUSED_REAL_ONLY,
    ("AdamW", "complex", "fused"): _FUSED_REAL_ONLY,
    ("SGD", "complex", "fused"): _FUSED_REAL_ONLY,
}

# optimizers that torch itself cannot step after pickling or deep-copying them: the copy loses
# attributes that __init__ sets beside param_groups, state and defaults
NOT_COPYABLE: dict[str, tuple[type[Exception], str]] = {
    "LBFGS": (AttributeError, "'LBFGS' object has no attribute '_params'"),
}


def options_of(name: str) -> list[str]:
    """``default`` plus the implementations the optimizer's signature offers."""
    offered = inspect.signature(getattr(torch.optim, name)).parameters
    return ["default"] + [option for option in ("foreach", "fused") if option in offered]


CASES = [(name, kind, option) for name in OPTIMIZERS for kind in KINDS for option in options_of(name)]
ACCEPTED = [
    pytest.param(*case, marks=pytest.mark.skip(reason=f"{case[0]} rejects it: {REJECTED[case][1]}"))
    if case in REJECTED
    else case
    for case in CASES
]


def make_params(kind: str) -> list[torch.Tensor]:
    """The same fresh leaf tensors on every call."""
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=generator, dtype=KINDS[kind]).requires_grad_() for shape in SHAPES]


def make_bare(name: str, option: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    extra = {} if option == "default" else {option: True}
    return getattr(torch.optim, name)(params, **OPTIMIZERS[name], **extra)


def make_wrapped(name: str, option: str, params: list[torch.Tensor], **kwargs) -> ExploRLerOptimizer:
    return ExploRLerOptimizer(make_bare(name, option, params), seed=0, **kwargs)


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def real_values(params: list[torch.Tensor]) -> torch.Tensor:
    """The values the search moves: each complex element as its real and imaginary part."""
    return torch.cat([(torch.view_as_real(p) if p.is_complex() else p).detach().reshape(-1) for p in params])


@torch.no_grad()
def copy_params(source: torch.optim.Optimizer, target: torch.optim.Optimizer) -> None:
    for p, q in zip(params_of(target), params_of(source), strict=True):
        p.copy_(q)


def train(optimizer: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` steps on a fixed loss; LBFGS through a closure, SparseAdam on sparse gradients."""
    sparse = isinstance(optimizer, torch.optim.SparseAdam) or isinstance(
        getattr(optimizer, "optimizer", None), torch.optim.SparseAdam
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.zeros(())
        for p in params_of(optimizer):
            used = F.embedding(SPARSE_ROWS, p, sparse=True) if sparse else p
            loss = loss + (used - 0.3).abs().square().sum() + 0.1 * used.abs().pow(4).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        if "LBFGS" in type(getattr(optimizer, "optimizer", optimizer)).__name__:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()


def equal(a, b) -> bool:
    """Bitwise equality of (nested) optimizer state."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(equal, a, b))
    return a == b


def same_training(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    """Same parameters and the same torch state dict (state and param_groups), bit for bit."""
    inner_a, inner_b = ({key: o.state_dict()[key] for key in ("state", "param_groups")} for o in (a, b))
    return equal(params_of(a), params_of(b)) and equal(inner_a, inner_b)


# ----------------------------------------------------------------------------- the matrix itself
def test_the_matrix_covers_every_optimizer_in_torch_optim():
    in_torch = {
        name
        for name, value in vars(torch.optim).items()
        if inspect.isclass(value) and issubclass(value, torch.optim.Optimizer)
    } - {"Optimizer"}
    assert in_torch == set(OPTIMIZERS), "add the new optimizer (and what it rejects) to the matrix"
    assert set(REJECTED) <= set(CASES)


@pytest.mark.parametrize("case", sorted(REJECTED), ids="-".join)
def test_the_inner_optimizer_rejects_these_cases(case):
    """The reason a case is skipped holds, and the wrapper passes the inner optimizer's error on."""
    name, kind, option = case
    error, message = REJECTED[case]
    with pytest.raises(error, match=re.escape(message)):
        train(make_bare(name, option, make_params(kind)), 2)
    with pytest.raises(error, match=re.escape(message)):
        train(make_wrapped(name, option, make_params(kind)), 2)


@pytest.mark.parametrize(("name", "kind", "option"), ACCEPTED)
def test_steps_are_bit_identical_to_the_bare_optimizer(name, kind, option):
    bare = make_bare(name, option, make_params(kind))
    wrapped = make_wrapped(name, option, make_params(kind), record_every=1)
    train(bare, 3)
    train(wrapped, 3)
    assert same_training(bare, wrapped)
    assert wrapped.num_anchors == 3


@pytest.mark.parametrize(("name", "kind", "option"), ACCEPTED)
def test_state_dict_round_trips_through_the_bare_optimizer_and_torch_load(name, kind, option):
    wrapped = make_wrapped(name, option, make_params(kind), record_every=1)
    train(wrapped, 2)
    buffer = io.BytesIO()
    torch.save(wrapped.state_dict(), buffer)

    def saved():  # a copy each: optimizers loading one dict would share its step tensors
        buffer.seek(0)
        return torch.load(buffer, weights_only=True)

    bare = make_bare(name, option, make_params(kind))
    copy_params(wrapped, bare)
    bare.load_state_dict(saved())  # the bare optimizer ignores the "explorler" entry
    reloaded = make_wrapped(name, option, make_params(kind), record_every=1)
    copy_params(wrapped, reloaded)
    reloaded.load_state_dict(saved())
    assert equal(reloaded.anchors(), wrapped.anchors())

    train(wrapped, 2)
    for twin in (bare, reloaded):
        train(twin, 2)
        assert same_training(twin, wrapped), type(twin).__name__


@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"]
)
@pytest.mark.parametrize(("name", "kind", "option"), ACCEPTED)
def test_pickle_and_deepcopy_give_an_optimizer_that_trains_alike(name, kind, option, clone):
    wrapped = make_wrapped(name, option, make_params(kind), record_every=1)
    bare = make_bare(name, option, make_params(kind))
    train(wrapped, 2)
    train(bare, 2)
    twin, bare_twin = clone(wrapped), clone(bare)
    assert twin.num_anchors == 2 and twin.explorer.optimizer is twin.optimizer
    if name in NOT_COPYABLE:  # the wrapper's copy fails where torch's own copy does
        error, message = NOT_COPYABLE[name]
        for copied in (bare_twin, twin):
            with pytest.raises(error, match=re.escape(message)):
                train(copied, 1)
        return
    train(wrapped, 2)
    train(twin, 2)
    assert same_training(twin, wrapped)


@pytest.mark.parametrize(("name", "kind", "option"), ACCEPTED)
def test_an_lr_scheduler_drives_both_alike(name, kind, option):
    bare = make_bare(name, option, make_params(kind))
    wrapped = make_wrapped(name, option, make_params(kind))
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (bare, wrapped)]
    for _ in range(3):
        for optimizer, scheduler in zip((bare, wrapped), schedulers, strict=True):
            train(optimizer, 1)
            scheduler.step()
    assert wrapped.param_groups[0]["lr"] == bare.param_groups[0]["lr"] == OPTIMIZERS[name]["lr"] / 8
    assert same_training(bare, wrapped)


@pytest.mark.parametrize(("name", "kind", "option"), ACCEPTED)
def test_explore_restores_on_failure_and_a_commit_resets_to_a_fresh_optimizer(name, kind, option):
    wrapped = make_wrapped(name, option, make_params(kind), record_every=1, include_incumbent=False)
    wrapped.search = CheckpointAverage()
    train(wrapped, 2)
    before = [p.detach().clone() for p in params_of(wrapped)]

    def fails():
        raise KeyError("lost the environment")

    with pytest.raises(RuntimeError, match="parameters and anchors were restored"):
        wrapped.explore(fails)
    assert equal([p.detach() for p in params_of(wrapped)], before)
    assert wrapped.num_anchors == 2

    mean = wrapped.anchors().mean(0)
    assert wrapped.explore(lambda: 1.0).committed
    assert torch.allclose(real_values(params_of(wrapped)), mean, atol=1e-6)
    fresh = make_bare(name, option, make_params(kind))  # reset_state: as if training restarted
    copy_params(wrapped, fresh)
    train(fresh, 1)
    train(wrapped, 1)
    assert same_training(fresh, wrapped)


# ----------------------------------------------------------------------------- identity and hooks
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_wrapper_is_an_optimizer_but_not_of_the_inner_class(name):
    wrapped = make_wrapped(name, "default", make_params("real"))
    inner_class = getattr(torch.optim, name)
    assert isinstance(wrapped, torch.optim.Optimizer)
    assert not isinstance(wrapped, inner_class)  # it composes: test wrapped.optimizer instead
    assert type(wrapped.optimizer) is inner_class


@pytest.mark.parametrize("name", ["Adam", "LBFGS"])
def test_global_step_hooks_run_once_per_step_with_the_inner_optimizer(name):
    wrapped = make_wrapped(name, "default", make_params("real"))
    seen = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("global-pre", o))),
        register_optimizer_step_post_hook(lambda o, a, k: seen.append(("global-post", o))),
        wrapped.register_step_pre_hook(lambda o, a, k: seen.append(("pre", o))),
        wrapped.register_step_post_hook(lambda o, a, k: seen.append(("post", o))),
    ]
    try:
        train(wrapped, 1)
    finally:
        for handle in handles:
            handle.remove()
    inner = wrapped.optimizer
    assert seen == [("global-pre", inner), ("pre", wrapped), ("post", wrapped), ("global-post", inner)]


# ----------------------------------------------------------------------------- complex parameters
def test_complex_parameters_are_searched_through_their_real_view():
    weight = torch.randn(3, 2, dtype=torch.complex64, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    wrapped = ExploRLerOptimizer(torch.optim.Adam([weight, bias], lr=0.1), record_every=1)
    assert wrapped.num_params == 3 * 2 * 2 + 3
    train(wrapped, 3)
    assert torch.allclose(wrapped.anchors()[-1], real_values([weight, bias]))

    seen = []

    class Batch:
        def evaluate_many(self, params, candidates):
            seen.append(candidates)
            return torch.arange(len(candidates[0]), dtype=torch.float64)  # the last row wins

    start = weight.detach().clone()
    result = wrapped.explore(Batch())
    assert seen[0][0].dtype == torch.complex64 and seen[0][0].shape[1:] == weight.shape
    assert torch.equal(seen[0][0][0], start)  # row 0 is the incumbent
    assert result.committed and torch.equal(weight.detach(), seen[0][0][-1])
    assert result.distance == pytest.approx(
        float(
            (
                (weight.detach() - start).abs().square().sum()
                + (bias.detach() - seen[0][1][0]).square().sum()
            ).sqrt()
        ),
        rel=1e-5,
    )


def test_complex128_anchors_default_to_float64():
    wrapped = ExploRLerOptimizer(torch.optim.SGD([torch.zeros(2, dtype=torch.complex128)], lr=0.1))
    assert wrapped.anchor_dtype == torch.float64


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_by_default_only_what_cannot_be_searched_is_left_out_and_asking_for_it_names_the_fix():
    weight = torch.zeros(2, requires_grad=True)
    counts = torch.zeros(2, dtype=torch.int64)  # a torch optimizer takes it; no search can move it
    sparse = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.tensor([1.0]), (3,)).requires_grad_()
    wrapped = ExploRLerOptimizer(torch.optim.SGD([weight, counts, sparse], lr=0.1))
    assert wrapped.explore_params == [weight]
    with pytest.raises(
        ValueError, match=r"explore_params\[0\] has dtype torch.float32 and layout torch.sparse_coo"
    ):
        ExploRLerOptimizer(torch.optim.SGD([sparse], lr=0.1), explore_params=[sparse])
    with pytest.raises(
        ValueError,
        match=r"explore_params\[0\] has dtype torch.int64 and layout torch.strided; .*leave it out",
    ):
        ExploRLerOptimizer(torch.optim.SGD([weight, counts], lr=0.1), explore_params=[counts])
    with pytest.raises(ValueError, match="no dense floating-point or complex parameters"):
        ExploRLerOptimizer(torch.optim.SGD([counts], lr=0.1))
