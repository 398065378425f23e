"""Reading, loading, saving and converting weights (building a model is :mod:`cartoonseg.build`).

Foreign files are read with ``torch.load(weights_only=True)`` only (no code is ever unpickled) and pass through a
named, pure filter function that lives next to its model (timm style):

* :func:`~cartoonseg.models.rtmdet_ins.filter_mmdet_rtmdet_ins` for mmengine/mmdet RTMDet-Ins checkpoints such as the released
  ``rtmdetl_e60.ckpt`` (``{'meta': {'cfg': <python source>}, 'state_dict': ...}``, 942 keys with aliases);
* :func:`~cartoonseg.models.isnet.filter_isnet` for IS-Net state dicts such as ``refine_last.ckpt`` (flat, 798 keys) or Lightning files
  (``net.`` prefix, ``gt_encoder.*`` dropped).

The mmengine config text is *parsed* with :mod:`ast` (never executed) by :func:`parse_mmengine_config`.
Loading is strict and a mismatch raises an error listing the first missing, unexpected and mis-shaped keys.

Our own format is a ``.safetensors`` file whose header metadata holds the JSON config
(``{"cartoonseg": "{\"kind\": \"detector\", \"config\": {...}}"}``); aliased tensors are stored once.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pickle
import pickletools
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import DetectorConfig, RefinerConfig
from .models.isnet import ISNetDIS, filter_isnet, infer_refiner_config
from .models.rtmdet_ins import RTMDetIns, filter_mmdet_rtmdet_ins, infer_detector_config
from .models.weights import CheckpointError, state_dict_diff

__all__ = [
    "CheckpointError",
    "checkpoint_kind",
    "convert",
    "detector_config_from_mmengine",
    "check_tensor_storage",
    "check_weight_values",
    "load_detector",
    "load_refiner",
    "load_state_dict_strict",
    "parse_mmengine_config",
    "MAX_CFG_CHARS",
    "MAX_CFG_DEPTH",
    "MAX_CFG_NUMBER",
    "MAX_CFG_SECONDS",
    "MAX_CFG_VALUES",
    "peek_weights",
    "read_checkpoint",
    "save_weights",
]

FORMAT_VERSION = 1
_META_KEY = "cartoonseg"


# ----------------------------------------------------------------------------------------------- reading
def _weights_file(path: str | os.PathLike) -> tuple[Path, int]:
    """``(path, size in bytes)`` of an existing, non-empty file; :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"weights file is empty (0 bytes): {path}")
    return path, size


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a weights file without executing code.

    Returns:
        (object, safetensors metadata). For ``.safetensors`` the object is the flat tensor dict; for pickle files
        it is whatever ``torch.load(weights_only=True)`` returns (a dict).
    """
    path, size = _weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path} ({size} bytes): {exc}") from exc
        return tensors, metadata
    container = _container_format(path)
    if container is None:
        raise CheckpointError(
            f"cannot read {path} ({size} bytes): it is not a weights file (neither a PyTorch checkpoint nor "
            f"safetensors); the file is corrupt, truncated at the start, or something else saved under this name"
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _wants_code(exc):  # a well-formed pickle that names Python objects weights_only may not create
            raise CheckpointError(
                f"refusing to load {path}: it is not a weights-only checkpoint (loading it would unpickle arbitrary "
                f"objects: {_unpickler_reason(exc)}). Re-save its state_dict from a trusted environment."
            ) from exc
        raise CheckpointError(
            f"cannot read {path} ({size} bytes): the {container} checkpoint is truncated, corrupt or damaged "
            f"({_unpickler_reason(exc)})"
        ) from exc
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError, ValueError, KeyError, IndexError, struct.error,
            AttributeError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"cannot read {path} ({size} bytes): the {container} checkpoint is truncated, corrupt or damaged "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    except Exception as exc:  # anything else a damaged file makes the reader raise
        raise CheckpointError(
            f"cannot read {path} ({size} bytes): the {container} checkpoint is truncated, corrupt or damaged "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(obj, nn.Module) or not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors")
    check_tensor_storage(obj, f"{path} ({size} bytes)")
    return obj, {}


def check_tensor_storage(obj: Any, source: str = "checkpoint", _depth: int = 0) -> None:
    """Refuse tensors that declare more elements than their storage holds: a pickled view with zero or overlapping
    strides (``torch.zeros(1).expand(10**11)``) is a few bytes in the file but would become gigabytes the moment
    anything copies it (``.contiguous()``, a strict load). Every tensor in a checkpoint must be backed by its own
    bytes; raises :class:`CheckpointError` naming the first that is not."""
    if _depth > 32:
        raise CheckpointError(f"{source} nests containers more than 32 levels deep; not a weights file")
    if isinstance(obj, Tensor):
        declared = obj.numel() * obj.element_size()
        stored = obj.untyped_storage().nbytes()
        if declared > stored or any(s == 0 for s, n in zip(obj.stride(), obj.shape) if n > 1):
            raise CheckpointError(
                f"{source} holds a tensor of shape {tuple(obj.shape)} ({declared} bytes) backed by only {stored} "
                f"bytes of data (an expanded or overlapping view); such a file is crafted, not saved weights")
        return
    if isinstance(obj, dict):
        for value in obj.values():
            check_tensor_storage(value, source, _depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            check_tensor_storage(value, source, _depth + 1)


_ZIP_MAGIC = b"PK\x03\x04"


def _container_format(path: Path) -> str | None:
    """``"zip"`` (torch.save since 1.6), ``"legacy pickle"`` (older torch.save, protocol 2+), or None."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "legacy pickle"
    return None


