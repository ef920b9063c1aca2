"""Total env steps of SB3 PPO, A2C and sb3-contrib TRPO with ``ExploRLerCallback``'s defaults.

One run per algorithm on Pendulum-v1 (200-step episodes: a search's env steps are exact) with the
library's default hyper-parameters and the callback's defaults (candidate steps counted in
``model.num_timesteps``), printing a Markdown table: training env steps, candidate-evaluation env
steps, their total against ``learn()``'s budget and against plain SB3's own end (whole rollouts), the
searches run and skipped. Written for issue 23 (the callback overshot its budget).

    python -m benchmarks.sb3_budget --total-timesteps 42000
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env-id", default="Pendulum-v1")
    p.add_argument("--total-timesteps", type=int, default=42_000)
    p.add_argument("--algos", nargs="+", default=["ppo", "a2c", "trpo"], choices=["ppo", "a2c", "trpo"])
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(algo: str, env_id: str, seed: int):
    import sb3_contrib
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env

    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "trpo": sb3_contrib.TRPO}[algo]
    return cls("MlpPolicy", make_vec_env(env_id, n_envs=1, seed=seed), seed=seed, device="cpu")


def run_one(algo: str, args) -> dict:
    import warnings

    from explorler_optim.sb3 import ExploRLerCallback

    model = build(algo, args.env_id, args.seed)
    rollout = model.n_steps * model.n_envs
    callback = ExploRLerCallback(args.env_id)  # the defaults, candidates scored on fresh envs
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(args.total_timesteps, callback=callback)
    candidates = int(callback.counted_eval_steps)
    total = int(model.num_timesteps)
    plain = math.ceil(args.total_timesteps / rollout) * rollout
    return {
        "algo": algo,
        "n_steps": rollout,
        "explore_every": callback.schedule.explore_every
        if getattr(callback, "schedule", None)
        else callback.explore_every,
        "training": total - candidates,
        "candidates": candidates,
        "total": total,
        "vs_budget": total / args.total_timesteps - 1.0,
        "plain": plain,
        "vs_plain": total / plain - 1.0,
        "searches": callback.searches,
        "skipped": int(getattr(callback, "skipped_searches", 0)),
        "seconds": time.time() - start,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import gymnasium
    import sb3_contrib
    import stable_baselines3
    import torch

    torch.set_num_threads(1)
    print(f"`python -m benchmarks.sb3_budget {' '.join(sys.argv[1:] if argv is None else argv)}`")
    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()} "
        f"({platform.machine()}, {platform.python_version()}); torch {torch.__version__}, "
        f"stable-baselines3 {stable_baselines3.__version__}, sb3-contrib {sb3_contrib.__version__}, "
        f"gymnasium {gymnasium.__version__}; env {args.env_id}, seed {args.seed}, "
        f"learn({args.total_timesteps:,})\n"
    )
    print(
        "| algo | rollout | explore_every | training | candidates | total | vs budget | plain SB3 end "
        "| vs plain | searches | skipped | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for algo in args.algos:
        r = run_one(algo, args)
        print(
            f"| {r['algo']} | {r['n_steps']:,} | {r['explore_every']} | {r['training']:,} | "
            f"{r['candidates']:,} | {r['total']:,} | {r['vs_budget']:+.1%} | {r['plain']:,} | "
            f"{r['vs_plain']:+.1%} | {r['searches']} | {r['skipped']} | {r['seconds']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
