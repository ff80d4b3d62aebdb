"""bf16 linear layers for ``--precision bf16`` on the CPU: each weight cast and laid out for oneDNN once.

torch runs a bf16 ``F.linear`` on the CPU through oneDNN, which reorders the weight into the
blocked layout its AMX or AVX512-BF16 kernels read on every call, and a bf16 model (or autocast)
casts fp32 weights on every call too. Here each weight is cast to bf16 and reordered once, cached
per weight version (two bytes per parameter), and every call runs oneDNN's linear on that copy. The
results are ``F.linear``'s in bf16, at most a last bit apart (the bias may be added in another order); on an Intel Xeon with AMX, the 48 linear layers of
eight mdeberta-v3-base blocks streamed from memory ran 1.25x faster at 1-256 rows and 1.3x at 1024
(``bench/bench_encode.py``'s bf16 figures are the whole forward pass).
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cpu import native_matmul
from .linear_kernel import onednn_available, weight_key

_lock = threading.Lock()
_weights: dict[int, tuple[tuple, Tensor, Tensor | None]] = {}  # id(weight) -> (key, packed bf16, bf16 bias)


def available() -> bool:
    """Whether this torch build and CPU run bf16 linear layers in oneDNN (AMX or AVX512-BF16)."""
    return onednn_available() and native_matmul(torch.bfloat16)


def packed_weight(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``weight`` in bf16, laid out for oneDNN, and ``bias`` in bf16; cached until either changes."""
    key = weight_key([weight] if bias is None else [weight, bias])
    cached = _weights.get(id(weight))
    if cached is None or cached[0] != key:
        with _lock:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16))
            cached = _weights[id(weight)] = (key, packed, None if bias is None else bias.detach().to(torch.bfloat16))
    return cached[1], cached[2]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` in bf16 (``x`` cast if it is not), on a cached packed copy of the weight.

    Off the CPU or with autograd, the same product through ``F.linear`` on cast operands.
    """
    x = x.to(torch.bfloat16)
    if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight.to(torch.bfloat16), None if bias is None else bias.to(torch.bfloat16))
    packed, packed_bias = packed_weight(weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, packed_bias, "none", [], "")


def clear() -> None:
    """Forget every cached bf16 weight (tests; memory)."""
    with _lock:
        _weights.clear()