def _unpickler_reason(exc: BaseException) -> str:
    """The reason torch's weights-only unpickler gave, without its generic preamble and documentation link."""
    import re

    text = str(exc)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    for p in paragraphs:
        if re.search(r"GLOBAL|Unsupported|WeightsUnpickler error", p):
            p = re.sub(r"^.*WeightsUnpickler error:\s*", "", p)
            if p:
                return p[:300]
    rest = [p for p in paragraphs if not p.startswith(("Check the documentation", "Weights only load failed"))]
    return (rest[-1] if rest else text.strip() or type(exc).__name__)[:300]


def _wants_code(exc: BaseException) -> bool:
    """True when torch's weights-only unpickler refused a *well-formed* pickle because it names a Python global
    (a class or function to call: code), as opposed to bytes that are no pickle opcode at all (corruption)."""
    text = str(exc).lower()
    return "global" in text or "unsupported class" in text


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


_PEEK_PICKLE_LIMIT = 64 << 20  # bytes of pickle opcodes read at most; key names come long before that


def _pickle_strings(stream, limit: int) -> set[str]:
    """Every string constant of the pickle at ``stream``'s position, read opcode by opcode (nothing executed)."""
    out: set[str] = set()
    start = stream.tell()
    for opcode, arg, pos in pickletools.genops(stream):
        if isinstance(arg, str):
            out.add(arg)
        if pos - start > limit:
            break
    return out


