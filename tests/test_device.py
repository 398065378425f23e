"""cartoonseg.device: the one capability check behind every precision choice (CPU bf16 needs AVX-512/AVX-NE-CONVERT
kernels; an AVX2-only CPU must fall back to fp32 with one warning, never a oneDNN traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cartoonseg.device as device
from cartoonseg.device import PrecisionFallbackWarning, capabilities, resolve_dtype, resolve_precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_probe_reports_this_cpu_consistently():
    caps = capabilities("cpu")
    assert caps.supported[0] == "fp32" and set(caps.native) <= set(caps.supported)
    assert caps.cpu_isa == torch.backends.cpu.get_cpu_capability()
    assert caps.description.startswith("CPU ")
    assert caps.auto in caps.supported
    if "bf16" in caps.supported:  # what the probe promises must really run
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3))
    assert capabilities(torch.device("cpu")) is caps  # cached


def test_explicit_supported_precision_passes_through():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_dtype("fp32") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(None, "cpu")


def test_unsupported_bf16_falls_back_once_or_raises_when_strict(no_bf16):
    with pytest.warns(PrecisionFallbackWarning, match="not supported on this CPU AVX2") as record:
        assert resolve_precision("bf16", "cpu") == "fp32"
        assert resolve_precision("bf16", "cpu") == "fp32"
        assert resolve_dtype("bf16", "cpu") == torch.float32
    assert len(record) == 1
    with pytest.raises(RuntimeError, match="'bf16' is not supported on this CPU AVX2.*supported here: fp32"):
        resolve_precision("bf16", "cpu", strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("auto", "cpu") == "fp32"


def test_onednn_isa_cap_below_bf16_means_no_bf16(monkeypatch):
    """``ONEDNN_MAX_CPU_ISA=AVX2`` on any CPU reports what a real AVX2-only CPU reports (CI's emulation)."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    device.clear_cache()
    try:
        caps = capabilities("cpu")
        assert caps.supported == ("fp32",) and caps.native == () and caps.auto == "fp32"
        assert caps.onednn_max_isa == "AVX2" and "ONEDNN_MAX_CPU_ISA=AVX2" in caps.description
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        device.clear_cache()


def test_native_order_decides_auto():
    cpu = device.Capabilities("cpu", "CPU AMX", supported=("fp32", "bf16"), native=("bf16",))
    gpu = device.Capabilities("cuda:0", "CUDA", supported=("fp32", "fp16", "bf16"), native=("fp16", "bf16"))
    old = device.Capabilities("cuda:0", "CUDA old", supported=("fp32", "fp16"), native=())
    assert (cpu.auto, gpu.auto, old.auto) == ("bf16", "fp16", "fp32")


def test_other_devices_are_fp32_only():
    assert capabilities("meta").supported == ("fp32",)
    assert device.precision_of(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="dtype"):
        device.precision_of(torch.int8)


def test_cli_segment_bf16_on_a_cpu_without_bf16_writes_outputs_and_warns_once(tmp_path):
    """``python -m cartoonseg segment IMG --precision bf16`` on an AVX2-only CPU (emulated on any CPU with the
    oneDNN/ATen caps): outputs written, one warning line, exit 0."""
    from _comfy_stub import write_tiny_released_weights

    weights = write_tiny_released_weights(tmp_path / "models")
    det, ref = weights / "cartoonseg" / "rtmdetl_e60.ckpt", weights / "cartoonseg" / "refine_last.ckpt"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "cartoonseg", "segment", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
           "--out", str(tmp_path / "out"), "--detector", str(det), "--refiner", str(ref), "--no-download",
           "--precision", "bf16", "--score-thr", "0.0", "--max-instances", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("PrecisionFallbackWarning") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "mkldnn" not in proc.stderr
    for name in ("a", "b"):
        assert (tmp_path / "out" / name / "instances.json").is_file()


@pytest.mark.parametrize("preset, torch_first, expected", [
    (None, False, "PASSIVE"),      # the default of every entry point that imports cartoonseg first
    ("ACTIVE", False, "ACTIVE"),   # the user's choice wins
    (None, True, None),            # torch (libgomp) already loaded: too late, leave the environment alone
])
def test_openmp_threads_sleep_instead_of_spinning(preset, torch_first, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = ("import torch\n" if torch_first else "") + "import os, cartoonseg\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "PYTHONPATH": REPO},
                         timeout=300, check=True).stdout.split()[-1]
    assert out == str(expected)
