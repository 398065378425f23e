"""Resumable training checkpoints: every tensor in one ``.safetensors`` file, everything else in a JSON file.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``:

* tensors: ``model.*`` (aliased tensors cloned), ``ema.*``, ``optim.state.<param index>.<field>``,
  ``rng.torch`` and ``rng.cuda.<i>``;
* JSON: the run configuration, progress counters (epoch, iteration within the epoch, global step, EMA step),
  the optimizer's non-tensor state (param groups, scalar fields), the AMP scaler state, numpy's and Python's
  RNG states, and the SHA-free consistency tag ``step`` that is also stored in the safetensors header.

Atomic saving: both files are first written completely (and fsynced) to ``*.partial`` names in the same folder,
then renamed over the old pair, safetensors first, JSON last. A kill (SIGKILL, power loss) at any moment leaves one
of three states, each of which loads as a complete checkpoint:

* before the first rename: the previous pair, untouched (half-written ``*.partial`` files are ignored and
  overwritten by the next save);
* between the two renames: new tensors + old JSON + complete new ``NAME.json.partial``; the step tags disagree,
  and :func:`checkpoint_exists` / :func:`load_training_state` finish the interrupted save by renaming that
  partial JSON (its step equals the tensors' header step);
* after the second rename: the new pair.

A pair whose step tags disagree with no matching partial JSON is refused with a ``RuntimeError``, never loaded.
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

from ..models.weights import CheckpointError
from ..outputs import fsync_dir, write_error

__all__ = ["checkpoint_exists", "load_training_state", "recover_interrupted_save", "remove_checkpoint",
           "save_training_state"]


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


def _paths(prefix: Path) -> tuple[Path, Path, Path, Path]:
    st_path, js_path = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    return st_path, js_path, st_path.with_name(st_path.name + ".partial"), js_path.with_name(js_path.name + ".partial")


def _header_step(st_path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(st_path), framework="pt", device="cpu") as fh:
            return (fh.metadata() or {}).get("step")
    except Exception:  # noqa: BLE001 - an unreadable file simply has no step
        return None


def _json_step(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover_interrupted_save(prefix: str | os.PathLike) -> bool:
    """Finish a save that was killed between its two renames (see the module docstring).

    When ``prefix.safetensors`` exists and ``prefix.json`` is missing or names another step, while a complete
    ``prefix.json.partial`` names the step stored in the safetensors header, the partial JSON is renamed into
    place. Returns True when it did so. Anything else is left alone.
    """
    st_path, js_path, _, tmp_js = _paths(Path(prefix))
    if not st_path.is_file() or not tmp_js.is_file():
        return False
    header = _header_step(st_path)
    if header is None or (js_path.is_file() and _json_step(js_path) == header):
        return False
    if _json_step(tmp_js) != header:
        return False
    os.replace(tmp_js, js_path)
    return True


def remove_checkpoint(prefix: str | os.PathLike) -> None:
    """Delete the checkpoint ``prefix`` (both files and an interrupted save's partial JSON), if present."""
    for path in _paths(Path(prefix)):
        path.unlink(missing_ok=True)


def checkpoint_exists(prefix: str | os.PathLike) -> bool:
    """True when a complete checkpoint pair exists (finishing an interrupted save first, if there is one)."""
    prefix = Path(prefix)
    recover_interrupted_save(prefix)
    return prefix.with_suffix(".json").is_file() and prefix.with_suffix(".safetensors").is_file()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _told(exc: BaseException, target: Path) -> BaseException:
    """``exc`` (a failed write for ``target``) as the CLIs' one-line errors tell it: a full disk or an OS error that
    only a non-Python writer's message carries (safetensors' ``(os error 13)``) as an ``OSError`` naming ``target``
    and what was kept (:mod:`cartoonseg.outputs`), another safetensors refusal as a ``CheckpointError``; anything
    else as it is."""
    from safetensors import SafetensorError

    told = write_error(exc, target)
    if told is None and isinstance(exc, SafetensorError):
        kept = "keeps its earlier content" if os.path.lexists(target) else "was not created"
        told = CheckpointError(f"cannot write {target}: safetensors refused to save the tensors ({exc}); {target} "
                               f"{kept}")
    return told if told is not None else exc


def write_tensors(tensors: dict[str, Tensor], tmp: Path, target: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` as safetensors to the temporary ``tmp`` (beside ``target``, renamed there by the caller)
    and flush it to disk. On failure ``tmp`` (maybe half written) is removed and the error names ``target``
    (:func:`_told`): a full disk or an unwritable folder is one ``error:`` line of the training CLIs, no
    traceback."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _fsync_file(tmp)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        told = _told(exc, target) if isinstance(exc, Exception) else exc
        if told is exc:
            raise
        raise told from exc


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """Write ``prefix.safetensors`` + ``prefix.json`` (see the module docstring). Returns the JSON path.

    A write that fails (a full disk, a folder that became unwritable) removes what it had written under the
    temporary names and raises an ``OSError`` (``CheckpointError`` for another safetensors refusal) naming the
    file; the previous checkpoint pair stays complete and loadable."""
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
    st_path, js_path, tmp_st, tmp_js = _paths(prefix)
    # 1. both complete files under temporary names (a kill here leaves the previous pair untouched)
    write_tensors(tensors, tmp_st, st_path, {"step": str(step)})
    try:
        _write_synced(tmp_js, json.dumps(meta, default=_json_default).encode("utf-8"))
    except BaseException as exc:
        tmp_st.unlink(missing_ok=True)
        tmp_js.unlink(missing_ok=True)  # half written (an interrupted save's complete one was finished on load)
        told = _told(exc, js_path) if isinstance(exc, Exception) else exc
        if told is exc:
            raise
        raise told from exc
    # 2. commit: tensors first, JSON last (a kill in between is finished by recover_interrupted_save)
    os.replace(tmp_st, st_path)
    os.replace(tmp_js, js_path)
    fsync_dir(prefix.parent)
    return js_path


#: the fields of a training-state JSON that :func:`load_training_state` and :func:`restore_rng` read (``a.b``: key
#: ``b`` of the object at ``a``); what :func:`save_training_state` always writes
_REQUIRED_FIELDS = ("step", "progress", "progress.global_step", "config", "optimizer", "optimizer.param_groups",
                    "optimizer.scalars", "scaler", "rng", "rng.numpy", "rng.python")


def _missing_fields(meta: dict[str, Any]) -> list[str]:
    """The :data:`_REQUIRED_FIELDS` missing from ``meta`` (a field under a missing or non-object parent counts as
    missing only through its parent)."""
    missing = []
    for field in _REQUIRED_FIELDS:
        parent, _, key = field.rpartition(".")
        if parent in missing:
            continue
        holder = meta.get(parent) if parent else meta
        if not isinstance(holder, dict) or key not in holder:
            missing.append(field)
    return missing


def load_training_state(prefix: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state`.

    Returns:
        ``{"model": state dict, "ema": state dict or None, "optimizer": optimizer state dict,
        "progress", "config", "scaler", "rng_tensors", "rng", "extra"}``. Call :func:`restore_rng` separately.

    Raises:
        FileNotFoundError: a file of the pair is missing. CheckpointError (a RuntimeError): a file cannot be read
        (damaged) or the pair does not belong together.
    """
    from safetensors import safe_open

    prefix = Path(prefix)
    recover_interrupted_save(prefix)
    st_path, js_path = prefix.with_suffix(".safetensors"), prefix.with_suffix(".json")
    if not st_path.is_file() or not js_path.is_file():
        raise FileNotFoundError(f"training checkpoint {prefix}(.safetensors/.json) not found")
    advice = "delete both files (or pass --no-resume, or use a new --out) to start over, or restore them"
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the training checkpoint {js_path} ({exc}); {advice}") from None
    if not isinstance(meta, dict) or meta.get("format") != "cartoonseg-train-state":
        raise CheckpointError(f"{js_path} is not a cartoonseg training state; {advice}")
    missing = _missing_fields(meta)
    if missing:  # the right format, but cut down or edited: one line naming what is gone, not a KeyError later
        raise CheckpointError(f"the training checkpoint {js_path} lacks {', '.join(missing)}; {advice}")
    tensors: dict[str, Tensor] = {}
    try:
        with safe_open(str(st_path), framework="pt", device="cpu") as fh:
            header_step = (fh.metadata() or {}).get("step")
            for k in fh.keys():
                tensors[k] = fh.get_tensor(k)
    except Exception as exc:  # noqa: BLE001 - safetensors' Rust errors (damaged header or data) and OSError
        raise CheckpointError(f"cannot read the training checkpoint {st_path} ({exc}); {advice}") from None
    if header_step != str(meta.get("step")):
        raise CheckpointError(f"{st_path} is from step {header_step} but {js_path} from step {meta.get('step')}; "
                              f"{advice}")
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
