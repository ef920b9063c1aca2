"""Benchmark for issue 5: how fast, and how cheap in env steps, is candidate evaluation?

Two measurements in one run, on real PPO anchors:

1. Racing vs exhaustive. A short PPO run on Hopper-v5 (the single-file PPO's ``Agent``, training
   env wrappers and hyperparameters, loaded from ``single_file_baselines/ppo_continuous_action.py``, GAE,
   on one env, wrapped in ``ExploRLerOptimizer``; an anchor after every epoch, a search after every
   iteration) scores each cycle's candidates (incumbent + 20 ESA candidates) twice with the same
   seeds: exhaustively (3 episodes each) and with racing (successive halving). Training follows the
   exhaustive scores. Per cycle we record the env steps of both and whether the racing pick is
   within noise of the exhaustive winner: same pick, or, on ``--heldout-episodes`` fresh episodes
   (paired seeds), the exhaustive winner's mean is not better than the racing pick's by more than
   2 standard errors.
2. Wall-clock, side by side on the same candidates (the last cycles' 21 candidates x 3 episodes):
   the sequential in-place loop (load each candidate into the actor, run its 3 episodes one by one
   on a single env) vs ``PolicyEvaluator`` batched with 1 and 2 worker processes, and racing with 1.
   Methods are interleaved and repeated; the median is reported. Also: the cost of one batched
   forward pass (``BatchedPolicy``'s fast path vs ``torch.func`` vs separate module calls).

Results: ``results.json`` and ``results.md`` (with command, commit, versions, machine and date)
under ``--out`` (default ``benchmarks/results/evaluation/``).

    python -m benchmarks.bench_evaluation                 # full run (~5-10 min on 2 busy cores)
    python -m benchmarks.bench_evaluation --iterations 3 --num-steps 256 --timing-repeats 1 \\
        --out /tmp/evaluation                             # smoke run (under a minute)
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from benchmarks.common import REPO, load_script, write_results
from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import ObsNormalizer, PolicyEvaluator
from explorler_optim.rl.batched import BatchedPolicy
from explorler_optim.rl.reuse import compute_gae

# the single-file PPO as a module (its main does not run)
PPO = load_script(REPO / "single_file_baselines" / "ppo_continuous_action.py")


def parse_args(argv=None):
    defaults = PPO.Args()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--iterations", type=int, default=24, help="PPO iterations (1 cycle each)")
    p.add_argument("--num-steps", type=int, default=defaults.num_steps, help="PPO rollout length")
    p.add_argument("--update-epochs", type=int, default=defaults.update_epochs)
    p.add_argument("--num-minibatches", type=int, default=defaults.num_minibatches)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--episodes", type=int, default=3, help="episodes per candidate")
    p.add_argument("--racing-eta", type=float, default=3.0)
    p.add_argument("--heldout-episodes", type=int, default=10)
    p.add_argument("--timing-cycles", type=int, default=4, help="last cycles used for timing")
    p.add_argument("--timing-repeats", type=int, default=5)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "evaluation"))
    return p.parse_args(argv)


# ------------------------------------------------------------------- racing vs exhaustive


class Comparer:
    """evaluate_many for explore(): scores exhaustively AND with racing, returns exhaustive."""

    def __init__(self, agent, make_env, args):
        self.full = PolicyEvaluator(agent.actor_mean, make_env, episodes=args.episodes)
        self.race = PolicyEvaluator(
            agent.actor_mean,
            make_env,
            episodes=args.episodes,
            racing=True,
            racing_eta=args.racing_eta,
        )
        self.heldout = PolicyEvaluator(agent.actor_mean, make_env, episodes=args.heldout_episodes)
        self.cycles: list[dict] = []
        self.saved: list[tuple] = []
        self.norm = None
        self.cycle = 0

    def evaluate_many(self, params, candidates):
        seed = 10_000 + 100 * self.cycle
        for ev in (self.full, self.race):
            ev.obs_normalizer = self.norm
            ev.seed = seed
        s_full = self.full.evaluate_many(params, candidates)
        full_steps, full_secs = self.full.last_env_steps, self.full.last_seconds
        s_race = self.race.evaluate_many(params, candidates)
        w, r = int(torch.argmax(s_full)), int(torch.argmax(s_race))
        rec = {
            "cycle": self.cycle,
            "n": int(s_full.numel()),
            "exhaustive_env_steps": full_steps,
            "racing_env_steps": self.race.last_env_steps,
            "exhaustive_episodes": self.full.last_episodes,
            "racing_episodes": self.race.last_episodes,
            "exhaustive_seconds": full_secs,
            "racing_seconds": self.race.last_seconds,
            "exhaustive_pick": w,
            "racing_pick": r,
            "same_pick": w == r,
            "exhaustive_best": float(s_full[w]),
            "racing_pick_full_budget_score": float(s_full[r]),
            "full_budget_gap": float(s_full[w] - s_full[r]),
            "racing_pick_episodes": int(self.race.last_episode_counts[r]),
            "mean_episode_length": full_steps / max(1, self.full.last_episodes),
            "incumbent_full_score": float(s_full[0]),
        }
        # within noise: same pick, or on fresh paired episodes W is not better than R by > 2 SE
        if w == r:
            rec["within_noise"] = True
        else:
            self.heldout.obs_normalizer = self.norm
            self.heldout.seed = 50_000 + 100 * self.cycle
            pair = [c[[w, r]] for c in candidates]
            self.heldout.evaluate_many(params, pair)
            table = self.heldout.last_returns.numpy()
            d = table[0] - table[1]
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
            rec.update(
                heldout_winner=float(table[0].mean()),
                heldout_racing_pick=float(table[1].mean()),
                heldout_diff=float(d.mean()),
                heldout_diff_se=se,
                heldout_env_steps=self.heldout.last_env_steps,
                within_noise=bool(d.mean() <= 2 * se),
            )
        self.cycles.append(rec)
        self.saved.append(([p for p in params], [c.detach().clone() for c in candidates], self.norm, seed))
        self.cycle += 1
        return s_full

    def close(self):
        for ev in (self.full, self.race, self.heldout):
            ev.close()


def train_and_compare(args, log):
    """The single-file PPO's algorithm on one env, a search (scored by ``Comparer``) every iteration."""
    ppo = PPO.Args()  # the script's hyperparameters: gamma, GAE lambda, clip, loss and gradient clip
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    env = PPO.make_env(args.env_id, ppo.gamma)()
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    agent = PPO.Agent(obs_dim, act_dim)
    actor_params = list(agent.actor_mean.parameters()) + [agent.actor_logstd]
    opt = ExploRLerOptimizer(
        torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5),
        explore_params=actor_params,
        max_anchors=10,
        seed=args.seed,
    )
    comparer = Comparer(agent, functools.partial(gym.make, args.env_id), args)
    n = args.num_steps
    mb = n // args.num_minibatches
    obs_buf = torch.zeros(n, obs_dim)
    act_buf = torch.zeros(n, act_dim)
    logp_buf = torch.zeros(n)
    rew_buf = torch.zeros(n)
    done_buf = torch.zeros(n)
    val_buf = torch.zeros(n)
    obs, _ = env.reset(seed=args.seed)
    next_obs = torch.as_tensor(obs, dtype=torch.float32)
    next_done = 0.0
    returns_seen = []
    for it in range(args.iterations):
        t_it = time.perf_counter()
        opt.param_groups[0]["lr"] = (1.0 - it / args.iterations) * args.learning_rate
        for t in range(n):
            obs_buf[t] = next_obs
            done_buf[t] = next_done
            with torch.no_grad():
                action, logp, _, value = agent.get_action_and_value(next_obs[None])
            act_buf[t], logp_buf[t], val_buf[t] = action[0], logp[0], value[0, 0]
            o, r, term, trunc, info = env.step(action[0].numpy())
            rew_buf[t] = float(r)
            if term or trunc:
                returns_seen.append(float(info["episode"]["r"]))
                o, _ = env.reset()
            next_obs = torch.as_tensor(o, dtype=torch.float32)
            next_done = float(term or trunc)
        with torch.no_grad():
            next_val = agent.get_value(next_obs[None])[0, 0]
            adv, ret = compute_gae(rew_buf, val_buf, done_buf, next_val, next_done, ppo.gamma, ppo.gae_lambda)
        clip = ppo.clip_coef
        for _epoch in range(args.update_epochs):
            perm = torch.randperm(n)
            for s in range(0, n, mb):
                idx = perm[s : s + mb]
                _, newlogp, _, v = agent.get_action_and_value(obs_buf[idx], act_buf[idx])
                ratio = (newlogp - logp_buf[idx]).exp()
                a_mb = adv[idx]
                a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8)
                pg = torch.max(-a_mb * ratio, -a_mb * ratio.clamp(1 - clip, 1 + clip)).mean()
                v = v.view(-1)
                v_clip = val_buf[idx] + (v - val_buf[idx]).clamp(-clip, clip)
                vloss = 0.5 * torch.max((v - ret[idx]) ** 2, (v_clip - ret[idx]) ** 2).mean()
                loss = pg + ppo.vf_coef * vloss  # the script's entropy coefficient is 0
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), ppo.max_grad_norm)
                opt.step()
            opt.record()  # an anchor after every epoch
        t_train = time.perf_counter() - t_it
        comparer.norm = ObsNormalizer.from_env(env)
        res = opt.explore(comparer)
        c = comparer.cycles[-1]
        recent = float(np.mean(returns_seen[-10:])) if returns_seen else float("nan")
        ratio = c["racing_env_steps"] / c["exhaustive_env_steps"]
        log(
            f"iter {it + 1}/{args.iterations}: train {t_train:.1f}s, train return(last10) "
            f"{recent:.1f}, ep len {c['mean_episode_length']:.0f}, exhaustive "
            f"{c['exhaustive_env_steps']} steps {c['exhaustive_seconds']:.2f}s, racing "
            f"{c['racing_env_steps']} steps ({ratio:.2f}x), pick W={c['exhaustive_pick']} "
            f"R={c['racing_pick']} within_noise={c['within_noise']}, committed={res.committed}"
        )
    env.close()
    return agent, comparer


