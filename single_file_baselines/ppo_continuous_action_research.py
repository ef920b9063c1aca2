"""PPO for continuous actions with ExploRLer: the research variant, which the benchmarks run.

`ppo_continuous_action.py` (the file to copy) plus the options that change or measure the training
loop: `--reuse-candidate-rollouts` (the search's episodes join the next batch), `--score-with
surrogate-next` (the next batch scores the last search before its update), `--paper-metric-every`
(the paper's metric beside the held-out score) and `--selection-truth-episodes` (the selection audit).
With none of them set it gives the plain script's run, bit for bit (tests/test_script_variants.py).

    python single_file_baselines/ppo_continuous_action_research.py --reuse-candidate-rollouts winner
    python single_file_baselines/ppo_continuous_action_research.py --paper-metric-every 1 --no-explorler
"""

import itertools
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

from explorler_optim.rl.args import ResearchArgs


@dataclass
class Args(ResearchArgs):  # ExploRLer: its flags (the run, the search, held-out evaluation)
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

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the id of the environment"""
    total_timesteps: int = 1000000
    """total env steps of the experiment (see `count_eval_steps` for what counts)"""
    learning_rate: float = 3e-4
    """the learning rate of the optimizer"""
    num_envs: int = 1
    """the number of parallel game environments"""
    num_steps: int = 2048
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linear in the counted steps, to 0 at the budget)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 32
    """the number of mini-batches"""
    update_epochs: int = 10
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # ExploRLer arguments
    reuse_candidate_rollouts: Literal["none", "winner", "all"] = "none"
    """train on the search's episodes, scored stochastically: the kept policy's (winner), or all (weighted)"""

    # computed at runtime from the fields above (CleanRL's names; not settable, so not in --help)
    batch_size: tyro.conf.Suppress[int] = 0
    """num_envs * num_steps: training env steps per iteration"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """ceil(total_timesteps / batch_size): the baseline's iterations (fewer when eval steps count)"""


if __name__ == "__main__":
    args = tyro.cli(Args)  # before the heavy imports, so that `--help` answers at once

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.distributions.normal import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import ObsNormalizer, RewardNormalizer, harness
from explorler_optim.rl.reuse import compute_gae, join_reused, reused_batch, reused_counts


def make_env(env_id, gamma, max_episode_steps=None):
    """Training env: CleanRL's wrappers, normalisation statistics live in the wrappers."""

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


SQRT2 = float(np.sqrt(2))


def layer_init(layer, std=SQRT2, bias_const=0.0):
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

    def get_action_and_value(self, x, action=None):
        action_mean = self.actor_mean(x)
        action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
        probs = Normal(action_mean, action_std, validate_args=False)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)


