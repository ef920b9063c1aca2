"""TRPO for continuous actions, CleanRL style, plus ExploRLer; the file to copy.

`ppo_continuous_action.py` line for line, with TRPO's update: one natural-gradient step of the actor
per iteration (`NaturalGradientOptimizer`), Adam for the critic. ExploRLer is in the lines marked
`# ExploRLer:`; the research options are in `trpo_continuous_action_research.py` (the benchmarks').

    python single_file_baselines/trpo_continuous_action.py [--no-explorler]   # ExploRLer-TRPO [plain TRPO]
"""

import functools
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import tyro

from explorler_optim.rl.args import ExploRLerArgs


@dataclass
class Args(ExploRLerArgs):  # ExploRLer: its flags (the run, the search, held-out evaluation)
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch, env resets, action spaces, evaluation seeds)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "explorler"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    save_model: bool = False
    """if toggled, write a checkpoint (at every held-out evaluation and at the end, same file)"""

    # Algorithm specific arguments (defaults: sb3-contrib's TRPO)
    env_id: str = "Hopper-v5"
    """the id of the environment"""
    total_timesteps: int = 1000000
    """total env steps of the experiment (see `count_eval_steps` for what counts)"""
    learning_rate: float = 1e-3
    """the learning rate of the critic's Adam optimizer (the actor's step is set by `max_kl`)"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = False
    """toggle learning rate annealing (linear in the counted steps, to 0 at the budget)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    norm_adv: bool = True
    """toggles advantages normalization (over the full batch; the line search uses the same)"""
    max_kl: float = 0.01
    """the trust region: bound on the mean KL(old || new) of one policy step"""
    kl_reduction: Literal["sum", "mean"] = "mean"
    """KL over action dims: mean (sb3-contrib's, the paper's setup) or sum (the policy's true KL)"""
    cg_iters: int = 15
    """conjugate-gradient iterations for the natural-gradient direction"""
    cg_damping: float = 0.1
    """damping added to the Fisher-vector products (F + damping * I)"""
    line_search_shrink: float = 0.8
    """backtracking line search: step shrink factor per try"""
    line_search_max_iter: int = 10
    """backtracking line search: tries before the step is rejected (parameters kept)"""
    critic_minibatch_size: int = 128
    """the mini-batch size of the critic's updates"""
    n_critic_updates: int = 10
    """epochs of critic updates over the rollout per iteration"""

    # to be filled in runtime (CleanRL's names; not settable, so not in --help)
    batch_size: tyro.conf.Suppress[int] = 0
    """the batch size (computed in runtime)"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """the number of iterations (computed in runtime; fewer when the search's env steps count)"""


if __name__ == "__main__":
    args = tyro.cli(Args)  # before the heavy imports, so that `--help` answers at once

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.distributions.kl import kl_divergence
from torch.distributions.normal import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import ObsNormalizer, harness
from explorler_optim.rl.trpo import NaturalGradientOptimizer


def make_env(env_id, gamma, max_episode_steps=None):
    def thunk():
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
        env = gym.wrappers.FlattenObservation(env)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.ClipAction(env)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
        env = gym.wrappers.NormalizeReward(env, gamma=gamma)
        env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))
        return env

    return thunk


def layer_init(layer, std=2**0.5, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, act_dim), std=0.01),
        )
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def get_value(self, x):
        return self.critic(x)

    def get_distribution(self, x):
        action_mean = self.actor_mean(x)
        action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
        return Normal(action_mean, action_std, validate_args=False)

    def get_action_and_value(self, x, action=None):
        probs = self.get_distribution(x)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


def surrogate_and_kl(agent, batch, old_dist, kl_reduction="sum"):
    """TRPO's closure: (surrogate to maximise, mean KL(old || new)) at the actor's parameters; "mean"
    averages the per-dimension KLs (sb3-contrib's), "sum" adds them (the Gaussian policy's true KL)."""
    obs, actions, old_logprobs, advantages = batch
    new_dist = agent.get_distribution(obs)
    ratio = torch.exp(new_dist.log_prob(actions).sum(1) - old_logprobs)
    surrogate = (advantages * ratio).mean()
    kl = kl_divergence(old_dist, new_dist)
    kl = kl.sum(1).mean() if kl_reduction == "sum" else kl.mean()
    return surrogate, kl


