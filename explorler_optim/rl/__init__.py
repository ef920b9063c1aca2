"""Fast, fair scoring of candidate policies for ExploRLer.

``PolicyEvaluator`` implements both evaluation protocols of ``ExploRLerOptimizer.explore()``:

* ``ev()`` scores the policy's parameters as they are loaded now;
* ``ev.evaluate_many(params, candidates)`` scores N candidate parameter sets at once.

Every call runs all (candidate, episode) pairs together: one gymnasium env per pair (envs are
built once and kept in a pool), one batched forward pass per step for every live candidate
(stacked weights, no copying into the module), and only live envs are stepped. With
``workers > 1`` the pairs are spread over persistent worker processes; with ``backend="ray"``
over Ray actors. Episode ``k`` of every candidate resets with seed ``seed + k`` (common random
numbers), so candidates are compared on the same starts.

With ``racing=True`` candidates are raced (successive halving): every candidate plays one
episode, the best ``1/racing_eta`` play another, and so on, until the survivors have played
``episodes`` episodes (or one survivor is left), within ``racing_budget`` (default half) of the
exhaustive cost. The score of a candidate eliminated early is its mean return over the episodes
it played, capped just below the best finalist's score, so the winner (the argmax) is always a
candidate that played the most episodes. See ``racing_schedule`` and ``last_episode_counts``.

One idea per module:

==================  ==========================================================================
``normalize``       ``ObsNormalizer``, ``RewardNormalizer``: frozen statistics of the training env
``batched``         ``BatchedPolicy``: one forward pass for N stacked candidate weight sets
``rollout``         ``RolloutEngine``: plays (candidate, episode) pairs; ``Episode``: one kept
``pools``           ``ProcessPool`` / ``RayPool``: persistent engines in workers or Ray actors
``racing``          ``racing_schedule`` and ``race``: successive halving under a budget
``evaluator``       ``PolicyEvaluator``: the public entry point tying the above together
``search_step``     ``SearchStep``: one search between RL iterations, its budget rule and logging
``run_evaluators``  ``RunEvaluators``: a training run's held-out, candidate, paper and audit evaluators
``surrogate``       ``SurrogateEvaluator``: scores candidates on the update's batch, zero env steps
``replay``          ``ReplayBuffer``: an off-policy loop's transitions, saved whole by a checkpoint
``critic``          ``CriticEvaluator``: scores candidates by a Q-critic on replay states, zero env steps
==================  ==========================================================================

Importing this package imports nothing heavy: its names import their module when first used
(torch and numpy); gymnasium is imported when envs are stepped, Ray only when ``backend="ray"``
is used. ``args`` (``ExploRLerArgs``, the scripts' flags) imports neither torch nor gymnasium.
"""

from typing import TYPE_CHECKING

from explorler_optim._lazy import lazy_exports

if TYPE_CHECKING:  # the names below import lazily (PEP 562)
    from explorler_optim.rl.batched import BatchedPolicy
    from explorler_optim.rl.critic import CriticEvaluator
    from explorler_optim.rl.evaluator import PolicyEvaluator
    from explorler_optim.rl.normalize import ObsNormalizer, RewardNormalizer
    from explorler_optim.rl.racing import racing_schedule
    from explorler_optim.rl.replay import ReplayBuffer
    from explorler_optim.rl.rollout import Episode
    from explorler_optim.rl.run_evaluators import RunEvaluators
    from explorler_optim.rl.search_step import CandidateEvaluator, SearchStep
    from explorler_optim.rl.surrogate import SurrogateBatch, SurrogateEvaluator

__all__ = [
    "CandidateEvaluator",
    "BatchedPolicy",
    "CriticEvaluator",
    "Episode",
    "ObsNormalizer",
    "PolicyEvaluator",
    "ReplayBuffer",
    "RewardNormalizer",
    "RunEvaluators",
    "SearchStep",
    "SurrogateBatch",
    "SurrogateEvaluator",
    "racing_schedule",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BatchedPolicy": "batched",
        "CandidateEvaluator": "search_step",
        "CriticEvaluator": "critic",
        "Episode": "rollout",
        "ObsNormalizer": "normalize",
        "PolicyEvaluator": "evaluator",
        "ReplayBuffer": "replay",
        "RewardNormalizer": "normalize",
        "RunEvaluators": "run_evaluators",
        "SearchStep": "search_step",
        "SurrogateBatch": "surrogate",
        "SurrogateEvaluator": "surrogate",
        "racing_schedule": "racing",
    },
)
