"""SAC for continuous actions, CleanRL style, with ExploRLer on the actor.

CleanRL's `sac_continuous_action.py` ported to gymnasium 1.x, plus ExploRLer in the blocks marked
`# ExploRLer:`: the actor's Adam is wrapped in `ExploRLerOptimizer`, an anchor is recorded after
every actor gradient step (a ring of `--max-anchors`), and every `--explore-every` env steps the
candidate actors are scored on episodes (`--score-with env`, the authors' ExploRLer-S; the steps
count toward the budget) or by the critics on replay states (`--score-with critic`: SAC's actor
objective, min-Q of the candidate's actions less alpha * log pi; zero env steps). The critics,
their targets and alpha are kept. An iteration of the ExploRLer flags is one env step.

    python single_file_baselines/sac_continuous_action.py --score-with critic   # critic-scored
    python single_file_baselines/sac_continuous_action.py --no-explorler        # plain SAC baseline
"""

import itertools
import json
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
    """seed of the experiment (python, numpy, torch, env resets, evaluation seeds)"""
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
    """if toggled, write a checkpoint (with the replay buffer) at every held-out evaluation and at the end"""

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the environment id of the task"""
    total_timesteps: int = 1000000
    """total env steps of the experiment (see `count_eval_steps` for what counts)"""
    num_envs: int = 1
    """the number of parallel game environments"""
    buffer_size: int = int(1e6)
    """the replay memory buffer size"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient"""
    batch_size: int = 256
    """the batch size of sample from the reply memory"""
    learning_starts: int = 5000
    """timestep to start learning"""
    policy_lr: float = 3e-4
    """the learning rate of the policy network optimizer"""
    q_lr: float = 1e-3
    """the learning rate of the Q network network optimizer"""
    policy_frequency: int = 2
    """the frequency of training policy (delayed)"""
    target_network_frequency: int = 1  # Denis Yarats' implementation delays this by 2.
    """the frequency of updates for the target nerworks"""
    alpha: float = 0.2
    """Entropy regularization coefficient."""
    autotune: bool = True
    """automatic tuning of the entropy coefficient"""

    # ExploRLer arguments, in env steps
    explore_every: int = 1000
    """env steps (per env) between searches (the authors' ExploRLer-S: 10, candidate steps not counted)"""
    eval_every: int = 5000
    """env steps (per env) between held-out evaluations (also one at the end)"""
    score_with: Literal["env", "critic"] = "env"
    """score candidates by episodes, or by the critics on replay states (zero env steps)"""
    critic_states: int = 1024
    """--score-with critic: replay states every candidate is scored on"""


if __name__ == "__main__":
    args = tyro.cli(Args)  # before the heavy imports, so that `--help` answers at once

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from explorler_optim import ExploRLerOptimizer
from explorler_optim.rl import ReplayBuffer, harness


def make_env(env_id, gamma=None, max_episode_steps=None):  # gamma: unused (no reward normalisation)
    def thunk():
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        return env

    return thunk


