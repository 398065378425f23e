"""What a device can run, decided in one place: the precisions (fp32 / fp16 / bf16) every network of the package
may use on a CPU or GPU, and the choice behind ``precision="auto"``.

CPUs differ: bf16 convolutions need oneDNN kernels that exist only with AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT;
on an AVX2-only CPU oneDNN raises ``mkldnn_convolution: bf16 path needs the cpu support ...`` deep inside a
forward pass. So nothing in the package casts to a reduced precision without asking :func:`resolve_precision`:

* ``"auto"`` picks the fastest precision the device runs *natively*: on CPU bf16 only with AMX or AVX512-BF16
  (emulated bf16 is slower than fp32), else fp32; on CUDA fp16 (tensor cores, compute capability 7+), else
  bf16 where supported, else fp32.
* An explicit ``"bf16"``/``"fp16"`` that the device cannot run falls back to fp32 with one
  :class:`PrecisionFallbackWarning` per process that names the CPU capability, or raises ``RuntimeError`` with
  ``strict=True``. It never reaches a oneDNN traceback.

The CPU answer combines three sources, each of which can say "no": PyTorch's own hardware checks
(``torch.ops.mkldnn._is_mkldnn_bf16_supported``, ``torch.cpu._is_avx512_bf16_supported``, AMX), the oneDNN ISA
cap ``ONEDNN_MAX_CPU_ISA`` (so ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 machine behaves
like a real AVX2-only CPU, which is how CI exercises both dispatch paths), and a functional probe that runs a tiny
convolution and linear layer through the same ops the networks use. Results are cached per device;
:func:`clear_cache` forgets them (tests).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "PRECISIONS",
    "PRECISION_CHOICES",
    "DTYPES",
    "Capabilities",
    "PrecisionFallbackWarning",
    "capabilities",
    "clear_cache",
    "resolve_precision",
    "resolve_dtype",
    "precision_of",
    "refuse_cpu_fp16",
]

#: the explicit precisions; ``"auto"`` is resolved to one of them by :func:`resolve_precision`
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
PRECISION_CHOICES: tuple[str, ...] = ("auto",) + PRECISIONS
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# oneDNN's ISA names (``ONEDNN_MAX_CPU_ISA``, case-insensitive) in increasing order; aliases share a rank.
_ONEDNN_ISA_RANK: dict[str, int] = {
    "SSE41": 1, "AVX": 2, "AVX2": 3, "AVX2_VNNI": 4, "AVX2_VNNI_2": 5, "AVX512_CORE": 6, "AVX512_CORE_VNNI": 7,
    "AVX512_CORE_BF16": 8, "AVX512_CORE_FP16": 9, "AVX10_1_512": 9, "AVX512_CORE_AMX": 10, "AVX10_1_512_AMX": 10,
    "AVX512_CORE_AMX_FP16": 11, "AVX10_1_512_AMX_FP16": 11, "AVX10_2_512": 12, "AVX10_2_512_AMX_2": 13,
    "DEFAULT": 99, "ALL": 99,
}
_BF16_KERNELS_RANK = _ONEDNN_ISA_RANK["AVX2_VNNI_2"]  # PyTorch's bf16 conv check: avx_ne_convert or AVX-512 BW/VL/DQ
_BF16_NATIVE_RANK = _ONEDNN_ISA_RANK["AVX512_CORE_BF16"]
_FP16_KERNELS_RANK = _ONEDNN_ISA_RANK["AVX512_CORE_FP16"]
_FP16_NATIVE_RANK = _ONEDNN_ISA_RANK["AVX512_CORE_AMX_FP16"]


class PrecisionFallbackWarning(RuntimeWarning):
    """A requested reduced precision is not supported on this device; fp32 is used instead."""


@dataclass(frozen=True)
class Capabilities:
    """What one device runs.

    Attributes:
        device: ``"cpu"`` or ``"cuda:N"`` (other device types: fp32 only).
        description: human-readable summary, e.g. ``"CPU AVX2 (no AVX-512, no bf16 kernels)"``.
        supported: precisions whose kernels run here (``"fp32"`` always).
        native: the subset that is faster than fp32 here (hardware support rather than emulation), most
            preferred first.
        cpu_isa: ``torch.backends.cpu.get_cpu_capability()`` for CPUs (ATen's dispatch level), else None.
        onednn_max_isa: the ``ONEDNN_MAX_CPU_ISA`` cap in force, or None.
    """

    device: str
    description: str
    supported: tuple[str, ...]
    native: tuple[str, ...]
    cpu_isa: str | None = None
    onednn_max_isa: str | None = None

    @property
    def auto(self) -> str:
        """The precision ``"auto"`` resolves to: the preferred native reduced precision, else fp32."""
        return self.native[0] if self.native else "fp32"


def _device_key(device: torch.device | str | None) -> str:
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda":
        return f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
    return dev.type


def _onednn_cap() -> tuple[str | None, int]:
    raw = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if not raw:
        return None, 99
    name = raw.strip().upper()
    return name, _ONEDNN_ISA_RANK.get(name, 99)


def _cpu_flag(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001 - a missing/odd probe means "not known to be supported"
        return False


def _runs(dtype: torch.dtype) -> bool:
    """Functional probe: the conv (plain, autocast and oneDNN fused post-op) and linear ops the networks use."""
    try:
        with torch.no_grad():
            x = torch.randn(1, 8, 9, 9)
            w = torch.randn(8, 8, 3, 3)
            b = torch.randn(8)
            F.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=1)
            F.conv2d(x.to(dtype).contiguous(memory_format=torch.channels_last), w.to(dtype), b.to(dtype), padding=1)
            with torch.autocast("cpu", dtype=dtype):
                F.conv2d(x, w, b, padding=1)
                F.linear(torch.randn(4, 16), torch.randn(8, 16))
            pointwise = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
            if pointwise is not None and dtype == torch.bfloat16:
                pointwise(x.to(dtype), w.to(dtype), b.to(dtype), [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _cpu_capabilities() -> Capabilities:
    isa = torch.backends.cpu.get_cpu_capability()
    cap_name, cap_rank = _onednn_cap()
    mkldnn = getattr(torch.ops, "mkldnn", None)
    hw_bf16 = torch.backends.mkldnn.is_available() and bool(
        mkldnn is not None and getattr(mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    hw_fp16 = torch.backends.mkldnn.is_available() and bool(
        mkldnn is not None and getattr(mkldnn, "_is_mkldnn_fp16_supported", lambda: False)())
    amx = _cpu_flag("_is_amx_tile_supported")
    avx512 = _cpu_flag("_is_avx512_supported")
    avx512_bf16 = _cpu_flag("_is_avx512_bf16_supported")
    amx_fp16 = _cpu_flag("_is_amx_fp16_supported")
    supported = ["fp32"]
    native: list[str] = []
    if hw_bf16 and cap_rank >= _BF16_KERNELS_RANK and _runs(torch.bfloat16):
        supported.append("bf16")
        if (avx512_bf16 or amx) and cap_rank >= _BF16_NATIVE_RANK:
            native.append("bf16")
    if hw_fp16 and cap_rank >= _FP16_KERNELS_RANK and _runs(torch.float16):
        supported.append("fp16")
        if amx_fp16 and cap_rank >= _FP16_NATIVE_RANK:
            native.append("fp16")
    features = [isa]
    features.append("AVX-512" if avx512 else "no AVX-512")
    if avx512_bf16:
        features.append("AVX512-BF16")
    if amx:
        features.append("AMX")
    if cap_name:
        features.append(f"ONEDNN_MAX_CPU_ISA={cap_name}")
    features.append("bf16 kernels" if "bf16" in supported else "no bf16 kernels")
    return Capabilities(device="cpu", description="CPU " + ", ".join(features), supported=tuple(supported),
                        native=tuple(native), cpu_isa=isa, onednn_max_isa=cap_name)


def _cuda_capabilities(key: str) -> Capabilities:
    index = int(key.split(":")[1])
    name = torch.cuda.get_device_name(index)
    bf16 = bool(torch.cuda.is_bf16_supported())
    supported = ("fp32", "fp16", "bf16") if bf16 else ("fp32", "fp16")
    major, _ = torch.cuda.get_device_capability(index)
    # fp16 first: as fast as bf16 where both exist, more mantissa, and what ComfyUI uses on CUDA
    native = (("fp16",) if major >= 7 else ()) + (("bf16",) if bf16 else ())
    return Capabilities(device=key, description=f"CUDA {name}" + ("" if bf16 else " (no bf16)"),
                        supported=supported, native=native)


@functools.cache
def _capabilities(key: str) -> Capabilities:
    if key == "cpu":
        return _cpu_capabilities()
    if key.startswith("cuda"):
        return _cuda_capabilities(key)
    if key == "mps":
        return Capabilities(device=key, description="Apple MPS", supported=("fp32", "fp16"), native=("fp16",))
    return Capabilities(device=key, description=key, supported=("fp32",), native=())


def capabilities(device: torch.device | str | None = "cpu") -> Capabilities:
    """The (cached) :class:`Capabilities` of ``device``."""
    return _capabilities(_device_key(device))


_WARNED: set[tuple[str, str]] = set()


def clear_cache() -> None:
    """Forget probed capabilities and issued warnings (for tests that change the environment)."""
    _capabilities.cache_clear()
    _WARNED.clear()


def resolve_precision(precision: str = "auto", device: torch.device | str | None = "cpu", *,
                      strict: bool = False) -> str:
    """The precision to run on ``device``: one of ``"fp32"``, ``"fp16"``, ``"bf16"``.

    Args:
        precision: ``"auto"`` (the fastest native precision, see :attr:`Capabilities.auto`), or an explicit
            ``"fp32"``/``"fp16"``/``"bf16"``.
        device: where the network runs.
        strict: raise ``RuntimeError`` instead of falling back to fp32 when ``precision`` is not supported.

    Returns:
        ``precision`` itself when supported; ``"fp32"`` (after one :class:`PrecisionFallbackWarning` per process and
        request) when it is not.
    """
    if not isinstance(precision, str) or precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    caps = capabilities(device)
    if precision == "auto":
        return caps.auto
    if precision in caps.supported:
        return precision
    message = (f"precision {precision!r} is not supported on this {caps.description}; "
               f"supported here: {', '.join(caps.supported)}")
    if strict:
        raise RuntimeError(message)
    if (caps.device, precision) not in _WARNED:
        _WARNED.add((caps.device, precision))
        warnings.warn(message + "; running in fp32 instead", PrecisionFallbackWarning, stacklevel=2)
    return "fp32"


def resolve_dtype(precision: str = "auto", device: torch.device | str | None = "cpu", *,
                  strict: bool = False) -> torch.dtype:
    """:func:`resolve_precision` as a torch dtype."""
    return DTYPES[resolve_precision(precision, device, strict=strict)]


def precision_of(dtype: torch.dtype) -> str:
    """The precision name of a dtype (``torch.bfloat16`` -> ``"bf16"``)."""
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    raise ValueError(f"dtype must be one of {[str(d) for d in DTYPES.values()]}, got {dtype}")


def refuse_cpu_fp16(dtype: torch.dtype, device: torch.device | str | None) -> None:
    """ValueError for float16 on a CPU (it has no fast float16 kernels: a model would run many times slower than in
    fp32); the message names the precision values to use instead."""
    if dtype == torch.float16 and torch.device(device if device is not None else "cpu").type == "cpu":
        raise ValueError("precision fp16 runs on a GPU only (float16 is extremely slow on CPU); "
                         "on CPU use fp32 or bf16")