if __name__ == "__main__":
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.quiet:
        warnings.filterwarnings("ignore")
    if args.eval_checkpoint is not None:  # ExploRLer: score a saved policy on held-out episodes, no training
        result = harness.evaluate_checkpoint(args.eval_checkpoint, args.heldout_episodes, make_env, Agent)
        print(json.dumps(result))
        sys.exit(0)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.num_iterations = math.ceil(args.total_timesteps / args.batch_size)
    budget = harness.check_settings(args)  # ExploRLer: the flags checked; (budget_limit, episode_cap)
    run = harness.RunCheckpoint(args, "explorler-trpo-continuous/1")  # ExploRLer: --resume, --init-from
    say = (lambda msg: None) if args.quiet else tqdm.write
    if args.track:
        import wandb

        run_info = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run.run_name)
        wandb.init(**run_info, config=vars(args), sync_tensorboard=True, save_code=True)
    writer = SummaryWriter(f"runs/{run.run_name}", purge_step=run.purge_step)
    hyperparameters = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{hyperparameters}")

    # seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup (gymnasium 1.x: same-step autoreset keeps CleanRL's meaning of `next_done`)
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.gamma, args.max_episode_steps) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space is supported"
    envs.action_space.seed(args.seed)
    envs.single_action_space.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(obs_dim, int(np.prod(envs.single_action_space.shape))).to(device)
    actor_params = [*agent.actor_mean.parameters(), agent.actor_logstd]
    optimizer = NaturalGradientOptimizer(
        actor_params,
        max_kl=args.max_kl,
        damping=args.cg_damping,
        cg_iters=args.cg_iters,
        backtrack_coef=args.line_search_shrink,
        backtrack_iters=args.line_search_max_iter,
    )
    critic_optimizer = optim.Adam(agent.critic.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    if args.explorler:  # ExploRLer: wrap the actor's optimizer; the search explores the actor
        optimizer = ExploRLerOptimizer(
            optimizer,
            explore_params=actor_params,
            max_anchors=args.max_anchors,
            search=harness.search_operator(args),
            selection=harness.selection_rule(args),
            include_incumbent=args.include_incumbent,
            reset_state=args.reset_state,
            seed=args.seed,
            on_invalid="skip",
        )
    # ExploRLer: evaluators on their own envs; the search step knows when a search is due and fits
    evaluators = harness.build_evaluators(args, agent, envs.envs[0])
    search = harness.build_search_step(args, optimizer, evaluators, run.run_name, budget, writer, say)
    modules = {"agent": agent, "optimizer": optimizer, "critic_optimizer": critic_optimizer}
    saved = run.restore(modules, envs, search, say)  # {}: a new run

    # rollout storage
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)

    # start the game
    global_step = saved.get("global_step", 0)  # training env steps
    total_env_steps = saved.get("total_env_steps", 0)  # ExploRLer: + the searches' env steps
    last_eval_return = saved.get("eval_return")

    def counted_steps():  # ExploRLer: what the budget counts (the searches' env steps too, by default)
        return total_env_steps if args.count_eval_steps else global_step

    def next_iteration_fits():  # ExploRLer: counted search steps mean fewer iterations, never an overrun
        return counted_steps() < args.total_timesteps and counted_steps() + args.batch_size <= budget[0]

    def heldout_eval():  # ExploRLer: the policy on held-out episodes (never counted: not training)
        score = harness.log_heldout(evaluators, envs.envs[0], writer, (global_step, total_env_steps))
        say(f"global_step={global_step}, total_env_steps={total_env_steps}, eval_return={score:.1f}")
        return score

    if args.init_from is not None and run.resumed is None:  # ExploRLer: the forked policy's own score
        last_eval_return = heldout_eval()
    start_time, start_step, excluded_seconds = time.time(), global_step, 0.0  # SPS leaves out evaluation
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    last_return = float("nan")
    if run.resumed is not None:  # ExploRLer: the envs mid-episode, the RNGs, the last observation
        next_obs, next_done, last_return = run.resume_loop(envs, device)

    def checkpoint(iteration, interrupted=False):  # what --resume needs to continue exactly
        counters = dict(global_step=global_step, total_env_steps=total_env_steps, iteration=iteration)
        counters |= dict(eval_return=last_eval_return, interrupted=interrupted, last_return=last_return)
        run.save(modules, envs, search, (next_obs, next_done), **counters)

    pbar = tqdm(total=args.total_timesteps, initial=counted_steps(), disable=args.quiet, unit="step")
    first_iteration = saved.get("iteration", 0) + 1  # 1, or after --resume the checkpoint's next
    iteration, interrupted = first_iteration - 1, False
    try:  # Ctrl-C stops the run cleanly (with --save-model, a checkpoint of that moment is written)
        for iteration in range(first_iteration, args.num_iterations + 1):
            if not next_iteration_fits():
                break
            counted_before = counted_steps()
            # Annealing the rate if instructed to do so (linear in the counted steps: ~0 at the budget)
            if args.anneal_lr:
                frac = max(1.0 - counted_before / args.total_timesteps, 0.0)
                critic_optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                total_env_steps += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                # act with the stochastic policy (inference mode: the cheapest forward without autograd)
                with torch.inference_mode():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                    values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                # step the envs (done = terminated or truncated, as in CleanRL); log finished episodes
                next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                next_done = np.logical_or(terminations, truncations)
                rewards[step] = torch.tensor(reward, dtype=torch.float32).to(device).view(-1)
                next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)

                if "final_info" in infos and "episode" in infos["final_info"]:  # gymnasium 1.x layout
                    episode, mask = infos["final_info"]["episode"], infos["final_info"]["_episode"]
                    for r, length in zip(episode["r"][mask], episode["l"][mask], strict=True):
                        last_return = float(r)
                        writer.add_scalar("charts/episodic_return", float(r), global_step)
                        writer.add_scalar("charts/episodic_length", int(length), global_step)

            # bootstrap value if not done
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)
                advantages = torch.zeros_like(rewards).to(device)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    if t == args.num_steps - 1:
                        nextnonterminal = 1.0 - next_done
                        nextvalues = next_value
                    else:
                        nextnonterminal = 1.0 - dones[t + 1]
                        nextvalues = values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = (
                        delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                    )
                returns = advantages + values

            # flatten the batch
            b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            # Optimizing the policy: one full-batch natural-gradient step in the trust region, on
            # advantages normalised once (the gradient and every line-search try see the same tensor)
            if args.norm_adv:
                b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)
            with torch.no_grad():
                old_dist = agent.get_distribution(b_obs)
            batch = (b_obs, b_actions, b_logprobs, b_advantages)
            policy_closure = functools.partial(surrogate_and_kl, agent, batch, old_dist, args.kl_reduction)
            stats = optimizer.step(policy_closure)
            if args.explorler:
                optimizer.record()  # ExploRLer: an anchor after every iteration

            # Optimizing the value network: Adam over minibatches, n_critic_updates epochs
            b_inds = np.arange(args.batch_size)
            for _epoch in range(args.n_critic_updates):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.critic_minibatch_size):
                    end = start + args.critic_minibatch_size
                    mb_inds = b_inds[start:end]

                    newvalue = agent.get_value(b_obs[mb_inds]).view(-1)
                    v_loss = ((newvalue - b_returns[mb_inds]) ** 2).mean()

                    critic_optimizer.zero_grad()
                    v_loss.backward()
                    critic_optimizer.step()

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # TRPO's scalars (CleanRL's names where they exist)
            writer.add_scalar("charts/learning_rate", critic_optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_objective", stats["policy_objective"], global_step)
            writer.add_scalar("losses/policy_improvement", stats["improvement"], global_step)
            writer.add_scalar("losses/kl", stats["kl"], global_step)
            writer.add_scalar("losses/entropy", old_dist.entropy().sum(1).mean().item(), global_step)
            writer.add_scalar("charts/line_search_success", float(stats["line_search_success"]), global_step)
            writer.add_scalar("charts/line_search_backtracks", stats["backtracks"], global_step)
            writer.add_scalar("charts/step_size", stats["step_size"], global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)

            # ExploRLer: search the anchors' empty space between iterations, if due and within the budget
            if search.due(iteration, global_step, counted_steps()):
                normalizer = ObsNormalizer.from_env(envs.envs[0])  # the training statistics now, frozen
                result, used = search.run(normalizer, global_step, args.total_timesteps, batch)
                total_env_steps += used
                search.log(result, global_step)  # the explorler/* scalars, histogram and landscape
            writer.add_scalar("charts/total_env_steps", total_env_steps, global_step)

            evaluated = iteration % args.eval_every == 0 or not next_iteration_fits()
            if evaluated:  # ExploRLer: every eval_every iterations and at the end
                t0 = time.time()
                last_eval_return = heldout_eval()
                excluded_seconds += time.time() - t0

            sps = int((global_step - start_step) / max(time.time() - start_time - excluded_seconds, 1e-9))
            writer.add_scalar("charts/SPS", sps, global_step)
            pbar.set_postfix(step=f"{global_step:,}", SPS=f"{sps:,}", ret=f"{last_return:.1f}", refresh=False)
            pbar.update(counted_steps() - counted_before)
            if evaluated and args.save_model:
                checkpoint(iteration)  # the iteration's end: --resume continues exactly from here
    except KeyboardInterrupt:
        interrupted = True

    pbar.close()
    say(search.summary(counted_steps(), global_step, args.total_timesteps, args.count_eval_steps))
    run.finish(interrupted, iteration, counted_steps(), lambda: checkpoint(iteration, interrupted), say)
    evaluators.close()
    envs.close()
    writer.close()
    if interrupted:
        sys.exit(130)  # the shell's code for a run stopped by Ctrl-C
