"""int8 linear layers for ``--precision int8``: weights per output channel, activations per row.

``x @ weight.T + bias`` becomes ``(q(x) @ q(weight).T) * sx * sw + bias``, where ``q(weight)``
rounds each output channel to int8 on its own scale ``sw = max|row| / 127`` (computed once per
weight version and cached: one byte per parameter), ``q(x)`` rounds each row of the input (one
token) on its own scale ``sx``, and the product accumulates in int32 (oneDNN's int8 linear on a
weight laid out for it once, VNNI or AMX where the CPU has them; ``torch._int_mm`` in builds without it).

Why per row: torch's dynamic quantization (``quantize_dynamic``) scales the activations of a
whole batch by one number, so a single token with a large activation costs every other token
its precision. With multilingual-e5-small on Tatoeba (15 languages x 100 pairs,
``bench/bench_precision.py``) that lost 1.3-2.6 points of accuracy@1; per-row activation scales
lose 0.13, and XQuAD, XQuAD-R and Tatoeba through ``xlsearch evaluate`` stay within 0.002 of fp32.
Every other op (attention, layer norms, GELU) stays fp32.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cpu import amx
from .linear_kernel import concatenated, weight_key

_lock = threading.Lock()
# ids of a layer's (or stacked layers') weights and biases -> (key, int8 operand, scales, zero points, bias)
_weights: dict[tuple, tuple[tuple, Tensor, Tensor, Tensor, Tensor | None]] = {}


def available() -> bool:
    """Whether this torch build multiplies int8 matrices on the CPU (oneDNN's int8 linear or ``_int_mm``)."""
    if prepacked():
        return True
    try:
        torch._int_mm(torch.ones(1, 8, dtype=torch.int8), torch.ones(8, 8, dtype=torch.int8))
        return True
    except (AttributeError, RuntimeError, NotImplementedError):  # pragma: no cover - unusual builds
        return False


def native_support() -> bool:
    """Whether the CPU has int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX), as torch reports them."""
    return amx() or bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def quantize_rows(x: Tensor, unsigned: bool = False) -> tuple[Tensor, Tensor]:
    """``x`` (rows, n) as int8 rounded on each row's own scale, and the ``(rows, 1)`` scales
    (``x ~= q * scale``; an all-zero row gets zeros and the smallest normal scale); ``unsigned``: as uint8
    ``q + 128`` instead, to be read with zero point 128.

    A query's layers call this some fifty times on a few rows, where each torch op costs microseconds
    whatever its size: it is one compiled loop (:func:`_quantizer`), the arithmetic of torch's
    ``round(x / (max|row| / 127))`` in fp32, rounding half to even."""
    q = torch.empty(x.shape, dtype=torch.uint8 if unsigned else torch.int8)  # row-major, as _int_mm needs
    scale = torch.empty((x.shape[0], 1), dtype=torch.float32)
    _quantizer()(x.detach().numpy(), q.numpy(), scale.numpy(), 128 if unsigned else 0)
    return q, scale


@functools.cache
def _quantizer():
    """The loop behind :func:`quantize_rows`, compiled by numba (or loaded from its disk cache) at the first
    int8 product: a process that never runs int8 never imports numba for it."""
    import numba
    import numpy as np

    tiny = np.float32(torch.finfo(torch.float32).tiny)

    @numba.njit(cache=True, nogil=True)
    def quantize(x, out, scales, offset):
        for i in range(x.shape[0]):
            top = np.float32(0.0)
            for j in range(x.shape[1]):
                top = max(top, abs(x[i, j]))
            scale = max(top / np.float32(127.0), tiny)
            scales[i, 0] = scale
            for j in range(x.shape[1]):
                out[i, j] = np.int32(np.rint(x[i, j] / scale)) + offset
    return quantize


def quantized(layers: Sequence[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``layers``' weights (one layer's, or several stacked along the output channels) as int8 per output
    channel, their ``(out,)`` scales and zero points, and their biases (stacked; None if none has one); cached
    until one of them changes. Each channel has its own scale, so stacked rows are what each weight alone
    gives. The int8 matrix is laid out for oneDNN's int8 linear where this torch has it (:func:`prepacked`),
    else transposed to a row-major ``(in, out)`` operand for ``torch._int_mm``."""
    tensors = [t for layer in layers for t in layer if t is not None]
    ids, key = tuple(id(t) for t in tensors), weight_key(tensors)
    cached = _weights.get(ids)
    if cached is None or cached[0] != key:
        with _lock:
            weight, bias = layers[0] if len(layers) == 1 else concatenated(layers)
            q, scale = quantize_rows(weight.detach().float())
            operand = torch.ops.onednn.qlinear_prepack(q, None) if prepacked() else q.t().contiguous()
            scale = scale.view(-1)
            cached = _weights[ids] = (key, operand, scale, torch.zeros(scale.shape, dtype=torch.long), bias)
    return cached[1:]


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` with int8 operands for 2-D fp32 ``x`` on the CPU (see the module).

    Anything else (another dtype or device, autograd, no rows) goes to ``F.linear`` unchanged.
    """
    return linears(x, [(weight, bias)])[0]


def linears(x: Tensor, layers: Sequence[tuple[Tensor, Tensor | None]]) -> list[Tensor]:
    """:func:`linear` of one input by several ``(weight, bias)`` (attention's query, key and value
    projections): the input quantized once and one product on the weights stacked, split into column views.
    A few-row input costs about as much to quantize and hand to oneDNN as to multiply: one product instead of
    three took an int8 query from 12.2-13.0 to 11.4-12.1 ms of CPU on multilingual-e5-small and from 20.4 to
    19.6 on the mdeberta-v3-base shape (a 2-core AMD EPYC, one thread, interleaved in one process), with the
    same vectors to the bit."""
    if (x.dim() != 2 or x.dtype != torch.float32 or x.device.type != "cpu" or x.shape[0] == 0
            or (torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w, _ in layers)))):
        return [F.linear(x, weight, bias) for weight, bias in layers]
    q_x, x_scale = quantize_rows(x, unsigned=prepacked())
    out = _product(q_x, x_scale, *quantized(layers))
    return list(out.split([w.shape[0] for w, _ in layers], dim=1)) if len(layers) > 1 else [out]


