"""What every model's checkpoint filter shares (the filters themselves live next to their models, timm style:
:func:`~cartoonseg.models.rtmdet_ins.filter_mmdet_rtmdet_ins`, :func:`~cartoonseg.models.isnet.filter_isnet`,
:func:`~cartoonseg.models.swinv2.filter_timm_swinv2`): the error type, prefix stripping and the key diff of a
strict load."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ["CheckpointError", "state_dict_diff", "strip_prefix", "tensor_entries"]


class CheckpointError(RuntimeError):
    """A weights file is missing, unreadable, of the wrong kind, or does not match the architecture."""


def tensor_entries(state_dict: Mapping) -> dict[str, Tensor]:
    """The tensor entries of a checkpoint's state dict (other values are dropped); :class:`CheckpointError` naming
    the key when a tensor sits under a key that is not a string (no saved module has one)."""
    out = {}
    for key, value in state_dict.items():
        if isinstance(value, Tensor):
            if not isinstance(key, str):
                raise CheckpointError(f"the state dict has a tensor under the key {key!r} ({type(key).__name__}); "
                                      f"weights are stored under string names")
            out[key] = value
    return out


def strip_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` (``module.`` of DDP, ...) from every key, when every key has it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def state_dict_diff(model: nn.Module, state_dict: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, shape mismatches)`` of ``state_dict`` against ``model``; all empty = a strict load
    will succeed. Mismatches read ``"key: file (..) vs model (..)"``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, shapes
