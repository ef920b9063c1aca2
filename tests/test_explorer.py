"""The Explorer core, and what the optimizer wrapper built on it owes to torch's optimizer contract."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from explorler_optim import EmptySpaceSearch, Explorer, ExploRLerOptimizer, GaussianSearch


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def distance_score(params, target=0.5):
    return -sum(float((p.detach() - target).square().sum()) for p in params)


def train(model, opt, steps, seed=1, record=None):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 3, generator=generator)
        loss = (model(x) - 1.0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if record is not None:
            record()


def roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- Explorer alone
def test_explorer_needs_no_optimizer_and_follows_any_update():
    """A TRPO-style loop: the parameters move by assignment, not through an optimizer."""
    model = make_model()
    explorer = Explorer(model[2].parameters(), seed=0)
    assert not explorer.can_explore
    snapshots = []
    for k in range(6):
        with torch.no_grad():
            for p in model[2].parameters():
                p.data = p.data + 0.01 * (k + 1) * torch.ones_like(p)  # a line search's assignment
        explorer.record()
        snapshots.append(torch.cat([p.detach().flatten() for p in model[2].parameters()]))
    assert explorer.num_anchors == 6 and explorer.can_explore
    torch.testing.assert_close(explorer.anchors(), torch.stack(snapshots))
    first_layer = [p.detach().clone() for p in model[0].parameters()]
    result = explorer.explore(lambda: distance_score(model[2].parameters()))
    assert result.num_candidates > 0 and explorer.num_anchors == 0 and explorer.cycles == 1
    assert params_equal(first_layer, model[0].parameters())  # only the searched params can move


def test_explorer_reset_state_clears_only_its_params_in_the_given_optimizer():
    model = make_model()
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    explorer = Explorer(model[2].parameters(), optimizer=adam, seed=0)
    train(model, adam, 10, record=explorer.record)
    scores = iter([0.0] + [1.0] * 20)
    assert explorer.explore(lambda: next(scores)).committed
    assert all(p in adam.state for p in model[0].parameters())
    assert all(p not in adam.state for p in model[2].parameters())


def test_explorer_state_dict_round_trip_reproduces_the_next_search():
    model = make_model()
    explorer = Explorer(model.parameters(), search=GaussianSearch(num_candidates=5), seed=3)
    for _ in range(4):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        explorer.record()
    state = roundtrip(explorer.state_dict())
    twin_model = copy.deepcopy(model)
    twin = Explorer(twin_model.parameters(), search=GaussianSearch(num_candidates=5), seed=99)
    twin.load_state_dict(state)
    a = explorer.explore(lambda: distance_score(model.parameters()))
    b = twin.explore(lambda: distance_score(twin_model.parameters()))
    assert torch.equal(a.scores, b.scores) and a.best_index == b.best_index
    assert params_equal(model.parameters(), twin_model.parameters())


def test_explorer_load_state_dict_rejects_bad_input_and_changes_nothing():
    model = make_model()
    explorer = Explorer(model.parameters(), seed=0)
    explorer.record()
    explorer.record()
    anchors = explorer.anchors().clone()
    with pytest.raises(ValueError, match="not an Explorer state dict"):
        explorer.load_state_dict({"origin": None})
    other = Explorer(nn.Linear(5, 5).parameters())
    with pytest.raises(ValueError, match="same explore_params"):
        explorer.load_state_dict(other.state_dict())
    assert torch.equal(explorer.anchors(), anchors)


def test_explorer_repr_names_its_settings():
    explorer = Explorer(make_model().parameters(), search=EmptySpaceSearch(agents=3))
    text = repr(explorer)
    assert "Explorer(" in text and "agents=3" in text and "anchors=0" in text


@pytest.mark.parametrize("bad", [nn.Linear(3, 2), [nn.Linear(3, 2)], 7])
def test_a_module_or_non_iterable_as_params_names_the_fix(bad):
    with pytest.raises(TypeError, match=r"parameters\(\)|Parameters"):
        Explorer(bad)
    inner = torch.optim.Adam(make_model().parameters())
    with pytest.raises(TypeError, match="explore_params"):
        ExploRLerOptimizer(inner, explore_params=bad)


# ----------------------------------------------------------------------------- the wrapper's contract
def wrapped(seed=0, **kwargs):
    model = make_model(seed)
    return model, ExploRLerOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), seed=5, **kwargs)


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
def test_wrapper_pickles_and_deep_copies_with_its_anchors(clone):
    model, opt = wrapped()
    train(model, opt, 6, record=opt.record)
    twin = clone(opt)
    twin_params = twin.explore_params
    assert twin.num_anchors == 6 and twin.explorer.optimizer is twin.optimizer
    assert all(p is q for p, q in zip(twin_params, twin.optimizer.param_groups[0]["params"]))
    assert params_equal(twin_params, opt.explore_params)
    a = opt.explore(lambda: distance_score(opt.explore_params))
    b = twin.explore(lambda: distance_score(twin_params))
    assert torch.equal(a.scores, b.scores) and params_equal(twin_params, opt.explore_params)


def test_wrapper_with_an_lr_scheduler_still_pickles():
    model, opt = wrapped()
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    train(model, opt, 3)
    scheduler.step()
    twin = pickle.loads(pickle.dumps(opt))
    assert twin.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_a_plain_optimizer_loads_the_wrapper_state_dict():
    model, opt = wrapped()
    train(model, opt, 5, record=opt.record)
    saved = roundtrip(opt.state_dict())
    assert set(saved) == {"state", "param_groups", "explorler"}
    plain_model = copy.deepcopy(model)
    plain = torch.optim.Adam(plain_model.parameters(), lr=1e-2)
    plain.load_state_dict(saved)
    train(model, opt, 4)
    train(plain_model, plain, 4)
    assert params_equal(model.parameters(), plain_model.parameters())


def test_wrapper_loads_its_own_plain_and_legacy_state_dicts():
    model, opt = wrapped()
    train(model, opt, 5, record=opt.record)
    state = roundtrip(opt.state_dict())
    legacy = {
        "optimizer": {k: v for k, v in state.items() if k != "explorler"},
        "explorler": state["explorler"],
    }
    for saved in (state, legacy):
        _, fresh = wrapped()
        fresh.load_state_dict(saved)
        assert fresh.num_anchors == 5 and torch.equal(fresh.anchors(), opt.anchors())
        assert fresh.state_dict()["explorler"]["steps"] == 5
    _, fresh = wrapped()
    fresh.load_state_dict(torch.optim.Adam(make_model().parameters(), lr=0.25).state_dict())
    assert fresh.param_groups[0]["lr"] == 0.25 and fresh.num_anchors == 0


def test_a_bad_explorer_part_loads_nothing():
    model, opt = wrapped()
    train(model, opt, 3, record=opt.record)
    state = opt.state_dict()
    state["explorler"]["shapes"] = [[1]]
    _, fresh = wrapped()
    lr_before = fresh.param_groups[0]["lr"]
    state["param_groups"][0]["lr"] = 0.9
    with pytest.raises(ValueError, match="same explore_params"):
        fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == lr_before and len(fresh.state) == 0


def test_the_same_inner_optimizer_cannot_be_wrapped_twice():
    model = make_model()
    adam = torch.optim.Adam(model.parameters())
    first = ExploRLerOptimizer(adam)
    with pytest.raises(ValueError, match="already wrapped"):
        ExploRLerOptimizer(adam)
    assert first.optimizer is adam


def test_hooks_see_the_wrapper_and_state_dict_hooks_run():
    model, opt = wrapped()
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append(("sd-pre", o)))
    opt.register_load_state_dict_post_hook(lambda o: seen.append(("load-post", o)))
    opt.load_state_dict(opt.state_dict())
    assert seen == [("sd-pre", opt), ("load-post", opt)]


def test_evaluate_many_with_a_missing_score_says_row_zero_is_the_incumbent():
    model, opt = wrapped()
    train(model, opt, 10, record=opt.record)

    class OneShort:
        def evaluate_many(self, params, candidates):
            return [0.0] * (candidates[0].shape[0] - 1)

    with pytest.raises(RuntimeError) as info:
        opt.explore(OneShort())
    message = str(info.value)
    assert "row 0 is the incumbent" in message and "raised" not in message


def test_a_search_operator_that_returns_no_candidates_is_named_and_nothing_changes():
    from explorler_optim.search import SearchOperator

    class Nothing(SearchOperator):
        def search(self, coords, generator=None):
            return coords[:0]

        def __repr__(self):
            return "Nothing()"

    model = make_model()
    opt = ExploRLerOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), search=Nothing())
    train(model, opt, 10, record=opt.record)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"Nothing\(\) returned points of shape \(0, "):
        opt.explore(lambda: 0.0)
    assert params_equal(before, list(model.parameters())) and opt.num_anchors == 10


def test_the_wrapper_is_not_a_second_torch_optimizer():
    """torch's step machinery (global step hooks, profiling) runs once per step, in the inner
    optimizer: the wrapper does not patch a step of its own around it."""
    model = make_model()
    opt = ExploRLerOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2))
    seen = []
    handle = register_optimizer_step_pre_hook(lambda o, args, kwargs: seen.append(o))
    try:
        train(model, opt, 3)
    finally:
        handle.remove()
    assert len(seen) == 3 and all(o is opt.optimizer for o in seen)
    assert not hasattr(type(opt).step, "hooked")  # torch marks the step functions it wraps


def test_result_scalars_name_what_the_scripts_log():
    model = make_model()
    explorer = Explorer(model.parameters(), search=GaussianSearch(num_candidates=3), seed=0)
    for _ in range(3):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        explorer.record()
    result = explorer.explore(lambda: distance_score(model.parameters()))
    scalars = result.scalars()
    assert list(scalars) == [
        "best_score", "incumbent_score", "gain", "committed", "num_candidates", "distance", "seconds",
        "search_seconds",
    ]  # fmt: skip
    assert scalars["gain"] == result.gain and scalars["committed"] == float(result.committed)
    assert all(isinstance(value, int | float) for value in scalars.values())
    blind = Explorer(model.parameters(), search=GaussianSearch(num_candidates=3), include_incumbent=False)
    blind.record()
    blind.record()
    blind_scalars = blind.explore(lambda: 0.0).scalars()
    assert "incumbent_score" not in blind_scalars and "gain" not in blind_scalars
