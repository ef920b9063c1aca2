"""Outside reference row for the benchmarks: stable-baselines3 PPO / sb3-contrib TRPO.

Trains with the libraries' default hyperparameters (the same rollout length and budget as the
single-file scripts, observation and reward normalisation by ``VecNormalize`` as the scripts'
wrappers do, clip 10) and measures it exactly as the scripts do: every ``--eval-every``
iterations and at the end, ``--final-eval-episodes`` deterministic episodes on a separate raw env
with the observation statistics frozen at that moment, reset seeds from the scripts' honest seed
sequence. Logged to TensorBoard under ``runs/`` with the scripts' tags (``eval/episodic_return``
at training steps, ``eval/episodic_return_vs_total_steps``, ``charts/total_env_steps``,
``charts/SPS`` without evaluation time), so ``benchmarks/sweep.py`` reads it like any run.

Needs ``stable-baselines3`` and ``sb3-contrib`` (not project dependencies; install them in the
benchmark environment). Exits with status 3 and a message when they are missing.

    python benchmarks/sb3_runner.py --algo trpo --env-id Hopper-v5 --seed 1 --total-timesteps 200000
"""

from __future__ import annotations

import argparse
import sys
import time


def honest_seed(seed: int) -> int:
    """Reset seed of honest episode 0 (the single-file scripts' sequence)."""
    return 1_000_000_000 + (seed % 1_000_000) * 1000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=("ppo", "trpo"), required=True)
    p.add_argument("--env-id", default="Hopper-v5")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--exp-name", default=None)
    p.add_argument("--total-timesteps", type=int, default=1_000_000)
    p.add_argument("--num-steps", type=int, default=2048, help="rollout length (n_steps)")
    p.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations")
    p.add_argument("--final-eval-episodes", type=int, default=10)
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--gamma", type=float, default=0.99)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import sb3_contrib
        import stable_baselines3
    except ImportError as exc:
        print(
            f"sb3_runner: {exc.name} is not installed; `pip install stable-baselines3 sb3-contrib` "
            "in the benchmark environment (they are not project dependencies)",
            file=sys.stderr,
        )
        return 3
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(1)
    exp_name = args.exp_name or f"sb3_{args.algo}"
    run_name = f"{args.env_id}__{exp_name}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n"
        + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        + f"\n|stable-baselines3|{stable_baselines3.__version__}|"
        + f"\n|sb3-contrib|{sb3_contrib.__version__}|",
    )

    def make():
        return Monitor(gym.make(args.env_id, max_episode_steps=args.max_episode_steps))

    venv = VecNormalize(
        DummyVecEnv([make]),
        norm_obs=True,
        norm_reward=True,
        clip_obs=10.0,
        clip_reward=10.0,
        gamma=args.gamma,
    )
    venv.seed(args.seed)
    if args.algo == "ppo":
        model = stable_baselines3.PPO(
            "MlpPolicy",
            venv,
            n_steps=args.num_steps,
            gamma=args.gamma,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
    else:
        model = sb3_contrib.TRPO(
            "MlpPolicy",
            venv,
            n_steps=args.num_steps,
            gamma=args.gamma,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )

    eval_env = gym.make(args.env_id, max_episode_steps=args.max_episode_steps)
    low, high = eval_env.action_space.low, eval_env.action_space.high
    clock = {"start": time.time(), "excluded": 0.0, "last_step": -1}

    def honest_eval(step: int) -> None:
        t0 = time.time()
        returns = []
        for k in range(args.final_eval_episodes):
            obs, _ = eval_env.reset(seed=honest_seed(args.seed) + k)
            total, finished = 0.0, False
            while not finished:
                norm = venv.normalize_obs(np.asarray(obs, dtype=np.float32)[None])  # frozen
                action, _ = model.predict(norm, deterministic=True)
                obs, reward, terminated, truncated, _ = eval_env.step(np.clip(action[0], low, high))
                total += float(reward)
                finished = terminated or truncated
            returns.append(total)
        score = float(np.mean(returns))
        writer.add_scalar("eval/episodic_return", score, step)
        writer.add_scalar("eval/episodic_return_vs_total_steps", score, step)
        writer.add_scalar("charts/total_env_steps", step, step)
        clock["excluded"] += time.time() - t0
        elapsed = max(time.time() - clock["start"] - clock["excluded"], 1e-9)
        writer.add_scalar("charts/SPS", int(step / elapsed), step)
        clock["last_step"] = step

    class HonestEvaluation(BaseCallback):
        """Evaluate after every `eval_every` updates (a rollout starts after each update)."""

        def __init__(self):
            super().__init__()
            self.updates = -1

        def _on_rollout_start(self) -> None:
            self.updates += 1
            if self.updates > 0 and self.updates % args.eval_every == 0:
                honest_eval(self.num_timesteps)

        def _on_step(self) -> bool:
            return True

    model.learn(total_timesteps=args.total_timesteps, callback=HonestEvaluation())
    if clock["last_step"] != model.num_timesteps:
        honest_eval(model.num_timesteps)
    writer.close()
    eval_env.close()
    venv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