def _product(q_x: Tensor, x_scale: Tensor, q_weight: Tensor, w_scale: Tensor, w_zero: Tensor,
             bias: Tensor | None) -> Tensor:
    if prepacked():  # the int32 sums times each channel's scale, in fp32
        # u8 with zero point 128: the operand VNNI multiplies (u8 by s8); an s8 by s8 product runs oneDNN's
        # reference kernel on CPUs without AMX, some 1000x slower.
        out = torch.ops.onednn.qlinear_pointwise(q_x, 1.0, 128, q_weight, w_scale, w_zero, None, 1.0, 0,
                                                 torch.float32, "none", [], "")
    else:
        out = torch._int_mm(q_x, q_weight).to(torch.float32).mul_(w_scale)
    if bias is None:
        return out.mul_(x_scale)
    return torch.addcmul(bias, out, x_scale, out=out)


@functools.cache
def prepacked() -> bool:
    """Whether this torch build has oneDNN's int8 linear on prepacked weights (x86 builds), which measured
    1.4-2x faster than ``torch._int_mm`` (reordering the weight on every call) at 16 to 1024 rows with AMX,
    and level with it with AVX-512 VNNI."""
    try:
        q = torch.ones(8, 8, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(q, None)
        out = torch.ops.onednn.qlinear_pointwise(torch.full((2, 8), 129, dtype=torch.uint8), 1.0, 128, packed,
                                                 torch.ones(8), torch.zeros(8, dtype=torch.long), None, 1.0, 0,
                                                 torch.float32, "none", [], "")
        return bool(torch.all(out == 8))
    except (AttributeError, RuntimeError, NotImplementedError):  # pragma: no cover - other builds
        return False


def clear() -> None:
    """Forget every cached int8 weight (tests; memory)."""
    with _lock:
        _weights.clear()
