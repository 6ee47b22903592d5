"""Small torch helpers shared by the frozen wrappers."""
from __future__ import annotations

import torch


def apply_keeping_dtype(module: torch.nn.Module, fn, recurse: bool = True):
    """``module._apply(fn)`` that moves tensors between devices but never changes their dtype.

    ESPnet's trainer casts the whole model to ``--train_dtype`` (float32);
    a frozen LLM or encoder loaded in bf16/fp16 must stay so.  ``fn`` is
    probed on an empty tensor to learn the target device, so a 9B model is
    never materialised in float32, not even one tensor at a time.
    """

    def device_only(t: torch.Tensor) -> torch.Tensor:
        probe = fn(torch.empty(0, dtype=t.dtype, device=t.device))
        if probe.dtype == t.dtype:
            return fn(t)
        return t.to(device=probe.device)

    return torch.nn.Module._apply(module, device_only, recurse)
