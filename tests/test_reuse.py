"""Candidate rollouts that train (issue 14, part 2).

The library side: ``PolicyEvaluator`` scores with the stochastic policy and keeps every episode's
transitions exactly as the env produced them, with the behaviour log-probabilities;
``RewardNormalizer`` scales rewards as the training env does. The script side: the PPO script's
``reused_batch`` (GAE and importance weights over reused episodes) and the budget accounting of
``--reuse-candidate-rollouts`` in tiny runs.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

gym = pytest.importorskip("gymnasium")
pytest.importorskip("mujoco")

from explorler_optim.explorer import ExploreResult  # noqa: E402
from explorler_optim.rl import Episode, ObsNormalizer, PolicyEvaluator, RewardNormalizer  # noqa: E402
from explorler_optim.rl.reuse import reused_batch  # noqa: E402
from tests.conftest import HANG_GUARD_S  # noqa: E402
from tests.test_ppo_script import ROOT, TINY, load_script_module, reference_gae  # noqa: E402, F401

# reuse of candidate episodes is a research option: the benchmarks' variant of the PPO script has it
SCRIPT = ROOT / "single_file_baselines" / "ppo_continuous_action_research.py"

CAP = 40  # steps per episode at most


class CountingEnv(gym.Wrapper):
    """Counts every step taken, across all instances (the evaluator builds one env per pair)."""

    steps = 0

    def step(self, action):
        CountingEnv.steps += 1
        return super().step(action)


def make_counting_env():
    return CountingEnv(gym.make("Hopper-v5", max_episode_steps=CAP))


def small_policy(seed=0):
    torch.manual_seed(seed)
    mean = nn.Sequential(nn.Linear(11, 16), nn.Tanh(), nn.Linear(16, 3))
    log_std = nn.Parameter(torch.full((1, 3), -0.5))
    return mean, log_std


def perturbed(params, n, scale=0.05, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.stack([p.detach()] + [p.detach() + scale * torch.randn(p.shape, generator=generator)] * (n - 1))
        for p in params
    ]


def test_kept_transitions_are_exactly_the_envs_with_behaviour_log_probs():
    mean, log_std = small_policy()
    normalizer = ObsNormalizer(np.zeros(11), np.full(11, 4.0))
    evaluator = PolicyEvaluator(
        mean,
        make_counting_env,
        episodes=2,
        obs_normalizer=normalizer,
        seed=11,
        log_std=log_std,
        keep_transitions=True,
    )
    params = [*mean.parameters(), log_std]
    candidates = perturbed(params, 3)
    candidates[-1][2] -= 0.7  # candidate 2 has its own, narrower Gaussian
    CountingEnv.steps = 0
    scores = evaluator.evaluate_many(params, candidates)
    episodes = evaluator.last_transitions

    # every env step is in exactly one kept episode, and counted once
    assert len(episodes) == 3 * 2
    assert sum(len(e) for e in episodes) == evaluator.last_env_steps == CountingEnv.steps
    assert sorted((e.candidate, e.episode) for e in episodes) == [(c, k) for c in range(3) for k in range(2)]
    for row in range(3):
        assert scores[row].item() == pytest.approx(
            np.mean([e.rewards.sum() for e in evaluator.episodes_of(row)])
        )

    names = [name for name, _ in mean.named_parameters()]
    for episode in episodes:
        row = episode.candidate
        weights = {name: candidates[i][row] for i, name in enumerate(names)}
        # the behaviour log-probabilities: the Gaussian of the candidate that played the episode
        means = torch.func.functional_call(mean, weights, (torch.from_numpy(episode.observations),))
        std = candidates[-1][row].exp().expand_as(means)
        expected = torch.distributions.Normal(means, std).log_prob(torch.from_numpy(episode.actions)).sum(-1)
        assert torch.allclose(torch.from_numpy(episode.log_probs), expected, atol=1e-5)
        # replayed in a fresh env with the same reset seed: the same observations and rewards
        env = gym.make("Hopper-v5", max_episode_steps=CAP)
        obs, _ = env.reset(seed=11 + episode.episode)
        rewards = []
        for t, action in enumerate(episode.actions):
            np.testing.assert_array_equal(episode.observations[t], normalizer(obs[None])[0])
            obs, reward, terminated, truncated, _ = env.step(np.clip(action, -1.0, 1.0))
            rewards.append(reward)
        np.testing.assert_array_equal(episode.rewards, np.array(rewards))
        assert (episode.terminated, episode.truncated) == (terminated, truncated)

    # episode k of every candidate draws the same noise (common random numbers)
    first_noise = []
    for row in range(3):
        episode = [e for e in evaluator.episodes_of(row) if e.episode == 0][0]
        weights = {name: candidates[i][row] for i, name in enumerate(names)}
        means = torch.func.functional_call(mean, weights, (torch.from_numpy(episode.observations[:1]),))
        first_noise.append((torch.from_numpy(episode.actions[:1]) - means) / candidates[-1][row].exp())
    assert torch.allclose(first_noise[0], first_noise[1], atol=1e-5)
    assert torch.allclose(first_noise[0], first_noise[2], atol=1e-5)
    evaluator.close()


def test_deterministic_scoring_keeps_transitions_without_log_probs():
    mean, _ = small_policy()
    evaluator = PolicyEvaluator(mean, make_counting_env, episodes=1, seed=3, keep_transitions=True)
    score = evaluator()
    (episode,) = evaluator.last_transitions
    assert episode.log_probs is None and episode.rewards.sum() == pytest.approx(score)
    with torch.no_grad():
        np.testing.assert_allclose(
            episode.actions, mean(torch.from_numpy(episode.observations)).numpy(), atol=1e-6
        )
    plain = PolicyEvaluator(mean, make_counting_env, episodes=1, seed=3)
    assert plain() == score and plain.last_transitions == []  # nothing kept unless asked
    evaluator.close()
    plain.close()


def test_stochastic_scoring_needs_a_box_action_space():
    policy = nn.Linear(4, 2)
    evaluator = PolicyEvaluator(
        policy, functools.partial(gym.make, "CartPole-v1"), episodes=1, log_std=torch.zeros(1, 2)
    )
    with pytest.raises(ValueError, match="continuous"):
        evaluator()
    evaluator.close()


def test_reward_normalizer_scales_as_the_training_env():
    env = gym.wrappers.NormalizeReward(gym.make("Hopper-v5"), gamma=0.99)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(300):  # running statistics of the discounted return
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    scale = RewardNormalizer.from_env(gym.wrappers.ClipAction(env), clip=None)
    env.update_running_mean = False  # frozen from here: the two must agree exactly
    raw = gym.make("Hopper-v5")
    env.reset(seed=5)
    raw.reset(seed=5)
    for _ in range(30):
        action = env.action_space.sample()
        scaled = env.step(action)[1]
        assert scale([raw.step(action)[1]])[0] == scaled
    with pytest.raises(ValueError, match="NormalizeReward"):
        RewardNormalizer.from_env(raw)
    assert RewardNormalizer(var=3.0, clip=1.0, epsilon=1.0)([-10.0]).tolist() == [-1.0]


@pytest.mark.parametrize(
    ("committed", "incumbent", "expected"),
    [(True, 2.0, 2), (False, 2.0, 0), (True, None, 1), (False, None, None)],
)
def test_kept_row_is_the_policy_training_resumes_from(committed, incumbent, expected):
    result = ExploreResult(
        scores=torch.tensor([1.0, 3.0]),
        incumbent_score=incumbent,
        best_index=1,
        best_score=3.0,
        committed=committed,
        num_candidates=2,
        distance=0.0,
        seconds=0.0,
        search_seconds=0.0,
    )
    assert result.kept_row == expected


# ---------------------------------------------------------------------------------------------
# the PPO script


def fake_episode(candidate, steps, generator, terminated=True):
    return Episode(
        observations=torch.randn(steps, 3, generator=generator).numpy(),
        actions=torch.randn(steps, 2, generator=generator).numpy(),
        log_probs=torch.randn(steps, generator=generator).numpy(),
        rewards=torch.randn(steps, generator=generator).double().numpy() * 5,
        terminated=terminated,
        truncated=not terminated,
        candidate=candidate,
    )


def reference_off_policy_gae(rewards, values, traces, gamma, lam):
    """A_t = sum_k (gamma lam)^k (c_{t+1} ... c_{t+k}) delta_{t+k}, in one whole episode, no bootstrap."""
    n = len(rewards)
    deltas = [rewards[k] + gamma * (values[k + 1] if k + 1 < n else 0.0) - values[k] for k in range(n)]
    out = []
    for t in range(n):
        total, factor = 0.0, 1.0
        for k in range(t, n):
            if k > t:
                factor *= gamma * lam * traces[k]
            total += factor * deltas[k]
        out.append(total)
    return out


@pytest.mark.parametrize("mode", ["winner", "all"])
def test_reused_batch_gae_log_probs_and_weights(mode):
    module = load_script_module()
    torch.manual_seed(0)
    agent = module.Agent(3, 2)
    generator = torch.Generator().manual_seed(4)
    kept, other = 1, 2
    episodes = [
        fake_episode(kept, 7, generator),
        fake_episode(other, 5, generator, terminated=False),
        fake_episode(kept, 4, generator),
    ]
    # the other candidate's behaviour log-probs: above and below the current policy's
    with torch.no_grad():
        _, current, _, _ = agent.get_action_and_value(
            torch.from_numpy(episodes[1].observations), torch.from_numpy(episodes[1].actions)
        )
    episodes[1].log_probs = (current + torch.tensor([0.5, -0.5, 0.3, -1.0, 0.2])).numpy()
    args = types.SimpleNamespace(gamma=0.9, gae_lambda=0.8, reuse_candidate_rollouts=mode)
    scale = RewardNormalizer(var=4.0, clip=10.0, epsilon=0.0)

    def log_prob_and_value(obs, actions):
        return agent.get_action_and_value(obs, actions)[1::2]

    settings = dict(everyone=mode == "all", gamma=args.gamma, gae_lambda=args.gae_lambda)
    batch = reused_batch(episodes, kept, scale, log_prob_and_value, **settings)

    used = [e for e in episodes if mode == "all" or e.candidate == kept]
    assert len(batch["obs"]) == sum(len(e) for e in used)
    start = 0
    for episode in used:
        rows = slice(start, start + len(episode))
        start += len(episode)
        obs, actions = torch.from_numpy(episode.observations), torch.from_numpy(episode.actions)
        with torch.no_grad():
            _, logprob, _, value = agent.get_action_and_value(obs, actions)
        torch.testing.assert_close(batch["obs"][rows], obs)
        torch.testing.assert_close(batch["actions"][rows], actions)
        torch.testing.assert_close(
            batch["logprobs"][rows], logprob
        )  # the current policy's: PPO's old log-prob
        torch.testing.assert_close(batch["values"][rows], value.view(-1))
        rewards = (episode.rewards / 2.0).tolist()  # scaled by sqrt(var) = 2
        values = value.view(-1).tolist()
        assert batch["on_policy"][rows].tolist() == [episode.candidate == kept] * len(episode)
        if episode.candidate == kept:  # on-policy: plain GAE over a whole episode, not bootstrapped
            assert batch["weights"][rows].tolist() == [1.0] * len(episode)
            starts = [1.0] + [0.0] * (len(episode) - 1)
            expected = reference_gae(rewards, values, starts, 0.0, 1.0, args.gamma, args.gae_lambda)
        else:  # importance-weighted: truncated ratios weight the step and cut the trace
            ratio = (logprob - torch.from_numpy(episode.log_probs)).exp()
            traces = ratio.clamp(max=1.0)
            assert 0 < traces.min() < 1 and traces.max() == 1.0  # both sides of the truncation occur
            torch.testing.assert_close(batch["weights"][rows], traces)
            expected = reference_off_policy_gae(rewards, values, traces.tolist(), args.gamma, args.gae_lambda)
        assert batch["advantages"][rows].tolist() == pytest.approx(expected, abs=1e-5)
        # the value target is V-trace's: v_s - V(s) = rho_s delta_s + gamma lam c_s (v_{s+1} - V(s+1))
        weights = batch["weights"][rows].tolist()
        targets, correction = [], 0.0
        for t in reversed(range(len(episode))):
            delta = rewards[t] + args.gamma * (values[t + 1] if t + 1 < len(episode) else 0.0) - values[t]
            correction = weights[t] * (delta + args.gamma * args.gae_lambda * correction)
            targets.insert(0, values[t] + correction)
        assert batch["returns"][rows].tolist() == pytest.approx(targets, abs=1e-5)
        if episode.candidate == kept:  # on-policy: GAE's own target, bit for bit
            assert torch.equal(batch["returns"][rows], batch["advantages"][rows] + value.view(-1))
        else:  # not the behaviour action's value: the target differs where the ratio was cut
            assert not torch.allclose(batch["returns"][rows], batch["advantages"][rows] + value.view(-1))
    nothing_kept = reused_batch(episodes, None, scale, log_prob_and_value, **settings)
    if mode == "winner":  # the kept policy was not scored: nothing is on-policy
        assert nothing_kept is None
    else:
        assert len(nothing_kept["obs"]) == 16 and nothing_kept["weights"].max() <= 1.0


NUM_STEPS = 64  # TINY's --num-steps


@pytest.mark.parametrize("mode", ["winner", "all"])
def test_every_env_step_is_counted_once(mode, script):
    run = script.train(f"reuse-{mode}", "--total-timesteps", 1024, "--reuse-candidate-rollouts", mode)
    reused = run.values("explorler/reused_steps")
    on_policy = run.values("explorler/reused_on_policy_steps")  # the kept policy's: they replace fresh steps
    searches = run.values("explorler/eval_env_steps")  # running total of the candidates' env steps
    per_search = np.diff([0.0, *searches])
    assert len(reused) == len(per_search) > 0
    assert sum(reused) > 0
    assert all(k <= r <= s for k, r, s in zip(on_policy, reused, per_search, strict=True))
    if mode == "all":
        assert reused == per_search.tolist()  # every candidate episode trains
    else:
        assert reused == on_policy
    # training env steps: each iteration collects num_steps minus the kept policy's reused steps
    iteration_ends = run.steps("losses/value_loss")  # global_step at the end of every iteration
    search_steps = run.steps("explorler/reused_steps")
    fresh = np.diff([0, *iteration_ends])
    pending, searches_seen = 0, 0
    for end, collected in zip(iteration_ends, fresh, strict=True):
        assert collected == max(NUM_STEPS - pending, 0)
        pending = 0
        if searches_seen < len(search_steps) and search_steps[searches_seen] == end:
            pending = on_policy[searches_seen]  # the search after this iteration: used by the next one
            searches_seen += 1
    assert searches_seen == len(search_steps)
    global_step = iteration_ends[-1]
    # the budget counts each env step once: training steps plus candidate steps
    assert run.values("charts/total_env_steps")[-1] == global_step + searches[-1]
    assert run.values("charts/total_env_steps")[-1] <= 1024 + math.floor(0.01 * 1024)


def test_reuse_needs_explorler(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--no-explorler", "--reuse-candidate-rollouts", "winner"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert proc.returncode != 0 and "needs ExploRLer" in proc.stderr