def peek_weights(path: str | os.PathLike) -> str:
    """What a weights file holds, from its header only: no tensor is read and no code runs (milliseconds).

    Returns ``"detector"`` (RTMDet-Ins: released mmengine ``.ckpt``, flat state dict or our safetensors),
    ``"refiner"`` (IS-Net), or ``"unknown"`` for a readable weights file of some other model (a tagger, a depth
    network, an SD checkpoint, ...). Raises :class:`CheckpointError` for a file that is not a weights file at all
    (corrupt, truncated, random bytes). The full check happens when the file is loaded.
    """
    path, size = _weights_file(path)
    if path.suffix == ".safetensors":
        try:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > min(size - 8, 100 << 20):
                    raise ValueError(f"header length {n}")
                header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
        except (struct.error, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path} ({size} bytes): corrupt header ({exc})") from exc
        meta = header.get("__metadata__")
        meta = meta if isinstance(meta, dict) else {}
        if _META_KEY in meta:
            try:
                kind = json.loads(meta[_META_KEY]).get("kind")
            except (ValueError, TypeError, AttributeError, RecursionError):
                kind = None
            return kind if kind in ("detector", "refiner") else "unknown"
        return _peek_kind(k for k in header if k != "__metadata__")
    container = _container_format(path)
    try:
        if container == "zip":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not names:
                    raise CheckpointError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
                with z.open(names[0]) as f:
                    import io

                    strings = _pickle_strings(io.BytesIO(f.read(_PEEK_PICKLE_LIMIT)), _PEEK_PICKLE_LIMIT)
        elif container == "legacy pickle":
            strings = set()
            with open(path, "rb") as f:
                for _ in range(4):  # magic number, protocol, sys info, then the object
                    strings |= _pickle_strings(f, _PEEK_PICKLE_LIMIT)
        else:
            raise CheckpointError(
                f"{path} ({size} bytes) is not a weights file (neither a PyTorch checkpoint nor safetensors)")
    except CheckpointError:
        raise
    # RuntimeError: an encrypted zip entry; NotImplementedError: an unknown zip compression method
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, struct.error, RuntimeError, NotImplementedError) as exc:
        raise CheckpointError(f"cannot read {path} ({size} bytes): the checkpoint is truncated, corrupt or damaged ({exc})") from exc
    return _peek_kind(strings)


def _peek_kind(keys) -> str:
    """:func:`checkpoint_kind` from key names alone, stricter for detectors: other networks have ``backbone.*``
    weights too (a transformers depth model does), only RTMDet-Ins has ``bbox_head.*`` beside them."""
    keys = set(keys)
    kind = checkpoint_kind(dict.fromkeys(keys))
    if kind == "detector" and not any(k.startswith(("bbox_head.", "module.bbox_head.")) for k in keys):
        return "unknown"
    return kind


