"""The mean return of a uniformly random policy: the report's zero point for tasks D4RL does not cover.

    python -m benchmarks.random_scores BipedalWalker-v3 --episodes 100

Actions are drawn from the action space (seeded), episodes start from seeds 0..N-1.
"""

from __future__ import annotations

import argparse

import numpy as np


def random_policy_return(env_id: str, episodes: int, seed: int = 0) -> tuple[float, float]:
    """Mean and standard error of a random policy's return over ``episodes`` episodes."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    values = np.asarray(returns)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("env_ids", nargs="+")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args(argv)
    for env_id in args.env_ids:
        mean, stderr = random_policy_return(env_id, args.episodes)
        print(f"{env_id}: {mean:.1f} +- {stderr:.1f} ({args.episodes} episodes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