if __name__ == "__main__":
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.quiet:
        warnings.filterwarnings("ignore")
    if args.eval_checkpoint is not None:  # ExploRLer: score a saved policy on held-out episodes
        result = harness.evaluate_checkpoint(args.eval_checkpoint, args.heldout_episodes, make_env, Agent)
        print(json.dumps(result))
        sys.exit(0)

    args.batch_size = int(args.num_envs * args.num_steps)
    args.num_iterations = math.ceil(args.total_timesteps / args.batch_size)
    # ExploRLer: the settings checked; budget = (budget_limit, episode_cap)
    budget = harness.check_settings(args)
    # ExploRLer: the run's checkpoint; --resume continues a run exactly, --init-from forks one
    run = harness.RunCheckpoint(args, "explorler-ppo-continuous/1")
    run_name = run.run_name
    say = (lambda msg: None) if args.quiet else tqdm.write

    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    writer = SummaryWriter(f"runs/{run_name}", purge_step=run.purge_step)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup: same-step autoreset, so that the obs after a done is already the reset obs and
    # `final_info` reports the finished episode (gymnasium 1.x)
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.gamma, args.max_episode_steps) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space"
    envs.action_space.seed(args.seed)
    envs.single_action_space.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(obs_dim, int(np.prod(envs.single_action_space.shape))).to(device)
    # foreach: one fused update for all tensors (on the CPU too: faster here, same results)
    adam = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    optimizer = adam
    if args.explorler:  # ExploRLer: wrap Adam; explored = the actor (mean network + log-std)
        optimizer = ExploRLerOptimizer(
            adam,
            explore_params=[*agent.actor_mean.parameters(), agent.actor_logstd],
            max_anchors=args.max_anchors,
            search=harness.search_operator(args),
            selection=harness.selection_rule(args),
            include_incumbent=args.include_incumbent,
            reset_state=args.reset_state,
            seed=args.seed,
            on_invalid="skip",
        )
    # ExploRLer: evaluators on their own envs (held-out, candidates, paper's metric, audit) and the
    # search between iterations (when it is due, its budget rule, its env steps, its logs)
    evaluators = harness.build_evaluators(args, agent, envs.envs[0])
    search = harness.build_search_step(args, optimizer, evaluators, run_name, budget, writer, say)
    saved = run.restore({"agent": agent, "optimizer": optimizer}, envs, search, say)  # {}: a new run
    global_step = saved.get("global_step", 0)  # training env steps
    total_env_steps = saved.get("total_env_steps", 0)  # + candidate-evaluation env steps
    iteration = saved.get("iteration", 0)
    last_eval_return = saved.get("eval_return")
    reused = saved.get("reused")  # the last search's episodes, waiting to join the next batch

    def counted_steps():
        return total_env_steps if args.count_eval_steps else global_step

    def next_iteration_fits():
        """Another iteration starts while the budget is not reached and it cannot overrun the limit."""
        return counted_steps() < args.total_timesteps and counted_steps() + args.batch_size <= budget[0]

    def heldout_eval():
        score = harness.log_heldout(evaluators, envs.envs[0], writer, (global_step, total_env_steps))
        say(f"global_step={global_step}, total_env_steps={total_env_steps}, eval_return={score:.1f}")
        return score

    def log_paper_metric(score=None):
        """The paper's metric: a search's best candidate score, else 3 episodes on fixed starts."""
        if args.paper_metric_every > 0:
            if score is None:
                evaluators.paper.obs_normalizer = ObsNormalizer.from_env(envs.envs[0])
                score = float(evaluators.paper())
            writer.add_scalar("paper/episodic_return", score, global_step)

    def checkpoint():  # what --resume needs to continue exactly
        counters = dict(global_step=global_step, total_env_steps=total_env_steps, iteration=iteration)
        counters |= dict(eval_return=last_eval_return, interrupted=interrupted, last_return=last_return)
        loop = (next_obs, next_done)
        run.save({"agent": agent, "optimizer": optimizer}, envs, search, loop, **counters, reused=reused)

    # rollout storage
    horizon = (args.num_steps, args.num_envs)
    obs = torch.zeros(horizon + envs.single_observation_space.shape, device=device)
    actions = torch.zeros(horizon + envs.single_action_space.shape, device=device)
    logprobs = torch.zeros(horizon, device=device)
    rewards = torch.zeros(horizon, device=device)
    dones = torch.zeros(horizon, device=device)
    values = torch.zeros(horizon, device=device)

    if args.init_from is not None and run.resumed is None:  # ExploRLer: the fork point, before the
        # first reset updates the statistics: the checkpoint's own score
        last_eval_return = heldout_eval()
        log_paper_metric()

    # start the game
    start_time = time.time()
    start_step = global_step
    excluded_seconds = 0.0  # held-out evaluation time (measurement, not training cost)
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    last_return = float("nan")
    if run.resumed is not None:  # ExploRLer: the envs mid-episode, the RNGs, the last observation
        next_obs, next_done, last_return = run.resume_loop(envs, device)
    interrupted = False
    pbar = tqdm(total=args.total_timesteps, initial=counted_steps(), disable=args.quiet, unit="step")
    # Ctrl-C stops the run cleanly (with --save-model, a checkpoint of that moment is written)
    try:
        first_iteration = iteration + 1  # 1, or after --resume the checkpoint's iteration + 1
        for iteration in itertools.count(first_iteration):  # to num_iterations without ExploRLer
            if not next_iteration_fits():  # counted candidate steps: fewer iterations; reused ones: more
                break
            counted_before = counted_steps()
            # Annealing the rate: linear in the counted steps, so it reaches ~0 at the budget either way
            if args.anneal_lr:
                frac = max(1.0 - counted_before / args.total_timesteps, 0.0)
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            # the kept policy's search episodes take the place of as many training env steps
            reused_steps = 0 if reused is None else int(reused["on_policy"].sum())
            rollout_steps = max(args.num_steps - reused_steps // args.num_envs, 0)
            for step in range(rollout_steps):
                global_step += args.num_envs
                total_env_steps += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                # act with the stochastic policy (inference mode: the cheapest no-autograd forward)
                with torch.inference_mode():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                    values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                # step the envs; log every finished episode (gymnasium 1.x `final_info` layout)
                next_obs_np, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                # done = terminated | truncated, as in CleanRL: the value after a done is not
                # bootstrapped, and with same-step autoreset next_obs is already the new episode's
                next_done_np = np.logical_or(terminations, truncations)
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32, device=device)
                next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32, device=device)
                next_done = torch.as_tensor(next_done_np, dtype=torch.float32, device=device)

                if "final_info" in infos and "episode" in infos["final_info"]:
                    final = infos["final_info"]
                    mask = final["_episode"]
                    for r, length in zip(
                        final["episode"]["r"][mask], final["episode"]["l"][mask], strict=True
                    ):
                        last_return = float(r)
                        writer.add_scalar("charts/episodic_return", float(r), global_step)
                        writer.add_scalar("charts/episodic_length", int(length), global_step)

            # bootstrap value if not done
            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)
                rollout = slice(0, rollout_steps)
                advantages, returns = compute_gae(
                    rewards[rollout], values[rollout], dones[rollout], next_value, next_done,
                    args.gamma, args.gae_lambda,
                )  # fmt: skip

            # flatten the batch
            b_obs = obs[rollout].reshape((-1,) + envs.single_observation_space.shape)
            b_logprobs = logprobs[rollout].reshape(-1)
            b_actions = actions[rollout].reshape((-1,) + envs.single_action_space.shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values[rollout].reshape(-1)
            b_weights = torch.ones_like(b_values)  # importance weights: 1 for on-policy steps
            # ExploRLer: the last search's episodes join the batch (--reuse-candidate-rollouts)
            b_obs, b_logprobs, b_actions, b_advantages, b_returns, b_values, b_weights = join_reused(
                reused, obs=b_obs, logprobs=b_logprobs, actions=b_actions, advantages=b_advantages,
                returns=b_returns, values=b_values, weights=b_weights,
            )  # fmt: skip
            reused = None
            if search.pending:  # --score-with surrogate-next: this fresh batch scores the last search
                normalizer = ObsNormalizer.from_env(envs.envs[0])
                batch = (b_obs, b_actions, b_logprobs, b_advantages)
                result, _ = search.run(normalizer, global_step, args.total_timesteps, batch)
                log_paper_metric(result.best_score)
                search.log(result, global_step)
            batch_size = len(b_obs)  # args.batch_size unless search episodes were reused
            minibatch_size = math.ceil(batch_size / args.num_minibatches)

            # Optimizing the policy and value network
            b_inds = np.arange(batch_size)
            clipfracs = []
            for _epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, batch_size, minibatch_size):
                    end = start + minibatch_size
                    mb_inds = b_inds[start:end]

                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb_inds], b_actions[mb_inds]
                    )
                    logratio = newlogprob - b_logprobs[mb_inds]
                    ratio = logratio.exp()

                    with torch.no_grad():
                        # calculate approx_kl http://joschu.net/blog/kl-approx.html
                        old_approx_kl = (-logratio).mean()
                        approx_kl = ((ratio - 1) - logratio).mean()
                        clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                    # Policy loss
                    pg_loss1 = -mb_advantages * ratio
                    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                    pg_loss = (torch.max(pg_loss1, pg_loss2) * b_weights[mb_inds]).mean()

                    # Value loss
                    newvalue = newvalue.view(-1)
                    if args.clip_vloss:
                        v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                        v_clipped = b_values[mb_inds] + torch.clamp(
                            newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef
                        )
                        v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                        v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                    else:
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm, foreach=True)
                    optimizer.step()

                if args.explorler:
                    optimizer.record()  # an anchor at the end of every epoch

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # CleanRL's scalars
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
            writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
            writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
            writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
            writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
            writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
            writer.add_scalar("losses/explained_variance", explained_var, global_step)

            # ExploRLer: search the anchors' empty space between iterations, never inside one
            if search.due(iteration, global_step, counted_steps()):  # skipped if it could overrun the budget
                normalizer = ObsNormalizer.from_env(envs.envs[0])  # the training env's statistics now
                batch = (b_obs, b_actions, b_logprobs, b_advantages)  # what surrogate scoring uses
                result, used = search.run(normalizer, global_step, args.total_timesteps, batch)
                total_env_steps += used  # what counts toward the budget is `counted_steps()`
                if args.reuse_candidate_rollouts != "none":  # counted above, trained on next iteration
                    episodes = evaluators.candidate.last_transitions
                    scale = RewardNormalizer.from_env(envs.envs[0])
                    reused = reused_batch(
                        episodes, result.kept_row, scale, lambda o, a: agent.get_action_and_value(o, a)[1::2],
                        everyone=args.reuse_candidate_rollouts == "all",
                        gamma=args.gamma, gae_lambda=args.gae_lambda, device=device,
                    )  # fmt: skip
                    for tag, steps in reused_counts(reused).items():
                        writer.add_scalar(f"explorler/{tag}", steps, global_step)
                log_paper_metric(result.best_score)
                search.log(result, global_step)  # the explorler/* scalars, histogram and landscape
            if (
                not args.explorler
                and args.paper_metric_every > 0
                and iteration % args.paper_metric_every == 0
            ):
                log_paper_metric()
            writer.add_scalar("charts/total_env_steps", total_env_steps, global_step)

            finished = not next_iteration_fits()
            evaluated = iteration % args.eval_every == 0 or finished
            if evaluated:
                t0 = time.time()
                last_eval_return = heldout_eval()
                excluded_seconds += time.time() - t0

            sps = int((global_step - start_step) / max(time.time() - start_time - excluded_seconds, 1e-9))
            writer.add_scalar("charts/SPS", sps, global_step)
            postfix = {"step": f"{global_step:,}", "SPS": f"{sps:,}"}
            if not math.isnan(last_return):
                postfix["ret"] = f"{last_return:.1f}"
            if search.last_gain is not None:
                postfix["gain"] = f"{search.last_gain:.1f}"
            pbar.set_postfix(postfix, refresh=False)
            pbar.update(counted_steps() - counted_before)  # counted steps as they are, past the total too
            if evaluated and args.save_model:
                checkpoint()  # the iteration's end: --resume continues exactly from here
    except KeyboardInterrupt:
        interrupted = True

    pbar.close()
    say(search.summary(counted_steps(), global_step, args.total_timesteps, args.count_eval_steps))
    run.finish(interrupted, iteration, counted_steps(), checkpoint, say)
    evaluators.close()
    envs.close()
    writer.close()
    if interrupted:
        sys.exit(130)  # the shell's code for a run stopped by Ctrl-C