# ------------------------------------------------------------------------------------------ mmengine cfg
class _Unparsed:
    """Marker for a config value the safe evaluator does not understand (kept so parsing never fails)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __repr__(self) -> str:
        return f"<unparsed {self.source!r}>"


#: Bounds of the mmengine config reader (a released ``meta['cfg']`` is ~20 KB, nested < 10 deep, < 5,000 values):
#: source length, nesting depth, values evaluated (a name counts as the values it stands for, so ``a = [a, a]``
#: repeated cannot grow silently), number magnitude and time. Past any of them the file is a CheckpointError.
MAX_CFG_CHARS = 1 << 20
MAX_CFG_DEPTH = 64
MAX_CFG_VALUES = 200_000
MAX_CFG_NUMBER = 1e15
MAX_CFG_SECONDS = 5.0


class _ConfigReader:
    """The bounded whitelist evaluator behind :func:`parse_mmengine_config`."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.names: dict[str, Any] = {}
        self.weights: dict[str, int] = {}
        self.values = 0
        self.deadline = time.monotonic() + MAX_CFG_SECONDS

    def _count(self, n: int = 1) -> None:
        self.values += n
        if self.values > MAX_CFG_VALUES:
            raise CheckpointError(f"meta['cfg'] evaluates to more than {MAX_CFG_VALUES} values; not a model config")
        if time.monotonic() > self.deadline:
            raise CheckpointError(f"meta['cfg'] took longer than {MAX_CFG_SECONDS:g} s to read; not a model config")

    def _number(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or abs(value) > MAX_CFG_NUMBER:
                raise CheckpointError(f"meta['cfg'] holds the number {str(value)[:40]}, outside +-{MAX_CFG_NUMBER:g}")
        return value

    def _unparsed(self, node: ast.AST) -> _Unparsed:
        return _Unparsed((ast.get_source_segment(self.source, node) or type(node).__name__)[:200])

    def value(self, node: ast.AST, depth: int = 0) -> Any:
        if depth > MAX_CFG_DEPTH:
            raise CheckpointError(f"meta['cfg'] is nested more than {MAX_CFG_DEPTH} levels deep; not a model config")
        self._count()
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._number(node.value)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(e, d) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None:  # {**other}
                    base = self.value(v, d)
                    if isinstance(base, dict):
                        out.update(base)
                    continue
                key = self.value(k, d)
                if isinstance(key, (dict, list)):
                    raise CheckpointError("meta['cfg'] uses an unhashable dict key; not a model config")
                out[key] = self.value(v, d)
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            out = {}
            for kw in node.keywords:
                value = self.value(kw.value, d)
                if kw.arg is None:
                    if isinstance(value, dict):
                        out.update(value)
                else:
                    out[kw.arg] = value
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.value(node.operand, d)
            if isinstance(value, (int, float)):
                return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = self.value(node.left, d), self.value(node.right, d)
            if isinstance(left, (int, float)) and isinstance(right, (int, float)):
                op = node.op
                if isinstance(op, ast.Div) and not right:
                    return self._unparsed(node)
                result = (left + right if isinstance(op, ast.Add) else left - right if isinstance(op, ast.Sub)
                          else left * right if isinstance(op, ast.Mult) else left / right)
                return self._number(result)  # operands are bounded, so one product cannot explode
        if isinstance(node, ast.Name):
            if node.id in self.names:
                self._count(self.weights.get(node.id, 1))
                return self.names[node.id]
            return {"True": True, "False": False, "None": None}.get(node.id, _Unparsed(node.id))
        return self._unparsed(node)

    def assign(self, stmt: ast.Assign) -> None:
        start = self.values
        value = self.value(stmt.value)
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                self.names[target.id] = value
                self.weights[target.id] = max(1, self.values - start)


def parse_mmengine_config(text: str) -> dict[str, Any]:
    """Parse mmengine config source (``meta['cfg']`` of a checkpoint) with :mod:`ast`, never executing it.

    Top-level ``name = <literal>`` assignments are evaluated with a whitelist (constants, lists, tuples, dicts,
    ``dict(...)`` calls, names assigned earlier, simple arithmetic); anything else becomes an opaque marker. The
    reader is bounded (:data:`MAX_CFG_CHARS`, :data:`MAX_CFG_DEPTH`, :data:`MAX_CFG_VALUES`, :data:`MAX_CFG_NUMBER`,
    :data:`MAX_CFG_SECONDS`): a hostile config is a :class:`CheckpointError`, never a hang or a crash.
    """
    if not isinstance(text, str):
        raise CheckpointError(f"meta['cfg'] must be config source text, got {type(text).__name__}")
    if len(text) > MAX_CFG_CHARS:
        raise CheckpointError(f"meta['cfg'] is {len(text)} characters long (at most {MAX_CFG_CHARS}); not a model config")
    text = text.replace("file_client_args", "backend_args")  # what the original loader does, for old configs
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise CheckpointError(f"meta['cfg'] is not valid Python config text: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
    reader = _ConfigReader(text)
    try:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign):
                reader.assign(stmt)
    except RecursionError:
        raise CheckpointError("meta['cfg'] is nested too deeply; not a model config") from None
    return reader.names


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return default if isinstance(d, _Unparsed) else d


def _find_transform(pipeline: Any, name: str) -> dict | None:
    if isinstance(pipeline, list):
        for t in pipeline:
            if isinstance(t, dict) and str(t.get("type", "")).split(".")[-1] == name:
                return t
    return None


def detector_config_from_mmengine(cfg: dict[str, Any]) -> DetectorConfig:
    """Size an RTMDet-Ins from a parsed mmengine config, checking it describes an architecture we implement. Values of
    the wrong type or range are a :class:`CheckpointError` naming the problem (then :class:`DetectorConfig`
    range-checks every field)."""
    try:
        return _detector_config_from_mmengine(cfg)
    except CheckpointError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"detector config from meta['cfg'] is invalid: {type(exc).__name__}: "
                              f"{str(exc)[:300]}") from None


