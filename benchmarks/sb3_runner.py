"""Outside reference row for the benchmarks: stable-baselines3 PPO / sb3-contrib TRPO.

Trains with the libraries' default hyperparameters (the same rollout length and budget as the
single-file scripts, observation and reward normalisation by ``VecNormalize`` as the scripts'
wrappers do, clip 10) and measures it exactly as the scripts do: every ``--eval-every``
iterations and at the end, ``--heldout-episodes`` deterministic episodes on a separate raw env
with the observation statistics frozen at that moment, reset seeds from the scripts' honest seed
sequence. Logged to TensorBoard under ``runs/`` with the scripts' tags (``eval/episodic_return``
at training steps, ``eval/episodic_return_vs_total_steps``, ``charts/total_env_steps``,
``charts/SPS`` without evaluation time), so ``benchmarks/sweep.py`` reads it like any run.

``--explorler`` adds ``explorler_optim.sb3.ExploRLerCallback`` with the scripts' defaults (a search
every ``--explore-every`` iterations, 10 candidates x ``--eval-episodes`` episodes, incumbent-aware
commit, candidate seeds from the scripts' sequence). With ``--count-eval-steps`` (the default) the
candidates' env steps count toward ``--total-timesteps``, so every arm uses equal total env steps;
``--no-count-eval-steps`` is the paper's accounting (equal training steps). ``eval/episodic_return``
is logged at training steps and ``eval/episodic_return_vs_total_steps`` at training + candidate steps,
as the scripts do.

Needs ``stable-baselines3`` and ``sb3-contrib`` (the ``sb3`` extra: ``pip install -e ".[sb3]"``).
Exits with status 3 and a message when they are missing.

    python -m benchmarks.sb3_runner --algo trpo --env-id Hopper-v5 --seed 1 --total-timesteps 200000
    python -m benchmarks.sb3_runner --algo ppo --env-id Hopper-v5 --seed 1 --explorler --explore-every 20
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
    p.add_argument(  # --final-eval-episodes: the name before 0.2, kept for one release
        "--heldout-episodes", "--final-eval-episodes", type=int, default=10, help="episodes per evaluation"
    )
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--explorler", action="store_true", help="add ExploRLerCallback")
    p.add_argument("--explore-every", type=int, default=20, help="iterations between searches")
    p.add_argument("--eval-episodes", type=int, default=1, help="episodes per candidate")
    p.add_argument(
        "--count-eval-steps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="count candidate env steps toward --total-timesteps (off: the paper's accounting)",
    )
    return p.parse_args(argv)


def honest_return(model, venv, eval_env, seed: int, episodes: int) -> float:
    """Mean return of ``episodes`` deterministic episodes (reset seeds ``seed + k``), statistics frozen."""
    import numpy as np

    low, high = eval_env.action_space.low, eval_env.action_space.high
    returns = []
    for k in range(episodes):
        obs, _ = eval_env.reset(seed=seed + k)
        total, finished = 0.0, False
        while not finished:
            norm = venv.normalize_obs(np.asarray(obs, dtype=np.float32)[None])  # frozen
            action, _ = model.predict(norm, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(np.clip(action[0], low, high))
            total += float(reward)
            finished = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def make_model(args, venv):
    """SB3 PPO or sb3-contrib TRPO with the libraries' defaults and the scripts' rollout length."""
    import sb3_contrib
    import stable_baselines3

    algorithm = stable_baselines3.PPO if args.algo == "ppo" else sb3_contrib.TRPO
    return algorithm(
        "MlpPolicy",
        venv,
        n_steps=args.num_steps,
        gamma=args.gamma,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )


def make_callback(args):
    """ExploRLerCallback with the scripts' defaults, scoring on fresh envs of the same task."""
    from explorler_optim.sb3 import ExploRLerCallback

    make_kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    return ExploRLerCallback(
        args.env_id,
        eval_env_kwargs=make_kwargs,
        explore_every=args.explore_every,
        eval_episodes=args.eval_episodes,
        count_eval_steps=args.count_eval_steps,
        seed=args.seed,
    )


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
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(1)
    exp_name = args.exp_name or (f"sb3_{args.algo}_explorler" if args.explorler else f"sb3_{args.algo}")
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
    model = make_model(args, venv)
    explorler = make_callback(args) if args.explorler else None

    eval_env = gym.make(args.env_id, max_episode_steps=args.max_episode_steps)
    clock = {"start": time.time(), "excluded": 0.0, "last": None}

    def steps() -> tuple[int, int]:
        """(training env steps, training + candidate env steps)."""
        if explorler is None:
            return model.num_timesteps, model.num_timesteps
        training = model.num_timesteps - explorler.counted_eval_steps
        return training, training + explorler.eval_env_steps

    def evaluated_state() -> tuple[int, int]:
        return steps()[0], 0 if explorler is None else explorler.searches

    def honest_eval() -> None:
        step, total_steps = steps()
        t0 = time.time()
        score = honest_return(model, venv, eval_env, honest_seed(args.seed), args.heldout_episodes)
        writer.add_scalar("eval/episodic_return", score, step)
        writer.add_scalar("eval/episodic_return_vs_total_steps", score, total_steps)
        writer.add_scalar("charts/total_env_steps", total_steps, step)
        if explorler is not None:
            writer.add_scalar("explorler/eval_env_steps", explorler.eval_env_steps, step)
            if explorler.last_result is not None:
                writer.add_scalar("explorler/searches", explorler.searches, step)
        clock["excluded"] += time.time() - t0
        elapsed = max(time.time() - clock["start"] - clock["excluded"], 1e-9)
        writer.add_scalar("charts/SPS", int(step / elapsed), step)  # search time is training time
        clock["last"] = evaluated_state()

    class HonestEvaluation(BaseCallback):
        """Evaluate after every `eval_every` updates (a rollout starts after each update)."""

        def __init__(self):
            super().__init__()
            self.updates = -1

        def _on_rollout_start(self) -> None:
            self.updates += 1
            if self.updates > 0 and self.updates % args.eval_every == 0:
                honest_eval()

        def _on_step(self) -> bool:
            return True

    # the search (if any) runs first at a rollout start, so the honest evaluation sees its outcome
    callbacks = [HonestEvaluation()] if explorler is None else [explorler, HonestEvaluation()]
    model.learn(total_timesteps=args.total_timesteps, callback=callbacks)
    if clock["last"] != evaluated_state():  # a search at the end of learn() moves the policy too
        honest_eval()
    if explorler is not None:
        explorler.close()
    writer.close()
    eval_env.close()
    venv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
