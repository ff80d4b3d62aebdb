"""What this CPU multiplies in hardware, as torch's oneDNN reports it: the one check behind every
choice of a reduced-precision kernel (encoder warnings, bf16 and int8 linear layers)."""
from __future__ import annotations

import functools

import torch


@functools.cache
def native_matmul(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` in hardware: fp32 always, bf16 with AVX512-BF16 or AMX,
    fp16 with AVX512-FP16 or AMX-FP16. Without it, products in that dtype convert every element in
    software and cost more than fp32's."""
    if dtype == torch.float32:
        return True
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        pass
    return False


@functools.cache
def amx() -> bool:
    """Whether this CPU has AMX tile instructions (Intel Xeon since Sapphire Rapids), as torch reports them."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