def _detector_config_from_mmengine(cfg: dict[str, Any]) -> DetectorConfig:
    if not isinstance(cfg, dict):
        raise CheckpointError(f"meta['cfg'] must parse to assignments, got {type(cfg).__name__}")
    model = cfg.get("model")
    if not isinstance(model, dict):
        raise CheckpointError("mmengine config has no `model = dict(...)` entry")
    problems = []
    if _get(model, "type") not in (None, "RTMDet"):
        problems.append(f"model.type={_get(model, 'type')!r} (expected 'RTMDet')")
    if _get(model, "backbone", "type") not in (None, "CSPNeXt"):
        problems.append(f"backbone.type={_get(model, 'backbone', 'type')!r} (expected 'CSPNeXt')")
    if _get(model, "backbone", "arch", default="P5") != "P5":
        problems.append(f"backbone.arch={_get(model, 'backbone', 'arch')!r} (expected 'P5')")
    if _get(model, "neck", "type") not in (None, "CSPNeXtPAFPN"):
        problems.append(f"neck.type={_get(model, 'neck', 'type')!r} (expected 'CSPNeXtPAFPN')")
    head = _get(model, "bbox_head", default={})
    if head.get("type") not in (None, "RTMDetInsSepBNHead", "RTMDetInsSepBNHeadCustom"):
        problems.append(f"bbox_head.type={head.get('type')!r} (expected RTMDetInsSepBNHead[Custom])")
    if not head.get("share_conv", True) or head.get("pred_kernel_size", 1) != 1 or head.get("with_objectness", False):
        problems.append("bbox_head needs share_conv=True, pred_kernel_size=1, with_objectness=False")
    if _get(model, "backbone", "use_depthwise", default=False):
        problems.append("backbone.use_depthwise=True is not supported")
    if problems:
        raise CheckpointError("unsupported detector config: " + "; ".join(problems))

    base = DetectorConfig()
    norm = _get(model, "backbone", "norm_cfg", default={}) or {}
    fields: dict[str, Any] = {
        "deepen_factor": float(_get(model, "backbone", "deepen_factor", default=1.0)),
        "widen_factor": float(_get(model, "backbone", "widen_factor", default=1.0)),
        "expand_ratio": float(_get(model, "backbone", "expand_ratio", default=0.5)),
        "channel_attention": bool(_get(model, "backbone", "channel_attention", default=True)),
        "bn_eps": float(norm.get("eps", 1e-5)) if isinstance(norm, dict) else 1e-5,
        "neck_in_channels": tuple(_get(model, "neck", "in_channels", default=base.neck_in_channels)),
        "neck_out_channels": int(_get(model, "neck", "out_channels", default=base.neck_out_channels)),
        "neck_num_csp_blocks": int(_get(model, "neck", "num_csp_blocks", default=3)),
        "num_classes": int(head.get("num_classes", 80)),
        "head_feat_channels": int(head.get("feat_channels", 256)),
        "stacked_convs": int(head.get("stacked_convs", 2)),
        "num_prototypes": int(head.get("num_prototypes", 8)),
        "dyconv_channels": int(head.get("dyconv_channels", 8)),
        "num_dyconvs": int(head.get("num_dyconvs", 3)),
        "strides": tuple(_get(head, "anchor_generator", "strides", default=(8, 16, 32))),
    }
    if _get(head, "anchor_generator", "offset", default=0) != 0:
        raise CheckpointError("only prior offset 0 is supported (anchor_generator.offset)")
    pre = _get(model, "data_preprocessor", default={}) or {}
    if pre.get("bgr_to_rgb", False):
        raise CheckpointError("data_preprocessor.bgr_to_rgb=True is not supported (the released model takes BGR)")
    if isinstance(pre.get("mean"), (list, tuple)):
        fields["mean"] = tuple(pre["mean"])
    if isinstance(pre.get("std"), (list, tuple)):
        fields["std"] = tuple(pre["std"])
    test = _get(model, "test_cfg", default=None) or head.get("test_cfg") or {}
    if isinstance(test, dict):
        for src, dst, cast in (
            ("score_thr", "score_thr", float),
            ("nms_pre", "nms_pre", int),
            ("max_per_img", "max_per_img", int),
            ("mask_thr_binary", "mask_thr_binary", float),
        ):
            if isinstance(test.get(src), (int, float)):
                fields[dst] = cast(test[src])
        if isinstance(_get(test, "nms", "iou_threshold"), (int, float)):
            fields["iou_thr"] = float(_get(test, "nms", "iou_threshold"))
    pipeline = _get(cfg, "test_dataloader", "dataset", "pipeline") or cfg.get("test_pipeline")
    resize, pad = _find_transform(pipeline, "Resize"), _find_transform(pipeline, "Pad")
    if resize and isinstance(resize.get("scale"), (list, tuple)):
        fields["det_size"] = int(max(resize["scale"]))
    if pad:
        value = _get(pad, "pad_val", "img", default=None) if isinstance(pad.get("pad_val"), dict) else pad.get("pad_val")
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, (int, float)):
            fields["pad_value"] = float(value)
    try:
        return DetectorConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"detector config from meta['cfg'] is invalid: {exc}") from exc