# ALGO LOGIC: initialize agent here:
class SoftQNetwork(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.fc1 = nn.Linear(
            np.array(env.single_observation_space.shape).prod() + np.prod(env.single_action_space.shape),
            256,
        )
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 1)

    def forward(self, x, a):
        x = torch.cat([x, a], 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


LOG_STD_MAX = 2
LOG_STD_MIN = -5


class Actor(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.fc1 = nn.Linear(np.array(env.single_observation_space.shape).prod(), 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc_mean = nn.Linear(256, np.prod(env.single_action_space.shape))
        self.fc_logstd = nn.Linear(256, np.prod(env.single_action_space.shape))
        # action rescaling
        high, low = env.single_action_space.high, env.single_action_space.low
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        mean = self.fc_mean(x)
        log_std = self.fc_logstd(x)
        log_std = torch.tanh(log_std)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (
            log_std + 1
        )  # From SpinUp / Denis Yarats

        return mean, log_std

    def get_action(self, x):
        mean, log_std = self(x)
        std = log_std.exp()
        normal = torch.distributions.Normal(mean, std)
        x_t = normal.rsample()  # for reparameterization trick (mean + std * N(0,1))
        y_t = torch.tanh(x_t)
        action = y_t * self.action_scale + self.action_bias
        log_prob = normal.log_prob(x_t)
        # Enforcing Action Bound
        log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
        log_prob = log_prob.sum(1, keepdim=True)
        mean = torch.tanh(mean) * self.action_scale + self.action_bias
        return action, log_prob, mean


class GreedyActor(nn.Module):  # ExploRLer: what candidates and held-out episodes play: the mean action
    def __init__(self, actor):
        super().__init__()
        self.actor = actor

    def forward(self, x):
        mean, _ = self.actor(x)
        return torch.tanh(mean) * self.actor.action_scale + self.actor.action_bias


if __name__ == "__main__":
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.quiet:
        warnings.filterwarnings("ignore")
    if args.eval_checkpoint is not None:  # ExploRLer: score a saved actor on held-out episodes

        def saved_actor(ckpt):
            actor = Actor(gym.vector.SyncVectorEnv([make_env(ckpt["args"]["env_id"])]))
            actor.load_state_dict(ckpt["actor"])
            return GreedyActor(actor)

        result = harness.evaluate_checkpoint(
            args.eval_checkpoint, args.heldout_episodes, make_env, build_policy=saved_actor
        )
        print(json.dumps(result))
        sys.exit(0)
    # ExploRLer: the settings checked; budget = (budget_limit, episode_cap)
    budget = harness.check_settings(args, planned_steps=args.total_timesteps)
    # ExploRLer: the run's checkpoint; --resume continues a run exactly, --init-from forks one
    run = harness.RunCheckpoint(args, "explorler-sac-continuous/1")
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

    # env setup: same-step autoreset, so that `final_obs` holds a finished episode's last observation
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.gamma, args.max_episode_steps) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space is supported"

    actor = Actor(envs).to(device)
    qf1 = SoftQNetwork(envs).to(device)
    qf2 = SoftQNetwork(envs).to(device)
    qf1_target = SoftQNetwork(envs).to(device)
    qf2_target = SoftQNetwork(envs).to(device)
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    q_optimizer = optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.q_lr)
    actor_optimizer = optim.Adam(list(actor.parameters()), lr=args.policy_lr)
    if args.explorler:  # ExploRLer: wrap the actor's Adam; explored = the actor, never the critics
        actor_optimizer = ExploRLerOptimizer(
            actor_optimizer,
            max_anchors=args.max_anchors,
            search=harness.search_operator(args),
            selection=harness.selection_rule(args),
            include_incumbent=args.include_incumbent,
            reset_state=args.reset_state,
            seed=args.seed,
            on_invalid="skip",
        )

    # Automatic entropy tuning
    if args.autotune:
        target_entropy = -torch.prod(torch.Tensor(envs.single_action_space.shape).to(device)).item()
        log_alpha = nn.Parameter(torch.zeros(1, device=device))  # a Parameter: checkpoints hold it
        alpha = log_alpha.exp().item()
        a_optimizer = optim.Adam([log_alpha], lr=args.q_lr)
    else:
        alpha = args.alpha

    rb = ReplayBuffer(
        args.buffer_size, envs.single_observation_space.shape, envs.single_action_space.shape, device
    )

    def soft_value(observations):  # ExploRLer: --score-with critic: SAC's actor objective, per state
        pi, log_pi, _ = actor.get_action(observations)
        return (torch.min(qf1(observations, pi), qf2(observations, pi)) - alpha * log_pi).view(-1)

    # ExploRLer: evaluators on their own envs (held-out, candidates, paper's metric, audit) and the
    # search between env steps (when it is due, its budget rule, its env steps, its logs)
    evaluators = harness.build_evaluators(
        args, actor, None, policy=GreedyActor(actor), critic_value=soft_value
    )
    search = harness.build_search_step(args, actor_optimizer, evaluators, run_name, budget, writer, say)
    modules = {"actor": actor, "qf1": qf1, "qf2": qf2, "qf1_target": qf1_target, "qf2_target": qf2_target}
    modules |= {"optimizer": actor_optimizer, "q_optimizer": q_optimizer, "rb": rb}
    if args.autotune:
        modules |= {"a_optimizer": a_optimizer, "log_alpha": nn.ParameterList([log_alpha])}
    saved = run.restore(modules, envs, search, say)  # {}: a new run
    global_step = saved.get("global_step", 0)  # training env steps
    total_env_steps = saved.get("total_env_steps", 0)  # + candidate-evaluation env steps
    iteration = saved.get("iteration", 0)  # env steps of every env
    last_eval_return = saved.get("eval_return")
    if args.autotune:  # --resume / --init-from loaded it
        alpha = log_alpha.exp().item()

    def counted_steps():
        return total_env_steps if args.count_eval_steps else global_step

    def next_step_fits():
        """Another env step is taken while the budget is not reached and it cannot overrun the limit."""
        return counted_steps() < args.total_timesteps and counted_steps() + args.num_envs <= budget[0]

    def heldout_eval():
        score = harness.log_heldout(evaluators, None, writer, (global_step, total_env_steps))
        say(f"global_step={global_step}, total_env_steps={total_env_steps}, eval_return={score:.1f}")
        return score

    def log_paper_metric(score=None):
        """The paper's metric: a search's best candidate score, else 3 episodes on fixed starts."""
        if args.paper_metric_every > 0:
            score = evaluators.paper() if score is None else score
            writer.add_scalar("paper/episodic_return", score, global_step)

    def checkpoint():  # what --resume needs to continue exactly
        counters = dict(global_step=global_step, total_env_steps=total_env_steps, iteration=iteration)
        counters |= dict(eval_return=last_eval_return, interrupted=interrupted, last_return=last_return)
        run.save(modules, envs, search, (torch.as_tensor(obs), torch.zeros(args.num_envs)), **counters)

    if args.init_from is not None and run.resumed is None:  # ExploRLer: the fork point's own score
        last_eval_return = heldout_eval()
        log_paper_metric()

    # TRY NOT TO MODIFY: start the game
    start_time = time.time()
    start_step = global_step
    excluded_seconds = 0.0  # held-out evaluation time (measurement, not training cost)
    obs, _ = envs.reset(seed=args.seed)
    last_return = float("nan")
    if run.resumed is not None:  # ExploRLer: the envs mid-episode, the RNGs, the last observation
        next_obs, _, last_return = run.resume_loop(envs, device)
        obs = next_obs.cpu().numpy()
    interrupted = False
    pbar = tqdm(total=args.total_timesteps, initial=counted_steps(), disable=args.quiet, unit="step")
    # Ctrl-C stops the run cleanly (with --save-model, a checkpoint of that moment is written)
    try:
        first_iteration = iteration + 1  # 1, or after --resume the checkpoint's iteration + 1
        for iteration in itertools.count(first_iteration):  # one env step of every env
            if not next_step_fits():  # counted candidate steps: fewer training steps
                break
            counted_before = counted_steps()
            # ALGO LOGIC: put action logic here (the warm-up draws from numpy's generator, which
            # a checkpoint saves, rather than the action space's)
            if global_step < args.learning_starts:
                space = envs.single_action_space
                actions = np.random.uniform(space.low, space.high, (args.num_envs, *space.shape))
            else:
                actions, _, _ = actor.get_action(torch.Tensor(obs).to(device))
                actions = actions.detach().cpu().numpy()

            # TRY NOT TO MODIFY: execute the game and log data (gymnasium 1.x `final_info`).
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            if "final_info" in infos and "episode" in infos["final_info"]:
                final = infos["final_info"]
                mask = final["_episode"]
                for r, length in zip(final["episode"]["r"][mask], final["episode"]["l"][mask], strict=True):
                    last_return = float(r)
                    writer.add_scalar("charts/episodic_return", float(r), global_step)
                    writer.add_scalar("charts/episodic_length", int(length), global_step)

            # TRY NOT TO MODIFY: save data to replay buffer; a finished episode's last observation
            real_next_obs = next_obs.copy()
            for idx in np.flatnonzero(infos.get("_final_obs", np.zeros(args.num_envs, dtype=bool))):
                real_next_obs[idx] = infos["final_obs"][idx]
            rb.add(obs, real_next_obs, actions, rewards, terminations)

            # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
            obs = next_obs

            # ALGO LOGIC: training.
            if global_step > args.learning_starts:
                data = rb.sample(args.batch_size)
                with torch.no_grad():
                    next_state_actions, next_state_log_pi, _ = actor.get_action(data.next_observations)
                    qf1_next_target = qf1_target(data.next_observations, next_state_actions)
                    qf2_next_target = qf2_target(data.next_observations, next_state_actions)
                    min_qf_next_target = (
                        torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
                    )
                    next_q_value = data.rewards + (1 - data.dones) * args.gamma * min_qf_next_target.view(-1)

                qf1_a_values = qf1(data.observations, data.actions).view(-1)
                qf2_a_values = qf2(data.observations, data.actions).view(-1)
                qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
                qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
                qf_loss = qf1_loss + qf2_loss

                # optimize the model
                q_optimizer.zero_grad()
                qf_loss.backward()
                q_optimizer.step()

                if iteration % args.policy_frequency == 0:  # TD 3 Delayed update support
                    for _ in range(
                        args.policy_frequency
                    ):  # compensate for the delay by doing 'actor_update_interval' instead of 1
                        pi, log_pi, _ = actor.get_action(data.observations)
                        qf1_pi = qf1(data.observations, pi)
                        qf2_pi = qf2(data.observations, pi)
                        min_qf_pi = torch.min(qf1_pi, qf2_pi)
                        actor_loss = ((alpha * log_pi) - min_qf_pi).mean()

                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        if args.explorler:
                            actor_optimizer.record()  # ExploRLer: an anchor per actor gradient step

                        if args.autotune:
                            with torch.no_grad():
                                _, log_pi, _ = actor.get_action(data.observations)
                            alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()

                            a_optimizer.zero_grad()
                            alpha_loss.backward()
                            a_optimizer.step()
                            alpha = log_alpha.exp().item()

                # update the target networks
                if iteration % args.target_network_frequency == 0:
                    for param, target_param in zip(qf1.parameters(), qf1_target.parameters(), strict=True):
                        target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
                    for param, target_param in zip(qf2.parameters(), qf2_target.parameters(), strict=True):
                        target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)

                if iteration % 100 == 0:
                    writer.add_scalar("losses/qf1_values", qf1_a_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf2_values", qf2_a_values.mean().item(), global_step)
                    writer.add_scalar("losses/qf1_loss", qf1_loss.item(), global_step)
                    writer.add_scalar("losses/qf2_loss", qf2_loss.item(), global_step)
                    writer.add_scalar("losses/qf_loss", qf_loss.item() / 2.0, global_step)
                    writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                    writer.add_scalar("losses/alpha", alpha, global_step)
                    if args.autotune:
                        writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
            global_step += args.num_envs
            total_env_steps += args.num_envs

            # ExploRLer: search the anchors' empty space between env steps
            if search.due(iteration, global_step, counted_steps()):  # skipped if it could overrun the budget
                if args.score_with == "critic":  # the states the critics score every candidate on
                    evaluators.candidate.set_batch(rb.sample(args.critic_states).observations)
                result, used = search.run(None, global_step, args.total_timesteps)
                total_env_steps += used  # what counts toward the budget is `counted_steps()`
                log_paper_metric(result.best_score)
                search.log(result, global_step)  # the explorler/* scalars, histogram and landscape
            if (
                not args.explorler
                and args.paper_metric_every > 0
                and iteration % args.paper_metric_every == 0
            ):
                log_paper_metric()

            finished = not next_step_fits()
            evaluated = iteration % args.eval_every == 0 or finished
            if evaluated:  # ExploRLer: held-out episodes of the current policy (not counted)
                t0 = time.time()
                last_eval_return = heldout_eval()
                excluded_seconds += time.time() - t0
            if iteration % 100 == 0 or evaluated:
                sps = int((global_step - start_step) / max(time.time() - start_time - excluded_seconds, 1e-9))
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/total_env_steps", total_env_steps, global_step)
                postfix = {"step": f"{global_step:,}", "SPS": f"{sps:,}"}
                if not np.isnan(last_return):
                    postfix["ret"] = f"{last_return:.1f}"
                if search.last_gain is not None:
                    postfix["gain"] = f"{search.last_gain:.1f}"
                pbar.set_postfix(postfix, refresh=False)
            pbar.update(counted_steps() - counted_before)
            if evaluated and args.save_model:
                checkpoint()  # this step's end: --resume continues exactly from here
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
