"""Parameter helpers shared by the explorer, the TRPO step and the landscape: flatten, split, check.

A set of parameters is searched as one flat vector of ``P`` values; these helpers turn the tensors
into that vector (:func:`flatten_params`), rows of such vectors back into per-tensor pieces
(:func:`split_flat`), and check what a caller passed as parameters (:func:`searched_params`). A
complex tensor is searched through its real view (:func:`real_view`), as torch's optimizers update it;
:func:`searchable` says which tensors a search can move.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["flatten_params", "real_view", "searchable", "searched_params", "split_flat"]


def flatten_params(
    params: Iterable[Tensor], device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """The parameters' values, detached and concatenated into one new 1-D tensor (``P`` values).

    A complex tensor contributes its real view (:func:`torch.view_as_real`): the real and imaginary
    part of each element, in turn, as two real values.

    Args:
        params: the tensors, in order.
        device: where the result lives (default: the parameters').
        dtype: its dtype (default: the parameters'; a complex tensor's real dtype).

    Returns:
        The flat copy.

    Example:
        >>> flatten_params([torch.ones(2, 2), torch.zeros(1)], dtype=torch.float64).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0]
    """
    return torch.cat([real_view(p.detach()).reshape(-1).to(device, dtype) for p in params])


def real_view(tensor: Tensor) -> Tensor:
    """``tensor`` itself if it is real, else its real view: shape ``(*shape, 2)``, sharing storage.

    torch's optimizers update a complex parameter as this view too, so the search sees the same
    Euclidean geometry as the optimizer that trained it.
    """
    return torch.view_as_real(tensor.resolve_conj()) if tensor.is_complex() else tensor


def searchable(tensor: Tensor) -> bool:
    """Whether the search can move ``tensor``: dense, floating point or complex (as its real view)."""
    return tensor.layout == torch.strided and (tensor.is_floating_point() or tensor.is_complex())


def split_flat(flat_rows: Tensor, shapes: Sequence[Sequence[int]]) -> list[Tensor]:
    """Split ``(N, P)`` rows of flat parameters into one ``(N, *shape)`` tensor per shape.

    The inverse of :func:`flatten_params`, row by row.

    Args:
        flat_rows: ``N`` flat parameter vectors.
        shapes: the parameters' shapes, in order (their sizes add up to ``P``).

    Returns:
        The pieces, views of ``flat_rows`` where possible.

    Example:
        >>> rows = torch.arange(10.0).reshape(2, 5)
        >>> [tuple(piece.shape) for piece in split_flat(rows, [(2, 2), (1,)])]
        [(2, 2, 2), (2, 1)]
    """
    pieces, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(flat_rows[:, start : start + size].reshape(flat_rows.shape[0], *shape))
        start += size
    return pieces


def searched_params(params: Any, name: str = "params") -> list[Tensor]:
    """``params`` as a list of distinct searchable tensors (floating point or complex), or an error
    that says what to pass instead.

    Args:
        params: what the caller passed: an iterable of tensors (or one tensor).
        name: the argument's name in the caller's signature, for the messages.

    Returns:
        The tensors, in order, each once.

    Example:
        >>> weight = torch.nn.Parameter(torch.zeros(2))
        >>> len(searched_params([weight, weight]))
        1
    """
    if isinstance(params, torch.nn.Module):
        raise TypeError(
            f"{name} is a {type(params).__name__} module, not its parameters; pass "
            "module.parameters() (or a list such as [*actor.parameters(), log_std])"
        )
    if isinstance(params, Tensor):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError(
            f"{name} must be an iterable of Parameters (e.g. actor.parameters()), got a "
            f"{type(params).__name__}"
        ) from None
    if not params:
        raise ValueError(f"{name} is empty; pass the parameters to search, e.g. actor.parameters()")
    unique: list[Tensor] = []
    for index, p in enumerate(params):
        if isinstance(p, torch.nn.Module):
            raise TypeError(
                f"{name}[{index}] is a {type(p).__name__} module; pass its parameters instead "
                "(e.g. [*module.parameters()])"
            )
        if not isinstance(p, Tensor):
            raise ValueError(f"{name}[{index}] is a {type(p).__name__}, not a Parameter")
        if not searchable(p):
            raise ValueError(
                f"{name}[{index}] has dtype {p.dtype} and layout {p.layout}; only dense floating-point "
                f"and complex tensors can be searched: leave it out of {name}"
            )
        if all(p is not q for q in unique):
            unique.append(p)
    return unique
