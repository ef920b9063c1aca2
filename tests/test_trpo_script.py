"""Tests of single_file_baselines/trpo_continuous_action.py and its natural-gradient optimizer
(`explorler_optim.rl.trpo`: Fisher-vector products, conjugate gradient, line search) in-process,
and smoke runs as a script."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("mujoco")
pytest.importorskip("tyro")
pytest.importorskip("tensorboard")

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl.trpo import NaturalGradientOptimizer, conjugate_gradient

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "single_file_baselines" / "trpo_continuous_action.py"

torch.set_num_threads(1)


def load_script():
    spec = importlib.util.spec_from_file_location("trpo_continuous_action", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


trpo = load_script()


# ------------------------------------------------------------------ the natural-gradient optimizer


class TinyAgent(nn.Module):
    """A tiny Gaussian policy with the script's policy interface (actor_mean, actor_logstd)."""

    def __init__(self, obs_dim=3, act_dim=2, hidden=4):
        super().__init__()
        self.actor_mean = nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, act_dim))
        self.actor_logstd = nn.Parameter(0.3 * torch.randn(1, act_dim))

    get_distribution = trpo.Agent.get_distribution


def tiny_problem(seed=0, batch=16):
    """A tiny policy in float64, a batch of states, actions from it and normalised advantages."""
    torch.manual_seed(seed)
    agent = TinyAgent().double()
    obs = torch.randn(batch, 3, dtype=torch.float64)
    with torch.no_grad():
        old_dist = agent.get_distribution(obs)
        actions = old_dist.sample()
        old_logprobs = old_dist.log_prob(actions).sum(1)
    adv = torch.randn(batch, dtype=torch.float64)
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)

    def closure():
        return trpo.surrogate_and_kl(agent, (obs, actions, old_logprobs, adv), old_dist)

    closure.inputs = (obs, actions, old_logprobs, adv, old_dist)
    return agent, obs, closure


def flat_params(agent):
    return torch.cat([p.detach().reshape(-1) for p in agent.parameters()])


def kl_of_flat(agent, obs, old_dist):
    """KL(old || new) as a function of the flat parameter vector (for an explicit Hessian)."""
    names = [n for n, _ in agent.named_parameters()]
    shapes = [p.shape for p in agent.parameters()]

    def kl(flat):
        tensors, offset = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = math.prod(shape)
            tensors[name] = flat[offset : offset + n].view(shape)
            offset += n
        mean = torch.func.functional_call(
            agent.actor_mean,
            {k.removeprefix("actor_mean."): v for k, v in tensors.items() if k != "actor_logstd"},
            (obs,),
        )
        new = torch.distributions.Normal(mean, tensors["actor_logstd"].exp().expand_as(mean))
        return torch.distributions.kl_divergence(old_dist, new).sum(1).mean()

    return kl


def analytic_fisher(agent, obs):
    """Fisher matrix of a state-independent-std Gaussian policy: mean over states of
    J_mu^T diag(1/sigma^2) J_mu for the mean parameters, 2 I for the log-stds, no cross terms.
    Ordered as agent.parameters(): the log-std (the module's own parameter) first."""
    assert next(agent.parameters()) is agent.actor_logstd
    mean_params = list(agent.actor_mean.parameters())
    n_mean = sum(p.numel() for p in mean_params)
    act_dim = agent.actor_logstd.numel()
    inv_var = torch.exp(-2 * agent.actor_logstd.detach().reshape(-1))
    fisher = torch.zeros(n_mean + act_dim, n_mean + act_dim, dtype=torch.float64)
    for s in obs:
        rows = []
        out = agent.actor_mean(s[None])[0]
        for j in range(act_dim):
            grads = torch.autograd.grad(out[j], mean_params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        jac = torch.stack(rows)  # (act_dim, n_mean)
        fisher[act_dim:, act_dim:] += jac.T @ (inv_var[:, None] * jac)
    fisher /= len(obs)
    fisher[:act_dim, :act_dim] = 2 * torch.eye(act_dim, dtype=torch.float64)
    return fisher


def test_fisher_vector_product_matches_explicit_fisher():
    agent, obs, closure = tiny_problem()
    with torch.no_grad():
        old_dist = agent.get_distribution(obs)
    explicit_hessian = torch.autograd.functional.hessian(kl_of_flat(agent, obs, old_dist), flat_params(agent))
    fisher = analytic_fisher(agent, obs)
    assert torch.allclose(explicit_hessian, fisher, atol=1e-10)  # Hessian of the KL = Fisher

    damping = 0.1
    opt = NaturalGradientOptimizer(agent.parameters(), damping=damping)
    _, kl = closure()
    fvp = opt.fisher_vector_product(kl)
    torch.manual_seed(1)
    for _ in range(3):
        v = torch.randn(fisher.shape[0], dtype=torch.float64)
        assert torch.allclose(fvp(v), fisher @ v + damping * v, atol=1e-10)


def test_kl_reduction_mean_is_the_per_dimension_average():
    agent, obs, closure = tiny_problem()
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move away from the old policy: KL > 0
    surrogate, kl_sum = closure()
    *args, old_dist = closure.inputs
    _, kl_mean = trpo.surrogate_and_kl(agent, args, old_dist, "mean")
    assert kl_sum.item() > 0
    assert kl_mean.item() == pytest.approx(kl_sum.item() / agent.actor_logstd.numel(), rel=1e-12)


def test_conjugate_gradient_solves_spd_system():
    torch.manual_seed(0)
    n = 8
    m = torch.randn(n, n, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=4 * n, residual_tol=1e-24)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)
    # stops as soon as the residual is below the tolerance: one product for a scaled identity
    calls = []
    x = conjugate_gradient(lambda v: calls.append(1) or 3.0 * v, b, iters=15)
    assert len(calls) == 1 and torch.allclose(x, b / 3.0)
    # and never takes more than `iters` products
    calls.clear()
    conjugate_gradient(lambda v: calls.append(1) or a @ v, b, iters=3)
    assert len(calls) == 3


