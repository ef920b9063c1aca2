"""PPO with ExploRLer on Pendulum-v1, complete: the README's drop-in loop with its three helpers.

    python examples/minimal_ppo.py                  # 40 iterations of 1,024 steps, 8 searches
    python examples/minimal_ppo.py --iterations 2   # a smoke run (the test suite's)

Needs gymnasium (`pip install -e ".[scripts]"` in a clone). The optimizer is Adam wrapped by
ExploRLerOptimizer: an anchor after every epoch, a search of the last 10 anchors every 5 iterations,
each candidate scored by one deterministic episode on a separate env.
"""

import argparse

import gymnasium as gym
import torch
from torch import nn

from explorler_optim import ExploRLerOptimizer

parser = argparse.ArgumentParser()
parser.add_argument("--iterations", type=int, default=40, help="PPO iterations of 1,024 env steps")
parser.add_argument("--explore-every", type=int, default=5, help="iterations between searches")
args = parser.parse_args()
torch.manual_seed(0)
torch.set_num_threads(1)  # networks this small only wait on extra threads
env, eval_env = gym.make("Pendulum-v1"), gym.make("Pendulum-v1")
obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]


class Agent(nn.Module):
    def __init__(self):
        super().__init__()
        self.critic = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 1))
        self.actor_mean = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, act_dim))
        self.actor_logstd = nn.Parameter(torch.zeros(1, act_dim))

    def dist(self, obs):
        return torch.distributions.Normal(self.actor_mean(obs), self.actor_logstd[0].exp())


def collect_rollout(agent, steps=1024, gamma=0.99, lam=0.95, minibatch_size=64):
    """1,024 steps of the current policy -> shuffled minibatches of (obs, action, log_prob, adv, return)."""
    obs, _ = env.reset(seed=int(torch.randint(2**31, ())))
    rows, rewards, dones = [], [], []
    with torch.no_grad():
        for _ in range(steps):
            x = torch.as_tensor(obs, dtype=torch.float32)
            dist = agent.dist(x)
            action = dist.sample()
            obs, reward, terminated, truncated, _ = env.step(action.clamp(-2.0, 2.0).numpy())
            rows.append((x, action, dist.log_prob(action).sum()))
            rewards.append(float(reward) / 10.0)  # Pendulum's rewards reach -16: scaled for the critic
            dones.append(terminated or truncated)
            if terminated or truncated:
                obs, _ = env.reset()
        x, actions, log_probs = (torch.stack(column) for column in zip(*rows))
        values = agent.critic(x).squeeze(1)
        next_value = agent.critic(torch.as_tensor(obs, dtype=torch.float32))[0]
    advantages, last = torch.zeros(steps), 0.0
    for t in reversed(range(steps)):  # GAE; Pendulum only truncates, so bootstrap from the value
        following = next_value if t == steps - 1 or dones[t] else values[t + 1]
        delta = rewards[t] + gamma * following - values[t]
        last = delta + gamma * lam * (0.0 if dones[t] else last)
        advantages[t] = last
    returns = advantages + values
    order = torch.randperm(steps).split(minibatch_size)
    return [(x[i], actions[i], log_probs[i], advantages[i], returns[i]) for i in order]


def ppo_loss(agent, minibatch, clip=0.2):
    x, actions, old_log_probs, advantages, returns = minibatch
    ratio = (agent.dist(x).log_prob(actions).sum(1) - old_log_probs).exp()
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()
    return policy_loss + 0.5 * (agent.critic(x).squeeze(1) - returns).pow(2).mean()


def evaluate(agent, seed=0):
    """Return of one deterministic episode (the actor's mean) on the evaluation env."""
    obs, _ = eval_env.reset(seed=seed)
    total, done = 0.0, False
    with torch.no_grad():
        while not done:
            action = agent.actor_mean(torch.as_tensor(obs, dtype=torch.float32)).clamp(-2.0, 2.0)
            obs, reward, terminated, truncated, _ = eval_env.step(action.numpy())
            total, done = total + float(reward), terminated or truncated
    return total


agent = Agent()
optimizer = ExploRLerOptimizer(
    torch.optim.Adam(agent.parameters(), lr=3e-4, eps=1e-5),
    explore_params=[*agent.actor_mean.parameters(), agent.actor_logstd],  # search the actor only
    max_anchors=10,                                                       # the last 10 anchors are searched
)  # fmt: skip
num_iterations, update_epochs, explore_every = args.iterations, 10, args.explore_every
for iteration in range(num_iterations):
    minibatches = collect_rollout(agent)
    for _epoch in range(update_epochs):
        for minibatch in minibatches:
            loss = ppo_loss(agent, minibatch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # exactly Adam
        optimizer.record()  # one anchor per epoch
    if (iteration + 1) % explore_every == 0:
        result = optimizer.explore(lambda: evaluate(agent))  # each candidate is loaded into agent first
        print(f"iteration {iteration + 1}: best {result.best_score:.1f}, committed: {result.committed}")
print(f"after {num_iterations * 1024:,} env steps: deterministic return {evaluate(agent, seed=1):.1f}")
