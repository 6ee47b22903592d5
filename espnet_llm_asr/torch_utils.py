"""Small torch helpers: dtypes of the frozen models, dtype-keeping moves, CPU float mode."""
from __future__ import annotations

import logging
from typing import Dict, Set, Tuple

import torch

DTYPES: Dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


#: CPU feature flags (Linux /proc/cpuinfo) of units that run bf16 products natively
BF16_CPU_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


def cpu_flags() -> Set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo``; empty where there is no such file."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_matmul_support() -> Tuple[bool, str]:
    """Whether bfloat16 matrix products are fast here, and why (the device or the CPU units).

    On a CUDA device: ``torch.cuda.is_bf16_supported()``.  On the CPU: AMX
    tiles or AVX512-BF16 (:data:`BF16_CPU_FLAGS`), with torch built with
    oneDNN, which runs bf16 products on those units; without them torch
    converts bf16 to float32 and back, and a product takes many times
    longer than in float32.
    """
    if torch.cuda.is_available():
        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {torch.cuda.get_device_name()} {'supports' if ok else 'lacks'} bf16"
    flags = cpu_flags()
    units = [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]
    if not torch.backends.mkldnn.is_available():
        return False, "this torch has no oneDNN (mkldnn) for bf16 products on the CPU"
    if units:
        return True, f"the CPU has {' and '.join(units)}"
    return False, "the CPU has neither AMX nor AVX512-BF16"


def resolve_dtype(name: str, option: str = "dtype") -> torch.dtype:
    """A dtype option (``float32`` | ``bfloat16`` | ``float16`` | ``auto``) -> ``torch.dtype``.

    ``auto``: bfloat16 where :func:`bf16_matmul_support` says bf16 products
    are fast, float32 otherwise; the choice and its reason are logged.
    ``option`` (e.g. ``llm_conf.dtype``) names the setting in messages.
    """
    if name == "auto":
        fast, why = bf16_matmul_support()
        chosen = "bfloat16" if fast else "float32"
        logging.info(f"{option}: auto -> {chosen} ({why})")
        return DTYPES[chosen]
    if name not in DTYPES:
        raise ValueError(f"{option}: unknown dtype {name!r}; choose one of {sorted(DTYPES) + ['auto']}")
    return DTYPES[name]


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


#: set to 1 to keep subnormal floats in CPU arithmetic (see :func:`flush_denormals`)
KEEP_DENORMALS_ENV = "ESPNET_LLM_ASR_KEEP_DENORMALS"


def flush_denormals() -> bool:
    """Treat subnormal floats (below ~1.2e-38) as zero in this process's CPU arithmetic.

    Training drives some activations and gradients into the subnormal range,
    where x86 CPUs compute many times slower (espnet_llm_asr/benchmark/README.md,
    "Subnormal floats"); values that small do not change a float32 training.

    Call it first thing in a program: the CPU mode is per thread, and torch's
    worker threads copy it from the thread that starts them, i.e. at the first
    parallel op.  ``ESPNET_LLM_ASR_KEEP_DENORMALS=1`` turns it off.  Returns
    whether flushing is on (False on CPUs without the mode, or when turned off).
    """
    import os

    if os.environ.get(KEEP_DENORMALS_ENV, "") not in ("", "0"):
        return False
    return bool(torch.set_flush_denormal(True))


def contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: the module's tensor inputs as contiguous blocks.

    An LLM's output head given ``logits_to_keep`` receives a strided slice
    (B, K, D) of the (B, L, D) hidden states.  On the CPU a bfloat16
    ``Linear`` runs such an input as a batched product that expands and
    copies the (V, D) weight once per row of the batch; a contiguous input
    runs as one (B*K, D) @ (D, V) product.  Register it on the head with
    ``head.register_forward_pre_hook(contiguous_input)``.
    """
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