def full_step_norm(seed=0, max_kl=0.01):
    """Length of the unshrunk natural-gradient step of tiny_problem(seed)."""
    agent, _, closure = tiny_problem(seed)
    before = flat_params(agent)
    opt = NaturalGradientOptimizer(agent.parameters(), max_kl=max_kl, backtrack_iters=1)
    stats = opt.step(closure)
    assert stats["line_search_success"]  # the plain problem takes its full step
    assert 0 < stats["kl"] <= max_kl
    return float((flat_params(agent) - before).norm()), stats["improvement"]


def logged(closure, agent, quartic_kl=0.0, quadratic_loss=0.0):
    """Wrap a closure: add terms with zero gradient and Hessian at the start (so the step direction
    and size are unchanged) that inflate the KL or shrink the surrogate away from it; record the
    (surrogate, kl) of every line-search try."""
    start = flat_params(agent)
    tries = []

    def wrapped():
        surrogate, kl = closure()
        delta = torch.cat([p.reshape(-1) for p in agent.parameters()]) - start
        surrogate = surrogate - quadratic_loss * delta.square().sum()
        kl = kl + quartic_kl * delta.square().sum() ** 2
        if not torch.is_grad_enabled():
            tries.append((float(surrogate), float(kl)))
        return surrogate, kl

    return wrapped, tries


def test_line_search_never_accepts_a_step_violating_the_kl_bound():
    max_kl = 0.01
    norm, _ = full_step_norm(max_kl=max_kl)
    agent, _, closure = tiny_problem()
    start = flat_params(agent)
    # at the full step the reported KL exceeds the bound by ~3 max_kl; shrinking helps
    wrapped, tries = logged(closure, agent, quartic_kl=3 * max_kl / norm**4)
    opt = NaturalGradientOptimizer(agent.parameters(), max_kl=max_kl)
    stats = opt.step(wrapped)
    assert tries[0][1] > max_kl  # the full step violates the bound ...
    assert stats["line_search_success"] and stats["backtracks"] >= 1  # ... and was shrunk
    before = stats["policy_objective"] - stats["improvement"]
    # every rejected try broke the bound or did not improve; the accepted one is the first that
    # did neither
    assert all(kl > max_kl or s <= before for s, kl in tries[:-1])
    assert tries[-1][1] <= max_kl and tries[-1][0] > before
    surrogate, kl = wrapped()
    assert kl.item() <= max_kl and kl.item() == pytest.approx(stats["kl"])
    assert stats["improvement"] > 0
    step = float((flat_params(agent) - start).norm())
    assert step == pytest.approx(norm * 0.8 ** stats["backtracks"], rel=1e-6)