# ---------------------------------------------------------------------------------------------- kinds
def checkpoint_kind(state_dict: dict[str, Any]) -> str:
    """``"detector"``, ``"refiner"`` or ``"unknown"`` from the key names (non-string keys are no names)."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if any(k.startswith(("backbone.", "module.backbone.")) for k in keys):
        return "detector"
    if any(k in ("conv_in.weight", "net.conv_in.weight", "module.conv_in.weight") for k in keys):
        return "refiner"
    return "unknown"


# ---------------------------------------------------------------------------------------- strict loading
def load_state_dict_strict(model: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint") -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a readable key diff on any mismatch; unusable values
    (:func:`check_weight_values`) are refused too."""
    _raise_on_mismatch(model, state_dict, source)
    check_weight_values(state_dict, source)
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=True)


def _raise_on_mismatch(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    missing, unexpected, shapes = state_dict_diff(model, state_dict)
    expected = model.state_dict()
    if missing or unexpected or shapes:
        lines = [
            f"{source} does not match {type(model).__name__} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches; "
            f"file has {len(state_dict)} keys, model {len(expected)})"
        ]
        if missing:
            lines.append("  missing: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            lines.append("  unexpected: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
        if shapes:
            lines.append("  shape mismatches: " + "; ".join(shapes[:8]) + (" ..." if len(shapes) > 8 else ""))
        raise CheckpointError("\n".join(lines))


def check_weight_values(state_dict: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Refuse weights that can only give NaN output: non-finite values anywhere, or a negative BatchNorm variance
    (its square root is NaN). Raises :class:`CheckpointError` naming the first bad tensors."""
    bad = []
    for key, value in state_dict.items():
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.numel() == 0:
            continue
        if not bool(torch.isfinite(value).all()):
            bad.append(f"{key} (NaN/Inf)")
        elif key.endswith("running_var") and bool((value < 0).any()):
            bad.append(f"{key} (negative variance)")
        if len(bad) >= 4:
            break
    if bad:
        raise CheckpointError(f"{source} holds unusable weights: {', '.join(bad)}; the file is corrupt or was saved "
                              f"from a diverged training run")


def _alias_groups(model: nn.Module) -> dict[str, str]:
    """Map every alias key of ``model.state_dict()`` to the first key holding the same parameter or buffer (shared
    modules, as mmdet's shared head convs); by object identity, so it also works on a ``meta``-device model."""
    first: dict[int, str] = {}
    canonical: dict[str, str] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        canonical[key] = first.setdefault(id(value), key) if value.numel() else key
    return canonical


# --------------------------------------------------------------------------------------------- loading
def _our_meta(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    text = metadata[_META_KEY]
    if len(text) > MAX_CFG_CHARS:
        raise CheckpointError(f"{path}: cartoonseg metadata of {len(text)} characters; not a config")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt cartoonseg metadata: {type(exc).__name__}: {str(exc)[:200]}") from None
    if isinstance(meta, dict) and meta.get("kind") == "gt_encoder":
        raise CheckpointError(f"{path} is the GT encoder of a refiner training run (a training aid, not a network "
                              "to segment with); cartoonseg.training.refiner.load_gt_encoder reads it")
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: corrupt cartoonseg metadata: expected {{'kind': ..., 'config': {{...}}}}")
    return meta


def _config_from_meta(cls: type, meta: dict[str, Any], path: Path) -> Any:
    try:
        return cls.from_dict(meta["config"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{path}: the {cls.__name__} in its metadata is invalid: {str(exc)[:300]}") from None


def _build_checked(cls: type, config: Any, state_dict: dict[str, Tensor], source: str,
                   fill_aliases: bool = False) -> tuple[nn.Module, dict[str, Tensor]]:
    """``cls(config)`` with ``state_dict`` loaded strictly, but only after the architecture the config declares was
    checked against the file's tensors on the ``meta`` device (shapes only, no memory): a small file whose header
    declares a huge network fails with the key/shape diff before anything is allocated."""
    with torch.device("meta"):
        ghost = cls(config)
    if fill_aliases:
        state_dict = _fill_aliases(ghost, state_dict)
    _raise_on_mismatch(ghost, state_dict, source)
    check_weight_values(state_dict, source)
    model = cls(config)
    load_state_dict_strict(model, state_dict, source)
    return model, state_dict


def _fill_aliases(model: nn.Module, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    canonical = _alias_groups(model)
    out = dict(sd)
    for key, first in canonical.items():
        if key not in out and first in out:
            out[key] = out[first]
    return out


def _filtered(filter_fn, obj: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """``filter_fn(obj)`` with the file named in its :class:`CheckpointError`."""
    try:
        return filter_fn(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu") -> RTMDetIns:
    """Load an RTMDet-Ins from the released mmengine ``.ckpt``, a flat state dict or our ``.safetensors``.

    The architecture is sized from the file (``meta['cfg']`` parsed with ast, or the safetensors metadata, or the
    tensor shapes), then the weights load strictly. Returns the model in eval mode on ``device``.
    """
    path = Path(path)
    obj, metadata = read_checkpoint(path)
    if _META_KEY in metadata:
        meta = _our_meta(metadata, path)
        if meta.get("kind") != "detector":
            raise CheckpointError(f"{path} holds a {meta.get('kind')!r}, not a detector; use load_refiner")
        model, _ = _build_checked(RTMDetIns, _config_from_meta(DetectorConfig, meta, path), obj, str(path),
                                  fill_aliases=True)
        return model.eval().to(device)
    sd = _filtered(filter_mmdet_rtmdet_ins, obj, path)
    kind = checkpoint_kind(sd)
    if kind != "detector":
        hint = "; it looks like a refiner checkpoint, use load_refiner" if kind == "refiner" else ""
        raise CheckpointError(f"{path} is not an RTMDet-Ins detector checkpoint (no backbone.* keys){hint}")
    cfg_text = obj.get("meta", {}).get("cfg") if isinstance(obj.get("meta"), dict) else None
    if cfg_text is not None:
        config = detector_config_from_mmengine(parse_mmengine_config(cfg_text))
        shapes = infer_detector_config(sd, base=config)
        if shapes != config:
            diff = {
                f: (getattr(config, f), getattr(shapes, f))
                for f in config.__dataclass_fields__
                if getattr(config, f) != getattr(shapes, f)
            }
            raise CheckpointError(f"{path}: meta['cfg'] disagrees with the tensor shapes (cfg, shapes): {diff}")
    else:
        config = infer_detector_config(sd)
    model, _ = _build_checked(RTMDetIns, config, sd, str(path))
    return model.eval().to(device)


def load_refiner(path: str | os.PathLike, device: str | torch.device = "cpu") -> ISNetDIS:
    """Load an ISNetDIS refiner from the released flat ``refine_last.ckpt``, a Lightning checkpoint or our
    ``.safetensors``. Returns the model in eval mode on ``device``."""
    path = Path(path)
    obj, metadata = read_checkpoint(path)
    if _META_KEY in metadata:
        meta = _our_meta(metadata, path)
        if meta.get("kind") != "refiner":
            raise CheckpointError(f"{path} holds a {meta.get('kind')!r}, not a refiner; use load_detector")
        model, _ = _build_checked(ISNetDIS, _config_from_meta(RefinerConfig, meta, path), obj, str(path))
        return model.eval().to(device)
    sd = _filtered(filter_isnet, obj, path)
    kind = checkpoint_kind(sd)
    if kind != "refiner":
        hint = "; it looks like a detector checkpoint, use load_detector" if kind == "detector" else ""
        raise CheckpointError(f"{path} is not an IS-Net refiner checkpoint (no conv_in.weight){hint}")
    model, _ = _build_checked(ISNetDIS, infer_refiner_config(sd), sd, str(path))
    return model.eval().to(device)


# ---------------------------------------------------------------------------------------------- writing
def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_weights(model: RTMDetIns | ISNetDIS, path: str | os.PathLike, *, overwrite: bool = True,
                 inputs: tuple = ()) -> Path:
    """Save a model in our format: safetensors, aliased tensors stored once, the JSON config in the header.

    Written atomically through :mod:`cartoonseg.outputs` (an interrupted save never leaves a half file at ``path``);
    ``overwrite=False`` refuses to replace a file cartoonseg did not write, and ``inputs`` are never replaced.
    The file gets the mode any new file gets (0644 under umask 022)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .outputs import output_file

    if isinstance(model, RTMDetIns):
        kind = "detector"
    elif isinstance(model, ISNetDIS):
        kind = "refiner"
    else:
        raise TypeError(f"save_weights takes an RTMDetIns or ISNetDIS, got {type(model).__name__}")
    canonical = _alias_groups(model)
    sd = model.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items() if canonical[k] == k}
    meta = {"kind": kind, "config": model.config.to_dict(), "format_version": FORMAT_VERSION}
    path = Path(path)
    with output_file(path, inputs=inputs, overwrite=overwrite) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
        except SafetensorError as exc:  # its own type, unknown to the CLIs' one-line policy (a traceback); an OS
            # error in its message (disk full, permission) is then told by output_file, naming what was kept
            raise CheckpointError(f"cannot write {path}: safetensors refused to save the weights ({exc}); nothing "
                                  f"was written") from exc
        os.chmod(tmp, _file_mode())  # safetensors writes 0600; a weights file is as readable as any other file
    return path


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> tuple[str, Path]:
    """Convert any supported detector or refiner file to our safetensors format. Returns (kind, dst).

    ``dst`` must end with ``.safetensors`` (the loaders tell formats by suffix) and is never ``src``; an existing
    ``dst`` is replaced only when cartoonseg wrote it, or with ``overwrite`` (see :mod:`cartoonseg.outputs`)."""
    from .outputs import check_not_input

    src, dst = Path(src), Path(dst)
    check_not_input(dst, [src])
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"convert writes cartoonseg safetensors files: name the output *.safetensors, got "
                              f"{dst} (a {dst.suffix or 'suffix-less'} name would not load)")
    obj, metadata = read_checkpoint(src)
    if _META_KEY in metadata:
        kind = _our_meta(metadata, src).get("kind")
    else:
        kind = checkpoint_kind(obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj)
    if kind == "detector":
        model: RTMDetIns | ISNetDIS = load_detector(src)
    elif kind == "refiner":
        model = load_refiner(src)
    else:
        raise CheckpointError(f"{src}: neither an RTMDet-Ins detector nor an IS-Net refiner checkpoint")
    return kind, save_weights(model, dst, overwrite=overwrite, inputs=(src,))
