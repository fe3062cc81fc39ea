"""``grad_norm``: the p-norm of every parameter's gradient and of all of them together, for logging."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def grad_norm(
    module: nn.Module, norm_type: float | int | str, group_separator: str = "/"
) -> dict[str, Tensor]:
    """``{"grad_{p}_norm{sep}{name}": norm}`` for each parameter with a gradient, plus ``grad_{p}_norm_total``.

    ``norm_type`` is a positive number or ``"inf"``; the total is the norm of all gradients taken as one
    vector. Call it from ``on_before_optimizer_step`` and pass the result to ``self.log_dict``.
    """
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"Expected norm_type to be a positive number or 'inf', received {norm_type!r}.")
    norms = {
        f"grad_{p}_norm{group_separator}{name}": param.grad.detach().norm(p)
        for name, param in module.named_parameters()
        if param.grad is not None
    }
    if norms:
        norms[f"grad_{p}_norm_total"] = torch.stack([n.to(torch.float32) for n in norms.values()]).norm(p)
    return norms


__all__ = ["grad_norm"]