def test_line_search_restores_parameters_when_every_try_fails():
    max_kl = 0.01
    norm, gain = full_step_norm(max_kl=max_kl)
    # (a) the KL bound is violated at every try, even the last (0.8^9 of the step)
    agent, _, closure = tiny_problem()
    start = flat_params(agent)
    wrapped, tries = logged(closure, agent, quartic_kl=1e6 * max_kl / norm**4)
    stats = NaturalGradientOptimizer(agent.parameters(), max_kl=max_kl).step(wrapped)
    assert len(tries) == 10 and all(kl > max_kl for _, kl in tries)
    assert not stats["line_search_success"] and stats["kl"] == 0.0
    assert torch.equal(flat_params(agent), start)
    # (b) the surrogate gets worse at every try
    agent, _, closure = tiny_problem()
    wrapped, tries = logged(closure, agent, quadratic_loss=100 * gain / norm**2)
    stats = NaturalGradientOptimizer(agent.parameters(), max_kl=max_kl).step(wrapped)
    assert len(tries) == 10 and all(kl <= max_kl for _, kl in tries)
    assert not stats["line_search_success"] and stats["improvement"] == 0.0
    assert torch.equal(flat_params(agent), start)
    # (c) the closure raises (or Ctrl-C arrives) at a trial step: the error passes, the step does not
    agent, _, closure = tiny_problem()
    start = flat_params(agent)

    def fails_at_a_trial_step():
        if not torch.is_grad_enabled():
            raise KeyboardInterrupt
        return closure()

    with pytest.raises(KeyboardInterrupt):
        NaturalGradientOptimizer(agent.parameters(), max_kl=max_kl).step(fails_at_a_trial_step)
    assert torch.equal(flat_params(agent), start)


def test_natural_gradient_optimizer_inside_explorler_optimizer():
    agent, _, closure = tiny_problem()
    ng = NaturalGradientOptimizer(agent.parameters())
    opt = ExploRLerOptimizer(ng, seed=0)
    assert isinstance(ng, torch.optim.Optimizer)
    for _ in range(3):
        stats = opt.step(closure)  # the wrapper forwards the closure and returns the stats
        assert set(stats) >= {"policy_objective", "kl", "line_search_success", "improvement"}
        opt.record()
    assert opt.num_anchors == 3
    state = opt.state_dict()
    opt.load_state_dict(state)
    assert state["param_groups"][0]["max_kl"] == 0.01  # the inner's own layout, plus "explorler"


# ------------------------------------------------------------------------------ the script itself

# Hopper with a 50-step cap: an untrained policy falls within ~20-50 steps, so episodes end often.
TINY = [
    "--env-id", "Hopper-v5",
    "--max-episode-steps", "50",
    "--num-steps", "64",
    "--critic-minibatch-size", "32",
    "--n-critic-updates", "2",
    "--explore-every", "2",
    "--esa-steps", "4",
    "--eval-episodes", "1",
    "--heldout-episodes", "1",
    "--eval-every", "2",
    "--quiet",
]  # fmt: skip

TRPO_TAGS = [
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/learning_rate",
    "charts/SPS",
    "charts/line_search_success",
    "losses/value_loss",
    "losses/policy_objective",
    "losses/kl",
    "losses/entropy",
    "losses/explained_variance",
]
# values that must not depend on wall-clock time
DETERMINISTIC_TAGS = [
    "charts/episodic_return",
    "losses/value_loss",
    "losses/policy_objective",
    "losses/kl",
    "eval/episodic_return",
    "charts/total_env_steps",
]


@pytest.fixture(scope="module")
def explorler_run(script):
    return script.train("explorler", "--total-timesteps", 1024)


@pytest.fixture(scope="module")
def baseline_run(script):
    return script.train("baseline", "--no-explorler", "--total-timesteps", 256)


@pytest.mark.slow
def test_explorler_run_logs_all_tags(explorler_run, explorler_tags):
    run = explorler_run
    for tag in TRPO_TAGS + explorler_tags + ["charts/total_env_steps", "eval/episodic_return"]:
        assert tag in run.scalars, f"missing {tag}; have {sorted(run.scalars)}"
    assert "explorler/candidate_scores" in run.tags["histograms"]
    assert any(t.startswith("hyperparameters") for t in run.tags["tensors"]), run.tags
    # one anchor per iteration, a search every 2 iterations (unless it could overrun the budget)
    iterations = run.steps("losses/kl")
    searched = run.steps("explorler/num_candidates")
    skipped = run.steps("explorler/skipped_searches") if "explorler/skipped_searches" in run.scalars else []
    assert searched and sorted(searched + skipped) == iterations[1::2]
    assert all(n >= 2 for n in run.values("explorler/num_candidates"))
    assert set(run.values("explorler/committed")) <= {0.0, 1.0}


