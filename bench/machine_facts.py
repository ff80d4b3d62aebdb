"""What a bench reports of the CPU it ran on: the model name and the instruction sets that matter to
fp32, bf16 and int8 matmuls (read from ``/proc/cpuinfo`` where there is one)."""
from __future__ import annotations

import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def _cpuinfo_line(prefix: str) -> str | None:
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(prefix)),
                    None)
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name, else what ``platform`` knows."""
    line = _cpuinfo_line("model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of :data:`FLAGS` the CPU has."""
    line = _cpuinfo_line("flags") or ""
    return [flag for flag in FLAGS if f" {flag}" in line]
