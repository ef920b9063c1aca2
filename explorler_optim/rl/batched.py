"""One forward pass for many candidate weight sets: obs ``(n, S, d)`` -> actions ``(n, S, a)``.

Candidate ``i``'s parameters are row ``i`` of stacked ``(n, *shape)`` tensors; nothing is copied
into the module. ``nn.Sequential`` stacks of ``nn.Linear`` and elementwise activations use
``torch.baddbmm``; any other module uses ``torch.func.functional_call`` under ``torch.vmap``.

>>> policy = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
>>> stacked = {name: torch.stack([p.detach()] * 4) for name, p in policy.named_parameters()}
>>> BatchedPolicy(policy)(stacked, torch.zeros(4, 5, 3)).shape
torch.Size([4, 5, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ActivationStep", "BatchedPolicy", "LinearStep", "sequential_plan"]

ELEMENTWISE_ACTIVATIONS = (
    nn.Tanh,
    nn.ReLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.Softsign,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.ReLU6,
    nn.SELU,
    nn.CELU,
    nn.Tanhshrink,
)


@dataclass(frozen=True)
class LinearStep:
    """An ``nn.Linear`` layer, named by its parameters in the policy's ``named_parameters()``."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class ActivationStep:
    """An elementwise activation module, applied as is."""

    module: nn.Module


PlanStep = LinearStep | ActivationStep


def sequential_plan(policy: nn.Module) -> list[PlanStep] | None:
    """The layers of a buffer-free ``Sequential(Linear/activation, ...)``; None for anything else."""
    if not isinstance(policy, nn.Sequential):
        return None
    if any(True for _ in policy.buffers()):
        return None
    plan: list[PlanStep] = []
    for name, module in policy.named_children():
        if type(module) is nn.Linear:
            bias = f"{name}.bias" if module.bias is not None else None
            plan.append(LinearStep(f"{name}.weight", bias))
        elif type(module) in ELEMENTWISE_ACTIVATIONS:
            plan.append(ActivationStep(module))
        else:
            return None
    return plan


class BatchedPolicy:
    """Evaluates a policy for n candidates at once: obs (n, S, d) -> actions (n, S, a).

    ``stacked`` maps parameter names to (n, *shape) float32 tensors; every other parameter and
    buffer of the module keeps its current value.

    Args:
        policy: the policy module (e.g. the actor's mean network).
        fast: ``None`` picks the ``baddbmm`` path when the policy is a ``Sequential`` of
            ``Linear`` layers and activations, ``False`` forces ``torch.func.vmap``, ``True``
            requires ``baddbmm``.

    Raises:
        ValueError: ``fast=True`` for a policy the ``baddbmm`` path cannot run.
    """

    def __init__(self, policy: nn.Module, fast: bool | None = None):
        self.policy = policy
        plan = sequential_plan(policy)
        self.plan = plan if (fast is None or fast) else None
        if fast and plan is None:
            raise ValueError("fast path requested but policy is not Sequential(Linear/activation)")

    def __call__(self, stacked: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        if self.plan is not None:
            return self._baddbmm_forward(self.plan, stacked, obs)
        return self._vmap_forward(stacked, obs)

    def _baddbmm_forward(
        self, plan: list[PlanStep], stacked: dict[str, torch.Tensor], obs: torch.Tensor
    ) -> torch.Tensor:
        x = obs
        current = dict(self.policy.named_parameters())
        for step in plan:
            if isinstance(step, ActivationStep):
                x = step.module(x)
            elif step.weight in stacked:
                x = _stacked_linear(x, stacked, current, step)
            else:
                x = _shared_linear(x, stacked, current, step)
        return x

    def _vmap_forward(self, stacked: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        policy = self.policy

        def one_candidate(params: dict[str, torch.Tensor], candidate_obs: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(policy, params, (candidate_obs,), strict=False)

        return torch.vmap(one_candidate, in_dims=(0, 0))(stacked, obs)


def _stacked_linear(
    x: torch.Tensor,
    stacked: dict[str, torch.Tensor],
    current: dict[str, nn.Parameter],
    step: LinearStep,
) -> torch.Tensor:
    """A layer whose weight differs per candidate; its bias may be per candidate or shared."""
    weight_t = stacked[step.weight].transpose(1, 2)
    bias: torch.Tensor | None = None
    if step.bias is not None:
        bias = stacked.get(step.bias, current[step.bias])
    if bias is None:
        return torch.bmm(x, weight_t)
    if bias.dim() == 2:  # (n, out): one bias per candidate
        return torch.baddbmm(bias.unsqueeze(1), x, weight_t)
    return torch.baddbmm(bias.view(1, 1, -1), x, weight_t)


def _shared_linear(
    x: torch.Tensor,
    stacked: dict[str, torch.Tensor],
    current: dict[str, nn.Parameter],
    step: LinearStep,
) -> torch.Tensor:
    """A layer whose weight is shared by every candidate; its bias may still be per candidate."""
    x = torch.matmul(x, current[step.weight].t())
    if step.bias is not None:
        bias = stacked.get(step.bias, current[step.bias])
        x = x + (bias.unsqueeze(1) if bias.dim() == 2 else bias)
    return x
