"""Where and at which precision the arithmetic runs: device, precision, autocast, and what
the CPU can do natively.

Training and inference both ask this module, so that ``--device auto`` and ``--precision
auto`` mean the same thing everywhere. Precision choices are explained in docs/precision.md.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from brainmri.config import PRECISIONS
from brainmri.errors import BrainMRIError


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one (under torchrun: this process's GPU), else the CPU."""
    if name in ("auto", "", None):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BrainMRIError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BrainMRIError(f"device {name!r} requested but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BrainMRIError(f"device {name!r} does not exist ({torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        raise BrainMRIError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def cpu_name() -> str:
    """The processor's model name, for run records and benchmarks (Linux: /proc/cpuinfo)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    and measured 10-20 times slower than fp32 (see docs/precision.md). Tests patch this probe to
    exercise both kinds of CPU on either."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it (else fp16), bf16 on CPUs with native bf16, else fp32."""
    if precision not in PRECISIONS:
        raise BrainMRIError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            # Native bf16 only (Ampere and newer): emulated bf16 would be slower than fp16 + scaling.
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise BrainMRIError("--precision fp16 needs a CUDA GPU; on a CPU use bf16 or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """A reusable autocast context for ``precision`` (already resolved) on ``device``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling; bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset``
    narrow), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def check_threads(threads: int, flag: str = "--threads") -> int:
    """``threads`` if it is between 1 and :func:`usable_cpus`: more threads than CPUs only slow
    inference down, and absurd counts crash PyTorch (a segfault) or stall ONNX Runtime."""
    limit = usable_cpus()
    if not 1 <= threads <= limit:
        raise BrainMRIError(f"{flag} must be between 1 and {limit} (the CPUs this process may use), got {threads}")
    return threads
