"""TRPO's policy step as a ``torch.optim.Optimizer``: natural gradient, trust region, line search.

The TRPO script (``single_file_baselines/trpo_continuous_action.py``) steps its actor with
:class:`NaturalGradientOptimizer`; the script keeps TRPO's objective (``surrogate_and_kl``).
"""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from explorler_optim.params import flatten_params, split_flat

__all__ = ["NaturalGradientOptimizer", "conjugate_gradient", "flat_grad"]


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 15, residual_tol: float = 1e-10
) -> Tensor:
    """Approximately solve `A x = b` for a symmetric positive-definite A given as `matvec(v) = A v`.

    Starts from x = 0 and stops after ``iters`` iterations or once the squared residual norm drops
    below ``residual_tol``.

    Args:
        matvec: ``v -> A v``.
        b: the right-hand side (1-D).
        iters: most iterations.
        residual_tol: stop once ``|b - A x|^2`` is below it.

    Returns:
        ``x``.

    Example:
        >>> a = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> conjugate_gradient(lambda v: a @ v, torch.tensor([1.0, 2.0])).tolist()  # a^-1 b
        [0.09090909361839294, 0.6363636255264282]
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = r.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / torch.dot(p, ap)
        x += alpha * p
        r -= alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def flat_grad(
    output: Tensor, params: Sequence[Tensor], retain_graph: bool = False, create_graph: bool = False
) -> Tensor:
    """``d output / d params``, the parameters' gradients concatenated into one 1-D tensor.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> flat_grad((w**2).sum(), [w]).tolist()
        [2.0, 4.0]
    """
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


class NaturalGradientOptimizer(Optimizer):
    """TRPO's policy step as a torch optimizer: natural gradient, trust region, line search.

    `step(closure)` takes a closure that computes, at the parameters as they are when it is
    called, the pair `(surrogate, kl)`: the surrogate objective to MAXIMISE (e.g. the mean of
    advantage * probability ratio) and the mean KL(old || new) from the rollout policy, both
    differentiable scalars. The step
    1. takes g = d surrogate / d params;
    2. solves F s = g by conjugate gradient, where F v = d(d kl / d params . v) / d params
       + damping * v (Fisher-vector products by double backprop of the KL);
    3. scales the step to the trust region: full step = sqrt(2 max_kl / s.F s) * s;
    4. backtracks (step *= backtrack_coef, up to backtrack_iters tries) until the closure,
       called without grad, reports kl <= max_kl and a surrogate above the starting one;
       if no try passes, the parameters are restored.
    It returns (and keeps in `last_stats`) a dict: policy_objective (the surrogate after the step),
    improvement (its gain), kl (of the accepted step; 0 when rejected), line_search_success,
    backtracks (tries before acceptance) and step_size (the full step's scale).
    The optimizer keeps no state between steps. All parameter groups share the first group's
    settings.

    Args:
        params: the policy's parameters (or parameter groups).
        max_kl: the trust region's bound on the mean KL.
        damping: added to the Fisher-vector products.
        cg_iters: conjugate-gradient iterations.
        cg_residual_tol: conjugate gradient stops below this squared residual.
        backtrack_coef: the line search's shrink factor per try.
        backtrack_iters: line-search tries before the step is rejected.

    Raises:
        ValueError: a setting out of range (the message names the bounds).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> target = torch.tensor([1.0, -1.0])
        >>> def closure():  # surrogate to maximise, KL to the starting point
        ...     return -(w - target).square().sum(), 0.5 * w.square().sum()
        >>> stats = NaturalGradientOptimizer([w], max_kl=0.01).step(closure)
        >>> stats["line_search_success"], 0 < stats["kl"] <= 0.01, w.tolist() != [0.0, 0.0]
        (True, True, True)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iters: int = 15,
        cg_residual_tol: float = 1e-10,
        backtrack_coef: float = 0.8,
        backtrack_iters: int = 10,
    ) -> None:
        if max_kl <= 0 or damping < 0 or cg_iters < 1 or backtrack_iters < 1:
            raise ValueError(
                "NaturalGradientOptimizer: need max_kl > 0, damping >= 0, cg_iters >= 1, backtrack_iters >= 1"
            )
        if not 0 < backtrack_coef < 1:
            raise ValueError(
                f"NaturalGradientOptimizer: backtrack_coef must be in (0, 1), got {backtrack_coef!r}"
            )
        defaults = dict(
            max_kl=max_kl,
            damping=damping,
            cg_iters=cg_iters,
            cg_residual_tol=cg_residual_tol,
            backtrack_coef=backtrack_coef,
            backtrack_iters=backtrack_iters,
        )
        super().__init__(params, defaults)
        self.last_stats: dict[str, Any] = {}

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def fisher_vector_product(
        self, kl: Tensor, params: Sequence[Tensor] | None = None, damping: float | None = None
    ) -> Callable[[Tensor], Tensor]:
        """``v -> F v + damping * v``, F the Hessian of ``kl`` (the Fisher matrix at kl's minimum).

        Args:
            kl: the mean KL, differentiable (twice) in ``params``.
            params: default: the optimizer's parameters.
            damping: default: the group's.

        Returns:
            The product, a function of a 1-D tensor.
        """
        params = self._params() if params is None else params
        damping = self.param_groups[0]["damping"] if damping is None else damping
        grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

        def fvp(v: Tensor) -> Tensor:
            return flat_grad(torch.dot(grad_kl, v), params, retain_graph=True) + damping * v

        return fvp

    @torch.no_grad()
    def _set_flat(self, params: Sequence[Tensor], flat: Tensor) -> None:
        for p, value in zip(params, split_flat(flat.unsqueeze(0), [p.shape for p in params]), strict=True):
            p.copy_(value[0])

    def step(self, closure: Callable[[], Any] | None = None) -> dict[str, Any]:  # type: ignore[override]
        """One natural-gradient step with its line search; see the class.

        Args:
            closure: returns ``(surrogate, kl)`` at the parameters as they are.

        Returns:
            The step's statistics (also in ``last_stats``).

        Raises:
            ValueError: without a closure.
        """
        if closure is None:
            raise ValueError("NaturalGradientOptimizer.step needs a closure returning (surrogate, kl)")
        group = self.param_groups[0]
        max_kl = group["max_kl"]
        params = self._params()
        with torch.enable_grad():
            surrogate, kl = closure()
            g = flat_grad(surrogate, params, retain_graph=True)
            fvp = self.fisher_vector_product(kl, params, group["damping"])
            direction = conjugate_gradient(
                fvp, g, iters=group["cg_iters"], residual_tol=group["cg_residual_tol"]
            )
            curvature = torch.dot(direction, fvp(direction)).item()  # s.F s: the step's squared Fisher norm
        surrogate_before = surrogate.item()
        stats = {
            "policy_objective": surrogate_before,
            "improvement": 0.0,
            "kl": 0.0,
            "line_search_success": False,
            "backtracks": group["backtrack_iters"],
            "step_size": 0.0,
        }
        if not (math.isfinite(curvature) and curvature > 0):  # no usable direction (e.g. a zero gradient)
            self.last_stats = stats
            return stats
        step_size = math.sqrt(2.0 * max_kl / curvature)
        stats["step_size"] = step_size
        with torch.no_grad():
            old = flatten_params(params)
            coef = 1.0
            try:
                for tries in range(group["backtrack_iters"]):
                    self._set_flat(params, old + coef * step_size * direction)
                    new_surrogate, new_kl = closure()
                    new_surrogate, new_kl = float(new_surrogate), float(new_kl)
                    if new_kl <= max_kl and new_surrogate > surrogate_before:  # NaN never passes
                        stats.update(
                            policy_objective=new_surrogate,
                            improvement=new_surrogate - surrogate_before,
                            kl=new_kl,
                            line_search_success=True,
                            backtracks=tries,
                        )
                        break
                    coef *= group["backtrack_coef"]
                else:
                    self._set_flat(params, old)  # every try failed: keep the old policy
            except BaseException:  # a closure error or Ctrl-C mid-search: not an untested trial step
                self._set_flat(params, old)
                raise
        self.last_stats = stats
        return stats
