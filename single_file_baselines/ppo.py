"""PPO for discrete actions, CleanRL style, with ExploRLer between iterations.

CleanRL's `ppo.py` ported to gymnasium 1.x, with ExploRLer in the blocks marked `# ExploRLer:` as in
`ppo_continuous_action.py`: Adam is wrapped in `ExploRLerOptimizer`, an anchor is recorded after
every epoch, a search runs when due (its env steps count toward the budget), and the policy is
scored on held-out episodes. Candidates and held-out episodes play the argmax of the logits.

    python single_file_baselines/ppo.py                          # ExploRLer-PPO on CartPole-v1
    python single_file_baselines/ppo.py --no-explorler           # plain PPO baseline
    python single_file_baselines/ppo.py --env-id LunarLander-v3  # Box2D
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

    # Algorithm specific arguments
    env_id: str = "CartPole-v1"
    """the id of the environment"""
    total_timesteps: int = 500000
    """total env steps of the experiment (see `count_eval_steps` for what counts)"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """toggle learning rate annealing (linear in the counted steps, to 0 at the budget)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # computed at runtime from the fields above (CleanRL's names; not settable, so not in --help)
    batch_size: tyro.conf.Suppress[int] = 0
    """num_envs * num_steps: training env steps per iteration"""
    minibatch_size: tyro.conf.Suppress[int] = 0
    """batch_size // num_minibatches"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """ceil(total_timesteps / batch_size): the baseline's iterations (fewer when eval steps count)"""


if __name__ == "__main__":
    args = tyro.cli(Args)  # before the heavy imports, so that `--help` answers at once

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import harness


def make_env(env_id, gamma=None, max_episode_steps=None):
    """Training env: CleanRL's (episode statistics only, no normalisation; `gamma` is unused)."""

    def thunk():
        return gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, max_episode_steps=max_episode_steps))

    return thunk


def layer_init(layer, std=2**0.5, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim, num_actions):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, num_actions), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


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
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = math.ceil(args.total_timesteps / args.batch_size)
    # ExploRLer: the settings checked; budget = (budget_limit, episode_cap)
    budget = harness.check_settings(args)
    # ExploRLer: the run's checkpoint; --resume continues a run exactly, --init-from forks one
    run = harness.RunCheckpoint(args, "explorler-ppo-discrete/1")
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
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), (
        "only discrete action space is supported"
    )
    envs.action_space.seed(args.seed)
    envs.single_action_space.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(obs_dim, int(envs.single_action_space.n)).to(device)
    adam = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    optimizer = adam
    if args.explorler:  # ExploRLer: wrap Adam; explored = the actor (the logits network)
        optimizer = ExploRLerOptimizer(
            adam,
            explore_params=agent.actor.parameters(),
            max_anchors=args.max_anchors,
            search=harness.search_operator(args),
            selection=harness.selection_rule(args),
            include_incumbent=args.include_incumbent,
            reset_state=args.reset_state,
            seed=args.seed,
            on_invalid="skip",
        )
    # ExploRLer: evaluators on their own envs (held-out episodes, candidates; raw
    # observations, as the training env's) and the search between iterations
    evaluators = harness.build_evaluators(args, agent, None)
    search = harness.build_search_step(args, optimizer, evaluators, run_name, budget, writer, say)
    saved = run.restore({"agent": agent, "optimizer": optimizer}, envs, search, say)  # {}: a new run
    global_step = saved.get("global_step", 0)  # training env steps
    total_env_steps = saved.get("total_env_steps", 0)  # + candidate-evaluation env steps
    iteration = saved.get("iteration", 0)
    last_eval_return = saved.get("eval_return")

    def counted_steps():
        return total_env_steps if args.count_eval_steps else global_step

    def next_iteration_fits():
        """Another iteration starts while the budget is not reached and it cannot overrun the limit."""
        return counted_steps() < args.total_timesteps and counted_steps() + args.batch_size <= budget[0]

    def heldout_eval():
        score = harness.log_heldout(evaluators, None, writer, (global_step, total_env_steps))
        say(f"global_step={global_step}, total_env_steps={total_env_steps}, eval_return={score:.1f}")
        return score

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)

    if args.init_from is not None and run.resumed is None:  # ExploRLer: the fork point's own score
        last_eval_return = heldout_eval()

    # TRY NOT TO MODIFY: start the game
    start_time = time.time()
    start_step = global_step
    excluded_seconds = 0.0  # held-out evaluation time (measurement, not training cost)
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    last_return = float("nan")
    if run.resumed is not None:  # ExploRLer: the envs mid-episode, the RNGs, the last observation
        next_obs, next_done, last_return = run.resume_loop(envs, device)
    interrupted = False

    def checkpoint():  # what --resume needs to continue exactly
        counters = dict(global_step=global_step, total_env_steps=total_env_steps, iteration=iteration)
        counters |= dict(eval_return=last_eval_return, interrupted=interrupted, last_return=last_return)
        run.save({"agent": agent, "optimizer": optimizer}, envs, search, (next_obs, next_done), **counters)

    pbar = tqdm(total=args.total_timesteps, initial=counted_steps(), disable=args.quiet, unit="step")
    # Ctrl-C stops the run cleanly (with --save-model, a checkpoint of that moment is written)
    try:
        first_iteration = iteration + 1  # 1, or after --resume the checkpoint's iteration + 1
        for iteration in itertools.count(first_iteration):  # to num_iterations without ExploRLer
            if not next_iteration_fits():  # counted candidate steps: fewer iterations
                break
            counted_before = counted_steps()
            # Annealing the rate: linear in the counted steps, so it reaches ~0 at the budget either way
            if args.anneal_lr:
                frac = max(1.0 - counted_before / args.total_timesteps, 0.0)
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(0, args.num_steps):
                global_step += args.num_envs
                total_env_steps += args.num_envs
                obs[step] = next_obs
                dones[step] = next_done

                # ALGO LOGIC: action logic
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs)
                    values[step] = value.flatten()
                actions[step] = action
                logprobs[step] = logprob

                # TRY NOT TO MODIFY: execute the game and log data (gymnasium 1.x `final_info`).
                next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                next_done = np.logical_or(terminations, truncations)
                rewards[step] = torch.tensor(reward).to(device).view(-1)
                next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)

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

            # Optimizing the policy and value network
            b_inds = np.arange(args.batch_size)
            clipfracs = []
            for _epoch in range(args.update_epochs):
                np.random.shuffle(b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    end = start + args.minibatch_size
                    mb_inds = b_inds[start:end]

                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        b_obs[mb_inds], b_actions.long()[mb_inds]
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
                    pg_loss = torch.max(pg_loss1, pg_loss2).mean()

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
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

                if args.explorler:
                    optimizer.record()  # ExploRLer: an anchor at the end of every epoch

                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

            # TRY NOT TO MODIFY: record rewards for plotting purposes
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
                batch = (b_obs, b_actions, b_logprobs, b_advantages)  # what surrogate scoring uses
                result, used = search.run(None, global_step, args.total_timesteps, batch)
                total_env_steps += used  # what counts toward the budget is `counted_steps()`
                search.log(result, global_step)  # the explorler/* scalars, histogram and landscape
            writer.add_scalar("charts/total_env_steps", total_env_steps, global_step)

            finished = not next_iteration_fits()
            evaluated = iteration % args.eval_every == 0 or finished
            if evaluated:  # ExploRLer: held-out episodes of the current policy (not counted)
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
            pbar.update(counted_steps() - counted_before)
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