# ---------------------------------------------------------------------------------- timing


def sequential_loop(policy, make_env, params, candidates, episodes, seed, norm):
    """The plain loop: load each candidate in place, run its episodes one by one on one env."""
    env = make_env()
    saved = [p.detach().clone() for p in params]
    scores, steps = [], 0
    low, high = env.action_space.low, env.action_space.high
    try:
        for i in range(candidates[0].shape[0]):
            with torch.no_grad():
                for p, c in zip(params, candidates, strict=True):
                    p.copy_(c[i])
            total = 0.0
            for k in range(episodes):
                o, _ = env.reset(seed=seed + k)
                done = False
                while not done:
                    with torch.no_grad():
                        a = policy(torch.as_tensor(norm(o))[None])[0].numpy()
                    o, r, term, trunc, _ = env.step(np.clip(a, low, high))
                    total += float(r)
                    steps += 1
                    done = term or trunc
            scores.append(total / episodes)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
        env.close()
    return np.array(scores), steps


def _cpu_busy_seconds() -> float | None:
    """Machine-wide busy CPU seconds (all cores) from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timing(agent, comparer, args, log):
    make_env = functools.partial(gym.make, args.env_id)
    policy = agent.actor_mean
    sets = comparer.saved[-args.timing_cycles :]
    evs = {}
    startup = {}
    for w in (1, 2):
        t0 = time.perf_counter()
        evs[w] = PolicyEvaluator(policy, make_env, episodes=args.episodes, workers=w)
        # untimed warm-up call: builds the env pool (and spawns the worker processes)
        params, cands, norm, seed = sets[0]
        evs[w].obs_normalizer = norm
        evs[w].evaluate_many(params, [c[:1] for c in cands])
        startup[w] = time.perf_counter() - t0
    # racing (successive halving) with one process, for reference: fewer env steps, other scores
    evs["race"] = PolicyEvaluator(policy, make_env, episodes=args.episodes, racing=True)
    evs["race"].obs_normalizer = sets[0][2]
    evs["race"].evaluate_many(sets[0][0], [c[:1] for c in sets[0][1]])
    names = ["sequential", "batched_w1", "batched_w2", "racing_w1"]
    times = {k: [] for k in names}
    # CPU seconds on the critical path: robust to other processes sharing the cores. For
    # workers=2 it is the parent's CPU time plus the busiest worker's CPU time.
    cpu = {k: [] for k in names}
    steps = {}
    agree = []
    own_cpu = 0.0  # CPU seconds of this benchmark (parent + workers) during the timed calls
    busy0, wall0 = _cpu_busy_seconds(), time.perf_counter()
    for rep in range(args.timing_repeats):
        for si, (params, cands, norm, seed) in enumerate(sets):
            order = list(names)
            if rep % 2:
                order.reverse()
            res = {}
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                if name == "sequential":
                    s, st = sequential_loop(policy, make_env, params, cands, args.episodes, seed, norm)
                else:
                    ev = evs[{"batched_w1": 1, "batched_w2": 2, "racing_w1": "race"}[name]]
                    ev.obs_normalizer, ev.seed = norm, seed
                    s = ev.evaluate_many(params, cands).numpy()
                    st = ev.last_env_steps
                dt_ = time.perf_counter() - t0
                cpu_ = time.process_time() - c0
                own_cpu += cpu_
                if name == "batched_w2":
                    cpu_ += max(evs[2].last_worker_cpu_seconds)
                    own_cpu += sum(evs[2].last_worker_cpu_seconds)
                res[name] = s
                if rep == 0:
                    times[name].append([])
                    cpu[name].append([])
                times[name][si].append(dt_)
                cpu[name][si].append(cpu_)
                steps.setdefault(name, {})[si] = st
                log(
                    f"  timing rep {rep} set {si}: {name:11s} wall {dt_:6.2f}s cpu(critical) "
                    f"{cpu_:6.2f}s  {st} env steps"
                )
            agree.append(
                {
                    "set": si,
                    "max_abs_diff_w1_vs_seq": float(np.abs(res["batched_w1"] - res["sequential"]).max()),
                    "max_abs_diff_w2_vs_w1": float(np.abs(res["batched_w2"] - res["batched_w1"]).max()),
                    "same_argmax_w1_seq": int(np.argmax(res["batched_w1"]))
                    == int(np.argmax(res["sequential"])),
                    "score_range": float(res["sequential"].max() - res["sequential"].min()),
                }
            )
    busy1, wall1 = _cpu_busy_seconds(), time.perf_counter()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - own_cpu) / (wall1 - wall0)
    log(f"  other processes used {others} cores on average during the timing phase")
    for ev in evs.values():
        ev.close()
    med = {k: sum(statistics.median(ts) for ts in v) for k, v in times.items()}
    cpu_med = {k: sum(statistics.median(ts) for ts in v) for k, v in cpu.items()}
    total_steps = {k: sum(v.values()) for k, v in steps.items()}
    return {
        "candidate_sets": len(sets),
        "candidates_per_set": int(sets[0][1][0].shape[0]),
        "episodes": args.episodes,
        "repeats": args.timing_repeats,
        "seconds_median_total": med,
        "seconds_all": times,
        "cpu_critical_seconds_median_total": cpu_med,
        "cpu_critical_seconds_all": cpu,
        "cpu_speedup_vs_sequential": {
            "batched_w1": cpu_med["sequential"] / cpu_med["batched_w1"],
            "batched_w2": cpu_med["sequential"] / cpu_med["batched_w2"],
            "racing_w1": cpu_med["sequential"] / cpu_med["racing_w1"],
        },
        "env_steps_total": total_steps,
        "steps_per_second": {k: total_steps[k] / med[k] for k in med},
        "speedup_vs_sequential": {
            "batched_w1": med["sequential"] / med["batched_w1"],
            "batched_w2": med["sequential"] / med["batched_w2"],
            "racing_w1": med["sequential"] / med["racing_w1"],
        },
        "startup_seconds_excluded": startup,
        "other_processes_cores_during_timing": others,
        "agreement": agree,
    }


def forward_microbench(agent, n=21, slots=3, reps=300):
    """Cost of one batched forward for n candidates x slots envs: baddbmm fast path vs
    torch.func.functional_call + vmap vs n separate module calls (in-place loading excluded)."""
    policy = agent.actor_mean
    obs_dim = policy[0].in_features
    g = torch.Generator().manual_seed(0)
    stacked = {
        k: v.detach()[None] + 0.01 * torch.randn((n,) + v.shape, generator=g)
        for k, v in policy.named_parameters()
    }
    obs = torch.randn(n, slots, obs_dim, generator=g)
    fast, vm = BatchedPolicy(policy, fast=True), BatchedPolicy(policy, fast=False)
    out = {}
    with torch.no_grad():
        ref = vm(stacked, obs)
        assert torch.allclose(fast(stacked, obs), ref, atol=1e-5)
        for name, fn in (("baddbmm_fast_path", fast), ("functional_call_vmap", vm)):
            for _ in range(20):
                fn(stacked, obs)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn(stacked, obs)
            out[name] = (time.perf_counter() - t0) / reps * 1e6
        t0 = time.perf_counter()
        for _ in range(reps // 10):
            for i in range(n):
                policy(obs[i])
        out["n_separate_module_calls"] = (time.perf_counter() - t0) / (reps // 10) * 1e6
    return {"candidates": n, "slots": slots, "microseconds_per_forward": out}


# ---------------------------------------------------------------------------------- report


def markdown(out: dict) -> str:
    t = out["timing"]
    r = out["racing"]
    others = t["other_processes_cores_during_timing"]
    others = "unknown" if others is None else f"{others:.2f}"
    lines = [
        "# Evaluation benchmark (issue 5)",
        "",
        f"- load average at start {out['loadavg_start']}, at end {out['loadavg_end']} (shared "
        f"machine, {out['cores']} cores)",
        f"- total wall-clock: {out['seconds_total']:.0f} s",
        f"- other processes' CPU use during the timing phase: {others} of {out['cores']} cores "
        "(machine-wide busy time from /proc/stat minus this benchmark's own CPU time)",
        "",
        f"## Wall-clock: {t['candidates_per_set']} candidates x {t['episodes']} episodes, "
        f"{t['candidate_sets']} candidate sets from the last PPO cycles, median of "
        f"{t['repeats']} interleaved repeats (sum over sets)",
        "",
        "| method | wall s | env steps | steps/s | wall speedup | critical-path CPU s | CPU speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in ("sequential", "batched_w1", "batched_w2", "racing_w1"):
        sp = 1.0 if k == "sequential" else t["speedup_vs_sequential"][k]
        cs = 1.0 if k == "sequential" else t["cpu_speedup_vs_sequential"][k]
        lines.append(
            f"| {k} | {t['seconds_median_total'][k]:.2f} | {t['env_steps_total'][k]} | "
            f"{t['steps_per_second'][k]:.0f} | {sp:.2f}x | "
            f"{t['cpu_critical_seconds_median_total'][k]:.2f} | {cs:.2f}x |"
        )
    lines += [
        "",
        "racing_w1 = successive halving with workers=1 (fewer env steps; different scores "
        "for eliminated candidates, so not part of the agreement check). "
        "Critical-path CPU = CPU seconds of this process (sequential, workers=1), or of this "
        "process plus the busiest worker (workers=2): the wall-clock the run would take on "
        "otherwise idle cores. The wall-clock columns depend on what else ran on the shared "
        "cores (see the load averages above).",
    ]
    lines += [
        "",
        f"Worker start-up (spawn + env pool, excluded above, paid once per evaluator): "
        f"{', '.join(f'workers={w}: {s:.2f}s' for w, s in t['startup_seconds_excluded'].items())}.",
        "Score agreement (max |batched_w1 - sequential|, max |w2 - w1|, same argmax): "
        + "; ".join(
            f"set {a['set']}: {a['max_abs_diff_w1_vs_seq']:.3g}, {a['max_abs_diff_w2_vs_w1']:.3g}"
            f", {a['same_argmax_w1_seq']}"
            for a in t["agreement"][: t["candidate_sets"]]
        ),
        "",
        "Batched forward for 21 candidates x 3 envs (microseconds per call): "
        + ", ".join(f"{k} {v:.0f}" for k, v in out["forward"]["microseconds_per_forward"].items()),
        "",
        f"## Racing vs exhaustive on {r['cycles']} PPO cycles ({out['args']['env_id']}, "
        f"eta={out['args']['racing_eta']}, {out['args']['episodes']} episodes)",
        "",
        f"- env steps: racing / exhaustive = {r['env_steps_ratio']:.3f} overall "
        f"(per cycle min {r['env_steps_ratio_min']:.3f}, max {r['env_steps_ratio_max']:.3f}); "
        f"episodes ratio {r['episodes_ratio']:.3f}",
        f"- same pick as exhaustive: {r['same_pick']}/{r['cycles']}; within noise: "
        f"{r['within_noise']}/{r['cycles']} ({100 * r['within_noise_rate']:.0f}%)",
        f"- mean full-budget gap (exhaustive best - racing pick, 3-episode score): "
        f"{r['mean_full_budget_gap']:.2f}",
        "",
        "| cycle | ep len | exh. steps | racing steps | ratio | W | R | exh. best | R full score "
        "| held-out W - R (SE) | within noise |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in out["cycles"]:
        ho = f"{c['heldout_diff']:.1f} ({c['heldout_diff_se']:.1f})" if "heldout_diff" in c else "-"
        lines.append(
            f"| {c['cycle']} | {c['mean_episode_length']:.0f} | {c['exhaustive_env_steps']} | "
            f"{c['racing_env_steps']} | {c['racing_env_steps'] / c['exhaustive_env_steps']:.2f} | "
            f"{c['exhaustive_pick']} | {c['racing_pick']} | {c['exhaustive_best']:.1f} | "
            f"{c['racing_pick_full_budget_score']:.1f} | {ho} | {c['within_noise']} |"
        )
    lines += [
        "",
        "Within noise = same pick, or on fresh paired episodes (held-out seeds) the exhaustive "
        "winner's mean return exceeds the racing pick's by at most 2 standard errors of the "
        "paired difference.",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    log = functools.partial(print, flush=True)
    agent, comparer = train_and_compare(args, log)
    cycles = comparer.cycles
    t = timing(agent, comparer, args, log)
    fwd = forward_microbench(agent)
    log(f"forward microbenchmark (us per call): {fwd['microseconds_per_forward']}")
    comparer.close()
    ex = sum(c["exhaustive_env_steps"] for c in cycles)
    ra = sum(c["racing_env_steps"] for c in cycles)
    ratios = [c["racing_env_steps"] / c["exhaustive_env_steps"] for c in cycles]
    within = sum(bool(c["within_noise"]) for c in cycles)
    racing = {
        "cycles": len(cycles),
        "exhaustive_env_steps": ex,
        "racing_env_steps": ra,
        "env_steps_ratio": ra / ex,
        "env_steps_ratio_min": min(ratios),
        "env_steps_ratio_max": max(ratios),
        "episodes_ratio": sum(c["racing_episodes"] for c in cycles)
        / sum(c["exhaustive_episodes"] for c in cycles),
        "same_pick": sum(bool(c["same_pick"]) for c in cycles),
        "within_noise": within,
        "within_noise_rate": within / len(cycles),
        "mean_full_budget_gap": float(np.mean([c["full_budget_gap"] for c in cycles])),
    }
    out = {
        "args": vars(args),
        "cores": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "seconds_total": time.perf_counter() - t_start,
        "timing": t,
        "forward": fwd,
        "racing": racing,
        "cycles": cycles,
    }
    text = markdown(out)
    write_results(Path(args.out), out, text)
    print(f"\n{text}\n\nresults: {Path(args.out) / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
