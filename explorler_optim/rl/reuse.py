"""Candidate rollouts that train: a search's episodes as extra rows of the next PPO batch.

``--reuse-candidate-rollouts`` in the PPO script. The episodes of the policy that training resumes
from (``kept_row``) are on-policy: they take the place of as many training env steps. With
``everyone=True`` the other candidates' episodes join on top, each step weighted by its truncated
importance ratio ``min(1, pi(a|s) / mu(a|s))`` against the candidate that played it (V-trace's
``rho_t`` and ``c_t``): the weight scales the step's policy loss, cuts the GAE trace and makes the
value target V-trace's ``V(s) + c_s * A_s``.

:func:`compute_gae` is the scripts' GAE(lambda) (CleanRL's, with an optional trace cut),
:func:`reused_batch` turns a search's episodes into batch rows and :func:`join_reused` appends
them to the fresh batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["compute_gae", "join_reused", "reused_batch", "reused_counts"]

BATCH_KEYS = ("obs", "logprobs", "actions", "advantages", "returns", "values", "weights")


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    dones: Tensor,
    next_value: Tensor,
    next_done: Tensor,
    gamma: float,
    gae_lambda: float,
    traces: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GAE(lambda) over a ``(num_steps, num_envs)`` rollout; returns ``(advantages, returns)``.

    ``dones[t]`` says the obs at step t starts a new episode (the previous step ended one): with
    same-step autoreset that obs is already the reset obs, so neither the value nor the lambda
    trace crosses the boundary. As in CleanRL, done = terminated | truncated (no bootstrap on
    truncation either).

    Args:
        rewards, values, dones: ``(num_steps, num_envs)`` tensors of the rollout.
        next_value: the value of the observation after the last step, ``(1, num_envs)``.
        next_done: whether that observation starts a new episode, ``(num_envs,)``.
        gamma: the discount factor.
        gae_lambda: GAE's lambda.
        traces: off-policy steps only: ``traces[t]`` cuts the lambda trace into step t by a
            truncated importance ratio, as V-trace's ``c_t``; ``None``: no cut.

    Returns:
        The advantages and the value targets (advantages + values), shaped like ``rewards``.

    Example:
        >>> ones = torch.ones(3, 1)
        >>> adv, ret = compute_gae(ones, 0 * ones, 0 * ones, torch.zeros(1, 1), torch.ones(1), 1.0, 1.0)
        >>> adv.flatten().tolist()  # undiscounted returns to the episode's end
        [3.0, 2.0, 1.0]
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam: Any = 0
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


def reused_batch(
    episodes: Sequence[Any],
    kept_row: int | None,
    reward_normalizer: Callable[[Any], Any],
    log_prob_and_value: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    *,
    everyone: bool,
    gamma: float,
    gae_lambda: float,
    device: torch.device | str | None = None,
) -> dict[str, Tensor] | None:
    """A search's episodes as extra rows of the next iteration's batch.

    Rewards are scaled as the training env scales them now; episodes are whole, so none is
    bootstrapped.

    Args:
        episodes: the candidate evaluator's ``last_transitions`` (``Episode`` objects).
        kept_row: the row of the policy that training resumes from (``ExploreResult.kept_row``).
        reward_normalizer: the training env's reward scaling (a ``RewardNormalizer``).
        log_prob_and_value: ``(observations, actions) -> (log_probs, values)`` of the current
            agent (the PPO batch's old log-probabilities and values).
        everyone: also every other candidate's episodes, importance-weighted; ``False``: only
            the kept policy's.
        gamma: the discount factor.
        gae_lambda: GAE's lambda.
        device: where the rows go.

    Returns:
        The rows under ``BATCH_KEYS`` plus ``"on_policy"`` (a bool per step), or ``None`` when no
        episode is used.

    Example:
        >>> reused_batch([], 0, float, None, everyone=False, gamma=0.99, gae_lambda=0.95) is None
        True
    """
    columns: dict[str, list[Tensor]] = {}
    for episode in episodes:
        if len(episode) == 0 or (episode.candidate != kept_row and not everyone):
            continue
        steps = len(episode)
        episode_obs = torch.as_tensor(episode.observations, device=device)
        episode_actions = torch.as_tensor(episode.actions, device=device)
        scaled = torch.as_tensor(reward_normalizer(episode.rewards), dtype=torch.float32, device=device)
        with torch.no_grad():
            logprob, value = log_prob_and_value(episode_obs, episode_actions)
        if episode.candidate == kept_row:
            weight = torch.ones(steps, device=device)  # played by the current policy: on-policy
        else:
            behaviour = torch.as_tensor(episode.log_probs, device=device)
            weight = (logprob - behaviour).exp().clamp(max=1.0)
        advantage, _ = compute_gae(
            scaled[:, None],
            value.view(steps, 1),
            torch.zeros(steps, 1, device=device),
            next_value=torch.zeros(1, 1, device=device),
            next_done=torch.ones(1, device=device),
            gamma=gamma,
            gae_lambda=gae_lambda,
            traces=weight[:, None],
        )
        advantage = advantage.view(-1)
        row = {
            "obs": episode_obs,
            "actions": episode_actions,
            "logprobs": logprob,
            "advantages": advantage,
            # V-trace's target v_s = V(s) + c_s * A_s: A_s + V(s) would be the value of the
            # behaviour's action, not of the state under the current policy (c_s = 1 on-policy)
            "returns": value.view(-1) + weight * advantage,
            "values": value.view(-1),
            "weights": weight,
            "on_policy": torch.full((steps,), episode.candidate == kept_row, device=device),
        }
        for key, value_of_key in row.items():
            columns.setdefault(key, []).append(value_of_key)
    return {key: torch.cat(parts) for key, parts in columns.items()} or None


def join_reused(reused: dict[str, Tensor] | None, **batch: Tensor) -> tuple[Tensor, ...]:
    """The fresh batch's tensors with ``reused``'s rows appended, in ``BATCH_KEYS`` order.

    Args:
        reused: :func:`reused_batch`'s rows, or ``None`` (the batch as it is).
        **batch: the fresh batch's flat tensors under ``BATCH_KEYS``.

    Returns:
        ``(obs, logprobs, actions, advantages, returns, values, weights)``.

    Raises:
        ValueError: ``batch`` lacks one of ``BATCH_KEYS``.

    Example:
        >>> fresh = {key: torch.zeros(2) for key in BATCH_KEYS}
        >>> [len(column) for column in join_reused({key: torch.ones(3) for key in BATCH_KEYS}, **fresh)]
        [5, 5, 5, 5, 5, 5, 5]
    """
    missing = sorted(set(BATCH_KEYS) - set(batch))
    if missing:
        raise ValueError(f"join_reused: the batch lacks {missing}; pass every one of {BATCH_KEYS}")
    if reused is None:
        return tuple(batch[key] for key in BATCH_KEYS)
    return tuple(torch.cat([batch[key], reused[key]]) for key in BATCH_KEYS)


def reused_counts(reused: dict[str, Tensor] | None) -> dict[str, int]:
    """The ``explorler/*`` counts of :func:`reused_batch`'s rows: ``reused_steps`` (all of them) and
    ``reused_on_policy_steps`` (the kept policy's, which replace as many fresh env steps).

    Example:
        >>> reused_counts(None)
        {'reused_steps': 0, 'reused_on_policy_steps': 0}
    """
    if reused is None:
        return {"reused_steps": 0, "reused_on_policy_steps": 0}
    return {"reused_steps": len(reused["obs"]), "reused_on_policy_steps": int(reused["on_policy"].sum())}
