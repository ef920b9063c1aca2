"""PPO for continuous actions, CleanRL style, with ExploRLer between iterations.

One file, top to bottom. `python ppo_continuous_action.py` runs ExploRLer-PPO on Hopper-v5;
`--no-explorler` runs the plain PPO baseline with the same code, seeds and held-out evaluation.
The ExploRLer part is small: the Adam optimizer is wrapped in `ExploRLerOptimizer`, an anchor is
recorded after every epoch, and `optimizer.explore(evaluator)` runs between iterations.

    python single_file_baselines/ppo_continuous_action.py                  # ExploRLer-PPO
    python single_file_baselines/ppo_continuous_action.py --no-explorler   # plain PPO baseline
    python single_file_baselines/ppo_continuous_action.py --save-model     # + checkpoint
    python single_file_baselines/ppo_continuous_action.py --eval-checkpoint runs/<run>/<name>.pt
    tensorboard --logdir runs

Compare runs by `eval/episodic_return`: the current policy on `heldout_episodes` held-out
deterministic episodes, with the same seeds in both modes and never counted in the budget.
"""

import functools
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


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (python, numpy, torch, env resets, action spaces, evaluation seeds)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available"""
    torch_threads: int = 1
    """torch CPU threads; 1 is fastest for these small MLPs (0 keeps torch's default)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "explorler"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    quiet: bool = False
    """if toggled, no console output (no progress bar, no messages)"""
    save_model: bool = False
    """if toggled, write a checkpoint (at every held-out evaluation and at the end, same file)"""
    checkpoint_path: str | None = None
    """where `--save-model` writes the checkpoint (default runs/{run_name}/{exp_name}.pt)"""
    resume: str | None = None
    """path of a checkpoint to continue training from, exactly where it stopped (envs, RNGs, counters)"""
    init_from: str | None = None
    """path of a checkpoint to start a new run from: its weights, normalisation and optimizer state"""
    eval_checkpoint: str | None = None
    """path of a checkpoint to evaluate on held-out episodes (its saved seed and env); no training"""

    # Algorithm specific arguments
    env_id: str = "Hopper-v5"
    """the id of the environment"""
    max_episode_steps: int | None = None
    """episode length cap for the training and evaluation envs (None: the env's default)"""
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
    """toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """toggles whether or not to use a clipped loss for the value function, as per the paper"""
    ent_coef: float = 0.0
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # ExploRLer arguments
    explorler: bool = True
    """if toggled, wrap Adam in ExploRLerOptimizer and explore between iterations"""
    explore_every: int = 20
    """iterations per explore cycle (default from benchmarks `tune`; 1 is the paper's schedule)"""
    explore_start_step: int = 0
    """training env steps (global_step) before which no search runs (1M: pretrain, then explore)"""
    max_anchors: int = 10
    """anchors kept: an anchor is recorded at every epoch end, the last max_anchors are searched"""
    search: Literal["esa", "random-walk", "checkpoint-average", "gaussian"] = "esa"
    """how candidates are generated from the anchors"""
    esa_agents: int = 5
    """ESA (and random walk): number of search agents"""
    esa_steps: int = 60
    """ESA (and random walk): steps per agent"""
    esa_step_size: float = 1e-3
    """ESA (and random walk): step size"""
    esa_momentum: float = 0.3
    """ESA: momentum gamma"""
    esa_epsilon: float = 0.5
    """ESA: Lennard-Jones epsilon"""
    esa_neighbors: int = 6
    """ESA: nearest anchors that act on an agent"""
    esa_snapshot_every: int = 60
    """ESA (and random walk): a candidate every this many steps, plus the final position (20: the paper's)"""
    gaussian_candidates: int = 10
    """gaussian search: number of candidates sampled (10: as many as ESA gives with the defaults)"""
    fixed_candidate_starts: bool = False
    """score every search's candidates on the same start states (the run's seed: the authors' scoring)"""
    eval_episodes: int = 1
    """deterministic episodes per candidate, same seeds for all candidates of a cycle (3: the paper's)"""
    score_with: Literal["env", "surrogate", "surrogate-next"] = "env"
    """score candidates by episodes, or with no env steps on the update's batch or the next one (README)"""
    surrogate_max_kl: float = 0.01
    """surrogate scoring: largest mean KL to the batch's policy (widened to the update's own KL)"""
    include_incumbent: bool = True
    """score the current policy too and commit a candidate only if it beats it"""
    reuse_candidate_rollouts: Literal["none", "winner", "all"] = "none"
    """train on the search's episodes, scored stochastically: the kept policy's (winner), or all (weighted)"""
    reset_state: bool = True
    """after a commit, clear Adam's moments of the explored parameters"""
    count_eval_steps: bool = True
    """count candidate-evaluation env steps toward total_timesteps (off: the paper's accounting)"""
    budget_tolerance: float = 0.01
    """no iteration or search starts that could overrun the budget by more than this fraction (README)"""
    racing: bool = False
    """let the candidate evaluator drop hopeless candidates early (PolicyEvaluator racing)"""
    eval_workers: int = 1
    """worker processes of the candidate evaluator (1: evaluate in this process)"""
    selection_truth_episodes: int = 0
    """audit each search: every policy also on this many held-out episodes and the paper's 3 (0: off)"""
    landscape_every: int = 0
    """log the landscape view (anchors, candidates, scores) to TensorBoard every K cycles (0: off)"""

    # Held-out evaluation (the same for baseline and ExploRLer; never counted in the budget)
    eval_every: int = 10
    """iterations between held-out evaluations of the current policy (also one at the end)"""
    heldout_episodes: int = 10
    """deterministic held-out episodes per evaluation (every `eval_every` iterations, at the end)"""
    paper_metric_every: int = 0
    """iterations between the paper's metric, paper/episodic_return (0: off; see the README)"""

    # computed at runtime from the fields above (CleanRL's names; not settable, so not in --help)
    batch_size: tyro.conf.Suppress[int] = 0
    """num_envs * num_steps: training env steps per iteration"""
    minibatch_size: tyro.conf.Suppress[int] = 0
    """batch_size // num_minibatches"""
    num_iterations: tyro.conf.Suppress[int] = 0
    """ceil(total_timesteps / batch_size): the baseline's iterations (fewer when eval steps count)"""


# renamed settings: old flags (and old checkpoints' args) still work in this release, with a warning
RENAMED = {
    "final_eval_episodes": "heldout_episodes",
    "explore_start": "explore_start_step",
    "reset_optimizer_state": "reset_state",
}
OLD_FLAGS = {
    f"--{no}{old}".replace("_", "-"): f"--{no}{new}".replace("_", "-")
    for old, new in RENAMED.items()
    for no in ("", "no-")
}


def parse_args(argv):
    """`tyro.cli(Args)`; a renamed flag's old spelling is replaced by the new one, with a warning."""
    new_argv = []
    for token in argv:
        flag, equals, value = token.partition("=")
        new = OLD_FLAGS.get(flag.replace("_", "-"))
        if new is not None:
            warnings.warn(
                f"{flag} is deprecated, gone in the next release: use {new}", DeprecationWarning, stacklevel=2
            )
            flag = new
        new_argv.append(flag + equals + value)
    return tyro.cli(Args, args=new_argv)


if __name__ == "__main__":
    # parsed before the heavy imports below, so that `--help` and a mistyped flag answer at once
    args = parse_args(sys.argv[1:])

import gymnasium as gym
import numpy as np
import torch
from torch import nn, optim
from torch.distributions.normal import Normal
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

try:
    from explorler_optim import (
        CheckpointAverage,
        EmptySpaceSearch,
        ExploRLerOptimizer,
        GaussianSearch,
        RandomWalkSearch,
    )
except ModuleNotFoundError as error:
    raise SystemExit(
        f"{error}: install the package first, `pip install -e .` in the repository root"
    ) from None
from explorler_optim.checkpoint import load_normalization_state, load_run_state, run_state, save_checkpoint
from explorler_optim.rl import ObsNormalizer, PolicyEvaluator, RewardNormalizer, RunEvaluators, SearchStep


def make_env(env_id, idx, gamma, max_episode_steps=None):
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


def build_eval_env(env_id, max_episode_steps=None):
    """Evaluation env: raw observations and rewards; the evaluator applies frozen obs stats."""
    env = gym.make(env_id, max_episode_steps=max_episode_steps)
    return gym.wrappers.FlattenObservation(env)


def make_eval_env(env_id, max_episode_steps=None):
    """A picklable zero-arg env builder (evaluator worker processes need one)."""
    return functools.partial(build_eval_env, env_id, max_episode_steps)


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


def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda, traces=None):
    """GAE(lambda) over a (num_steps, num_envs) rollout; returns (advantages, returns).

    `dones[t]` says the obs at step t starts a new episode (the previous step ended one): with
    same-step autoreset that obs is already the reset obs, so neither the value nor the lambda
    trace crosses the boundary. As in CleanRL, done = terminated | truncated (no bootstrap on
    truncation either). `traces[t]` (off-policy steps only) cuts the lambda trace into step t by
    a truncated importance ratio, as V-trace's c_t.
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        trace = nextnonterminal if traces is None or t == num_steps - 1 else nextnonterminal * traces[t + 1]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * trace * lastgaelam
    return advantages, advantages + values


def reused_batch(agent, episodes, kept_row, reward_normalizer, args, device):
    """A search's episodes as extra rows of the next iteration's batch (`--reuse-candidate-rollouts`).

    The episodes of the policy that training resumes from (`kept_row`) are on-policy: they take the
    place of as many training env steps (`on_policy` marks them). With `all`, the other candidates'
    episodes join on top, each step weighted by its truncated importance ratio min(1, pi(a|s) /
    mu(a|s)) against the candidate that played it (V-trace's rho_t and c_t): the weight scales the
    step's policy loss and cuts the GAE trace. Rewards are scaled as the training env scales them
    now; episodes are whole, so none is bootstrapped (done, as in `compute_gae`).
    """
    columns = {}
    for episode in episodes:
        if len(episode) == 0 or (episode.candidate != kept_row and args.reuse_candidate_rollouts != "all"):
            continue
        steps = len(episode)
        episode_obs = torch.as_tensor(episode.observations, device=device)
        episode_actions = torch.as_tensor(episode.actions, device=device)
        scaled = torch.as_tensor(reward_normalizer(episode.rewards), dtype=torch.float32, device=device)
        with torch.no_grad():
            _, logprob, _, value = agent.get_action_and_value(episode_obs, episode_actions)
        if episode.candidate == kept_row:
            weight = torch.ones(steps, device=device)  # played by the current policy: on-policy
        else:
            behaviour = torch.as_tensor(episode.log_probs, device=device)
            weight = (logprob - behaviour).exp().clamp(max=1.0)
        advantage, target = compute_gae(
            scaled[:, None],
            value.view(steps, 1),
            torch.zeros(steps, 1, device=device),
            next_value=torch.zeros(1, 1, device=device),
            next_done=torch.ones(1, device=device),
            gamma=args.gamma,
            gae_lambda=args.gae_lambda,
            traces=weight[:, None],
        )
        row = {
            "obs": episode_obs,
            "actions": episode_actions,
            "logprobs": logprob,
            "advantages": advantage.view(-1),
            "returns": target.view(-1),
            "values": value.view(-1),
            "weights": weight,
            "on_policy": torch.full((steps,), episode.candidate == kept_row, device=device),
        }
        for key, value_of_key in row.items():
            columns.setdefault(key, []).append(value_of_key)
    return {key: torch.cat(parts) for key, parts in columns.items()} or None


def make_search(args):
    if args.search == "esa":
        return EmptySpaceSearch(
            agents=args.esa_agents,
            steps=args.esa_steps,
            step_size=args.esa_step_size,
            momentum=args.esa_momentum,
            epsilon=args.esa_epsilon,
            neighbors=args.esa_neighbors,
            snapshot_every=args.esa_snapshot_every,
        )
    if args.search == "random-walk":
        return RandomWalkSearch(
            agents=args.esa_agents,
            steps=args.esa_steps,
            step_size=args.esa_step_size,
            neighbors=args.esa_neighbors,
            snapshot_every=args.esa_snapshot_every,
        )
    if args.search == "checkpoint-average":
        return CheckpointAverage()
    return GaussianSearch(num_candidates=args.gaussian_candidates)


def policies_per_search(args, num_anchors):
    """How many policies one search scores: its candidates, plus the incumbent when it is scored."""
    if args.search in ("esa", "random-walk"):
        snapshots = len(range(0, args.esa_steps, args.esa_snapshot_every)) + 1  # + the final position
        candidates = min(args.esa_agents, num_anchors) * snapshots
    elif args.search == "checkpoint-average":
        candidates = 1
    else:
        candidates = args.gaussian_candidates
    return candidates + int(args.include_incumbent)


def candidate_seed(args, cycle):
    """Reset seed of episode 0 for every candidate of explore cycle `cycle` (episode k: +k)."""
    if args.fixed_candidate_starts:
        return args.seed  # the authors' scoring: the same start states every cycle
    return (args.seed * 1_000_003 + cycle * args.eval_episodes) % 999_000_000


def truth_seed(args, cycle):
    """Reset seed of the selection audit's held-out episode 0 at cycle `cycle`: no other run's seeds."""
    return 2_000_000_000 + (args.seed % 1000) * 1_000_000 + cycle * args.selection_truth_episodes


def heldout_seed(args):
    """Reset seed of held-out episode 0; disjoint from candidate seeds, the same in both modes."""
    return 1_000_000_000 + (args.seed % 1_000_000) * 1000


def check_settings(args):
    """(budget_limit, episode_cap), or an error that names the fix before anything is built."""
    if args.budget_tolerance < 0:
        raise SystemExit(f"--budget-tolerance must be >= 0, got {args.budget_tolerance}")
    # the budget is the baseline's total (whole iterations, as CleanRL rounds); with candidate steps
    # counted, nothing starts that could take the counted steps past it by more than the tolerance
    budget_limit = args.num_iterations * args.batch_size + int(args.budget_tolerance * args.total_timesteps)
    # a search's env steps are bounded by policies x episodes x this cap on an episode's length
    episode_cap = args.max_episode_steps or gym.spec(args.env_id).max_episode_steps
    if args.reuse_candidate_rollouts != "none" and not args.explorler:
        raise SystemExit(
            "--reuse-candidate-rollouts reuses a search's episodes: it needs ExploRLer (drop --no-explorler)"
        )
    if args.explorler and args.count_eval_steps and not episode_cap:
        raise SystemExit(
            f"{args.env_id} has no time limit, so the env steps of a search cannot be bounded within the "
            "budget: pass --max-episode-steps N (or --no-count-eval-steps)"
        )
    if args.surrogate_max_kl <= 0:
        raise SystemExit(f"--surrogate-max-kl must be > 0, got {args.surrogate_max_kl}")
    if args.score_with == "surrogate" and args.reuse_candidate_rollouts != "none":
        raise SystemExit(
            "--reuse-candidate-rollouts trains on a search's episodes and --score-with surrogate plays "
            "none: choose one of them"
        )
    if args.landscape_every > 0:
        from explorler_optim.viz import require_matplotlib

        try:
            require_matplotlib()  # fails now, not at the first search
        except ImportError as error:
            raise SystemExit(f"--landscape-every: {error}") from None
    return budget_limit, episode_cap


def evaluate_checkpoint(args):
    """Held-out evaluation of a saved checkpoint with its saved statistics and seeds."""
    ckpt = torch.load(args.eval_checkpoint, map_location="cpu", weights_only=True)
    saved = {RENAMED.get(k, k): v for k, v in ckpt["args"].items()}  # also before the renames
    saved = Args(**{k: v for k, v in saved.items() if k in Args.__dataclass_fields__})
    # the env rebuilt with the training wrappers, holding the saved statistics: the normaliser is
    # read from it exactly as during training
    stats_env = make_env(saved.env_id, 0, saved.gamma, saved.max_episode_steps)()
    load_normalization_state(stats_env, ckpt)
    obs_dim = int(np.prod(stats_env.observation_space.shape))
    act_dim = int(np.prod(stats_env.action_space.shape))
    agent = Agent(obs_dim, act_dim)
    agent.load_state_dict(ckpt["agent"])
    agent.eval()
    episodes = args.heldout_episodes
    evaluator = PolicyEvaluator(
        agent.actor_mean,
        make_eval_env(saved.env_id, saved.max_episode_steps),
        episodes=episodes,
        obs_normalizer=ObsNormalizer.from_env(stats_env),
        seed=heldout_seed(saved),
    )
    score = float(evaluator())
    evaluator.close()
    stats_env.close()
    result = {
        "checkpoint": args.eval_checkpoint,
        "env_id": saved.env_id,
        "episodes": episodes,
        "eval_episodic_return": score,
        "saved_eval_episodic_return": ckpt.get("eval_return"),
        "global_step": ckpt["global_step"],
        "total_env_steps": ckpt["total_env_steps"],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if args.quiet:
        warnings.filterwarnings("ignore")
    if args.eval_checkpoint is not None:
        evaluate_checkpoint(args)
        sys.exit(0)

    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = math.ceil(args.total_timesteps / args.batch_size)
    budget_limit, episode_cap = check_settings(args)
    # --resume continues a run exactly: same TensorBoard run, envs mid-episode, RNGs where they were
    resumed = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    exact_resume = resumed is not None and "envs" in resumed  # checkpoints of earlier releases lack it
    run_name = (
        resumed["run_name"]
        if exact_resume
        else f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    )
    checkpoint_path = args.checkpoint_path or os.path.join("runs", run_name, f"{args.exp_name}.pt")
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
    # a resumed run drops what the stopped one logged after its checkpoint
    writer = SummaryWriter(
        f"runs/{run_name}", purge_step=resumed["global_step"] + 1 if exact_resume else None
    )
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()),
    )

    # seeding: python, numpy, torch here; env resets and action spaces below
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup: same-step autoreset, so that the obs after a done is already the reset obs and
    # `final_info` reports the finished episode (gymnasium 1.x)
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.gamma, args.max_episode_steps) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box), "only continuous action space"
    envs.action_space.seed(args.seed)
    envs.single_action_space.seed(args.seed)

    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(np.prod(envs.single_action_space.shape))
    agent = Agent(obs_dim, act_dim).to(device)
    # foreach: one fused update for all tensors; torch enables it by default on CUDA only, and on the
    # CPU it is faster for these small networks with the same results
    adam = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, foreach=True)
    if args.explorler:
        # the one-line change: explored = the actor (mean network + log-std); the critic is kept
        optimizer = ExploRLerOptimizer(
            adam,
            explore_params=[*agent.actor_mean.parameters(), agent.actor_logstd],
            max_anchors=args.max_anchors,
            search=make_search(args),
            include_incumbent=args.include_incumbent,
            reset_state=args.reset_state,
            seed=args.seed,
            on_invalid="skip",
        )
    else:
        optimizer = adam

    # evaluators on their own envs: deterministic actions, frozen copies of the obs statistics; the
    # paper's metric (3 episodes on the run's fixed start states) and the selection audit if asked
    evaluators = RunEvaluators.build(
        agent.actor_mean,
        make_eval_env(args.env_id, args.max_episode_steps),
        envs.envs[0],
        heldout_episodes=args.heldout_episodes,
        heldout_seed=heldout_seed(args),
        candidate_episodes=args.eval_episodes if args.explorler else 0,
        candidate_seed=candidate_seed(args, 0),
        workers=args.eval_workers,
        racing=args.racing,
        paper_metric=args.paper_metric_every > 0,
        paper_seed=args.seed,
        truth_episodes=args.selection_truth_episodes,
        score_with="env" if args.score_with == "env" else "surrogate",  # surrogate*: no env steps
        log_prob=lambda obs, act: agent.get_action_and_value(obs, act)[1],
        surrogate_max_kl=args.surrogate_max_kl,
        # reused episodes must be the stochastic policy's, with each action's log-probability
        candidate_log_std=agent.actor_logstd if args.reuse_candidate_rollouts != "none" else None,
    )
    # ExploRLer's search between iterations: when it is due, its budget rule, its env steps, its logs
    search = SearchStep(
        optimizer,
        evaluators.candidate,
        candidate_seed=functools.partial(candidate_seed, args),
        every=args.explore_every,
        start_step=args.explore_start_step,
        audit=evaluators.audit,
        truth_seed=functools.partial(truth_seed, args),
        audit_path=os.path.join("runs", run_name, "selection_audit.jsonl"),
        budget_limit=budget_limit if args.count_eval_steps else None,
        policies_per_search=functools.partial(policies_per_search, args),
        episode_cap=episode_cap,
        landscape_every=args.landscape_every,
        writer=writer,
        say=say,
        defer=args.score_with == "surrogate-next",  # scored on the next batch, before its update
    )

    global_step = 0  # training env steps
    total_env_steps = 0  # training + candidate-evaluation env steps (those: search.eval_env_steps)
    iteration = 0
    last_eval_return = None
    reset_seed = args.seed
    reused = None  # the last search's episodes, waiting to join the next batch (--reuse-candidate-rollouts)
    if resumed is not None:
        ckpt = resumed
        if ckpt["explorler"] and not args.explorler:
            raise SystemExit("checkpoint was written with ExploRLer on; resume without --no-explorler")
        agent.load_state_dict(ckpt["agent"])
        optimizer.load_state_dict(ckpt["optimizer"])
        load_normalization_state(envs, ckpt)
        search.load_state_dict(ckpt)  # the search cycle, its env steps, last anchors, last gain, skips
        global_step, total_env_steps = ckpt["global_step"], ckpt["total_env_steps"]
        iteration = ckpt["iteration"]
        last_eval_return = ckpt.get("eval_return")
        reused = ckpt.get("reused")
        if not exact_resume:  # an earlier release's checkpoint: new episodes from a derived seed
            reset_seed = args.seed + 10_007 * iteration
            torch.manual_seed(reset_seed)
            envs.action_space.seed(reset_seed)
        say(f"resumed from {args.resume} at global_step={global_step} iteration={iteration}")
    elif args.init_from is not None:
        # a new run from a trained one: its weights, statistics and optimizer; counters from zero
        source = torch.load(args.init_from, map_location=device, weights_only=True)
        if source["args"]["env_id"] != args.env_id:
            raise SystemExit(
                f"--init-from: {args.init_from} was trained on {source['args']['env_id']}, not {args.env_id}"
            )
        agent.load_state_dict(source["agent"])
        optimizer.load_state_dict(source["optimizer"])
        load_normalization_state(envs, source)
        if args.explorler:
            optimizer.clear_anchors()  # the fork starts a new cycle
        say(f"started from {args.init_from} (trained for {source['global_step']:,} steps)")

    def counted_steps():
        return total_env_steps if args.count_eval_steps else global_step

    def next_iteration_fits():
        """Another iteration starts while the budget is not reached and it cannot overrun the limit."""
        return counted_steps() < args.total_timesteps and counted_steps() + args.batch_size <= budget_limit

    def heldout_eval():
        evaluators.heldout.obs_normalizer = ObsNormalizer.from_env(envs.envs[0])
        evaluators.heldout.seed = heldout_seed(args)
        score = float(evaluators.heldout())
        writer.add_scalar("eval/episodic_return", score, global_step)
        writer.add_scalar("eval/episodic_return_vs_total_steps", score, total_env_steps)
        say(f"global_step={global_step}, total_env_steps={total_env_steps}, eval_return={score:.1f}")
        return score

    def log_paper_metric(score=None):
        """The paper's metric: a search's best candidate score, else 3 episodes on fixed starts."""
        if args.paper_metric_every <= 0:
            return
        if score is None:
            evaluators.paper.obs_normalizer = ObsNormalizer.from_env(envs.envs[0])
            score = float(evaluators.paper())
        writer.add_scalar("paper/episodic_return", score, global_step)

    def checkpoint():
        save_checkpoint(
            checkpoint_path,
            {
                "format": "explorler-ppo-continuous/1",
                "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(),
                "explorler": bool(args.explorler),
                "args": dict(vars(args)),
                "global_step": int(global_step),
                "total_env_steps": int(total_env_steps),
                "iteration": int(iteration),
                "eval_return": last_eval_return,
                "interrupted": interrupted,
                "run_name": run_name,  # --resume continues the same TensorBoard run
                "last_return": last_return,
                "reused": reused,
                **search.state_dict(),  # "cycle", "eval_env_steps", "last_cycle_anchors", "last_gain", ...
                # the normalisation statistics, and what --resume needs to continue exactly: the envs
                # mid-episode, the random generators and the loop's last observation
                **run_state(envs, next_obs, next_done),
            },
        )

    # rollout storage
    horizon = (args.num_steps, args.num_envs)
    obs = torch.zeros(horizon + envs.single_observation_space.shape, device=device)
    actions = torch.zeros(horizon + envs.single_action_space.shape, device=device)
    logprobs = torch.zeros(horizon, device=device)
    rewards = torch.zeros(horizon, device=device)
    dones = torch.zeros(horizon, device=device)
    values = torch.zeros(horizon, device=device)

    if args.init_from is not None and resumed is None:
        # the fork point, before the first reset updates the statistics: the checkpoint's own score
        last_eval_return = heldout_eval()
        log_paper_metric()

    # start the game
    start_time = time.time()
    start_step = global_step
    excluded_seconds = 0.0  # held-out evaluation time (measurement, not training cost)
    next_obs, _ = envs.reset(seed=reset_seed)
    next_obs = torch.as_tensor(next_obs, dtype=torch.float32, device=device)
    next_done = torch.zeros(args.num_envs, device=device)
    last_return = float("nan")
    if exact_resume:  # the envs mid-episode, the random generators and the loop's last observation
        next_obs, next_done = load_run_state(envs, resumed, device)
        last_return = resumed["last_return"]
    interrupted = False
    pbar = tqdm(
        total=args.total_timesteps,
        initial=counted_steps(),
        disable=args.quiet,
        unit="step",
        dynamic_ncols=True,
    )

    # Ctrl-C stops the run cleanly: the envs and evaluators are closed and, with --save-model, the
    # state at that moment is written (a checkpoint that --resume continues from)
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
                    rewards[rollout],
                    values[rollout],
                    dones[rollout],
                    next_value,
                    next_done,
                    args.gamma,
                    args.gae_lambda,
                )

            # flatten the batch
            b_obs = obs[rollout].reshape((-1,) + envs.single_observation_space.shape)
            b_logprobs = logprobs[rollout].reshape(-1)
            b_actions = actions[rollout].reshape((-1,) + envs.single_action_space.shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values[rollout].reshape(-1)
            b_weights = torch.ones_like(b_values)  # importance weights: 1 for on-policy steps
            if reused is not None:  # ExploRLer: the last search's episodes join the batch
                b_obs, b_logprobs, b_actions, b_advantages, b_returns, b_values, b_weights = (
                    torch.cat([fresh, reused[key]])
                    for fresh, key in (
                        (b_obs, "obs"),
                        (b_logprobs, "logprobs"),
                        (b_actions, "actions"),
                        (b_advantages, "advantages"),
                        (b_returns, "returns"),
                        (b_values, "values"),
                        (b_weights, "weights"),
                    )
                )
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
                    reused = reused_batch(
                        agent,
                        evaluators.candidate.last_transitions,
                        result.kept_row,
                        RewardNormalizer.from_env(envs.envs[0]),
                        args,
                        device,
                    )
                    reused_steps = 0 if reused is None else len(reused["obs"])
                    on_policy_steps = 0 if reused is None else int(reused["on_policy"].sum())
                    writer.add_scalar("explorler/reused_steps", reused_steps, global_step)
                    writer.add_scalar("explorler/reused_on_policy_steps", on_policy_steps, global_step)
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
    if interrupted:
        if args.save_model:
            checkpoint()
            kept = f"checkpoint of this moment written to {checkpoint_path} (continue with --resume)"
        else:
            kept = "no checkpoint written (run with --save-model to keep one, also on Ctrl-C)"
        print(
            f"interrupted at iteration {iteration}, {counted_steps():,} counted env steps: {kept}",
            file=sys.stderr,
        )
    elif args.save_model:
        say(f"model saved to {checkpoint_path}")
    evaluators.close()
    envs.close()
    writer.close()
    if interrupted:
        sys.exit(130)  # the shell's code for a run stopped by Ctrl-C
