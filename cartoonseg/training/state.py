"""Resumable training checkpoints: every tensor in one ``.safetensors`` file, everything else in a JSON file.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``:

* tensors: ``model.*`` (aliased tensors cloned), ``ema.*``, ``optim.state.<param index>.<field>``,
  ``rng.torch`` and ``rng.cuda.<i>``;
* JSON: the run configuration, progress counters (epoch, iteration within the epoch, global step, EMA step),
  the optimizer's non-tensor state (param groups, scalar fields), the AMP scaler state, numpy's and Python's
  RNG states, and the SHA-free consistency tag ``step`` that is also stored in the safetensors header.

Both files are written to temporary names and renamed, safetensors first, so a kill during saving leaves the
previous checkpoint intact (the JSON names the step its tensors must carry).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["checkpoint_exists", "load_training_state", "save_training_state"]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def checkpoint_exists(prefix: str | os.PathLike) -> bool:
    prefix = Path(prefix)
    return prefix.with_suffix(".json").is_file() and prefix.with_suffix(".safetensors").is_file()


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_training_state(
    prefix: str | os.PathLike,
    *,
    model_state: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    config: dict[str, Any],
    ema_state: dict[str, Tensor] | None = None,
    scaler: Any = None,
    extra_tensors: dict[str, Tensor] | None = None,
) -> Path:
    """Write ``prefix.safetensors`` + ``prefix.json`` (see the module docstring). Returns the JSON path."""
    from safetensors.torch import save_file

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for k, v in model_state.items():
        tensors[f"model.{k}"] = v.detach().cpu().clone().contiguous()
    if ema_state is not None:
        for k, v in ema_state.items():
            tensors[f"ema.{k}"] = v.detach().cpu().clone().contiguous()
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, fields in opt["state"].items():
        for name, value in fields.items():
            if isinstance(value, Tensor):
                tensors[f"optim.state.{idx}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                opt_scalars.setdefault(str(idx), {})[name] = value
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().clone().contiguous()
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    step = int(progress["global_step"])
    meta = {
        "format": "cartoonseg-train-state",
        "version": 1,
        "step": step,
        "progress": progress,
        "config": config,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": opt_scalars},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
    }
    st_path = prefix.with_suffix(".safetensors")
    js_path = prefix.with_suffix(".json")
    tmp_st = st_path.with_name(st_path.name + ".partial")
    tmp_js = js_path.with_name(js_path.name + ".partial")
    save_file(tensors, str(tmp_st), metadata={"step": str(step)})
    tmp_js.write_text(json.dumps(meta, default=_json_default), encoding="utf-8")
    os.replace(tmp_st, st_path)
    os.replace(tmp_js, js_path)
    return js_path


def load_training_state(prefix: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state`.

    Returns:
        ``{"model": state dict, "ema": state dict or None, "optimizer": optimizer state dict,
        "progress", "config", "scaler", "rng_tensors", "rng", "extra"}``. Call :func:`restore_rng` separately.

    Raises:
        FileNotFoundError: a file of the pair is missing. RuntimeError: the pair does not belong together.
    """
    from safetensors import safe_open

    prefix = Path(prefix)
    st_path, js_path = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    if not st_path.is_file() or not js_path.is_file():
        raise FileNotFoundError(f"training checkpoint {prefix}(.safetensors/.json) not found")
    meta = json.loads(js_path.read_text(encoding="utf-8"))
    if meta.get("format") != "cartoonseg-train-state":
        raise RuntimeError(f"{js_path} is not a cartoonseg training state")
    tensors: dict[str, Tensor] = {}
    with safe_open(str(st_path), framework="pt", device="cpu") as fh:
        header_step = (fh.metadata() or {}).get("step")
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    if header_step != str(meta["step"]):
        raise RuntimeError(f"{st_path} is from step {header_step} but {js_path} from step {meta['step']}")
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim.state."):
            _, _, idx, name = k.split(".", 3)
            state.setdefault(int(idx), {})[name] = v.to(map_location)
    for idx, fields in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(fields)
    optimizer = {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
    return {
        "model": model,
        "ema": ema,
        "optimizer": optimizer,
        "progress": meta["progress"],
        "config": meta["config"],
        "scaler": meta["scaler"],
        "rng_tensors": {k: v for k, v in tensors.items() if k.startswith("rng.")},
        "rng": meta["rng"],
        "extra": {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")},
    }


def restore_rng(loaded: dict[str, Any]) -> None:
    """Restore torch / CUDA / numpy / Python RNG states from :func:`load_training_state`'s result."""
    _set_rng_state(loaded["rng_tensors"], loaded["rng"])


__all__.append("restore_rng")