@pytest.mark.slow
def test_baseline_run_trpo_scalars(baseline_run):
    run = baseline_run
    for tag in TRPO_TAGS + ["charts/total_env_steps", "eval/episodic_return"]:
        assert tag in run.scalars, f"missing {tag}"
    assert not [t for t in run.scalars if t.startswith("explorler/")]
    assert all(s == v for s, v in run.scalars["charts/total_env_steps"])
    assert run.steps("losses/value_loss") == [64, 128, 192, 256]
    assert run.steps("eval/episodic_return") == [128, 256]
    # the trust region holds at every step; a rejected step moves nothing (kl logged as 0)
    success = run.values("charts/line_search_success")
    assert set(success) <= {0.0, 1.0} and sum(success) >= 1
    assert all(0.0 <= kl <= 0.01 for kl in run.values("losses/kl"))
    assert all(math.isfinite(v) for v in run.values("losses/value_loss"))
    # the critic's Adam: sb3-contrib's constant 1e-3 by default
    assert run.values("charts/learning_rate") == pytest.approx([1e-3] * 4)
    # every finished episode is logged (gymnasium 1.x final_info layout)
    lengths = run.values("charts/episodic_length")
    assert len(run.values("charts/episodic_return")) == len(lengths) >= 256 // 50
    assert all(1 <= n <= 50 for n in lengths) and sum(lengths) <= 256


@pytest.mark.slow
def test_count_eval_steps_stays_within_the_budget(explorler_run):
    run = explorler_run
    budget = 1024
    limit = budget + int(0.01 * budget)  # --budget-tolerance 0.01
    totals = run.scalars["charts/total_env_steps"]
    eval_steps = dict(run.scalars["explorler/eval_env_steps"])
    for step, total in totals:  # eval_env_steps is cumulative, logged at search iterations
        spent = max([0] + [v for s, v in eval_steps.items() if s <= step])
        assert total == step + spent
    # no iteration or search started that could end past the budget + 1%; the run went on while
    # another iteration fitted
    assert totals[-1][1] <= limit
    assert all(v < budget for _, v in totals[:-1])
    assert totals[-1][1] + 64 > limit or totals[-1][1] >= budget
    # each search within its bound: (candidates + incumbent) x 1 episode x the 50-step cap
    anchors = dict(zip(run.steps("explorler/num_candidates"), run.values("explorler/num_candidates")))
    before = 0
    for step, cumulative in eval_steps.items():
        assert 0 < cumulative - before <= (anchors[step] + 1) * 50
        before = cumulative
    assert totals[-1][0] < budget  # candidate evaluation ate into the budget


@pytest.mark.slow
def test_checkpoint_save_evaluate_resume(script, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ckpt")
    ckpt_path = cwd / "model.pt"
    save_args = ["--total-timesteps", 256, "--no-count-eval-steps", "--save-model", "--kl-reduction", "mean"]
    first = script.train_in(cwd, *save_args, "--checkpoint-path", ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ["agent", "optimizer", "critic_optimizer", "obs_rms", "return_rms", "args"]:
        assert key in ckpt
    assert ckpt["format"] == "explorler-trpo-continuous/1"
    assert ckpt["global_step"] == 256 and ckpt["iteration"] == 4 and ckpt["cycle"] == 2
    assert ckpt["total_env_steps"] == ckpt["global_step"] + ckpt["eval_env_steps"]
    assert "explorler" in ckpt["optimizer"]  # the wrapper's state: the inner's dict plus one key
    assert ckpt["optimizer"]["param_groups"][0]["max_kl"] == 0.01
    assert ckpt["obs_rms"][0]["count"] > 1 and ckpt["obs_rms"][0]["mean"].shape == (11,)
    assert not list(cwd.glob("*.tmp*"))

    # the saved model, evaluated later with its saved statistics, scores what it scored at save
    logged_return = first.values("eval/episodic_return")[-1]
    proc = script.run(cwd, "--eval-checkpoint", ckpt_path, "--heldout-episodes", 1)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["eval_episodic_return"] == pytest.approx(ckpt["eval_return"], abs=1e-9)
    assert result["eval_episodic_return"] == pytest.approx(logged_return, rel=1e-5)

    # resume continues from the saved counters (and the critic's Adam state)
    resume_dir = tmp_path_factory.mktemp("resume")
    budget = ckpt["global_step"] + 128
    resumed = script.train_in(
        resume_dir, "--total-timesteps", budget, "--no-count-eval-steps", "--resume", ckpt_path
    )
    assert resumed.steps("losses/value_loss") == [320, 384]
    assert resumed.steps("explorler/num_candidates") == [384]  # iterations 5, 6: a search at 6


@pytest.mark.slow
def test_same_seed_same_returns(script, baseline_run):
    second = script.train("again", "--no-explorler", "--total-timesteps", 256)
    for tag in DETERMINISTIC_TAGS:
        assert baseline_run.scalars[tag] == second.scalars[tag], tag


@pytest.mark.slow
def test_population_search_from_the_flags(script):
    # pbt over each cycle's 2 anchors: both scored, the better kept, one child of it
    run = script.train("pbt", "--search", "pbt", "--total-timesteps", 256, "--no-count-eval-steps")
    assert set(run.values("explorler/num_candidates")) == {3.0}
