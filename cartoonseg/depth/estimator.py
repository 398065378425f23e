"""Monocular depth estimation: Depth Anything V2 and ZoeDepth (through ``transformers``) and Marigold (through
``diffusers``), their download, and depth maps from elsewhere.

Paper: "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943), §6.1: the 3D Ken Burns
application starts from an initial depth estimate (the original code offered LeReS, ZoeDepth and Marigold). The
default estimator is Depth Anything V2 (Yang et al., 2024, "Depth Anything V2"), run through the
``transformers`` class ``DepthAnythingForDepthEstimation``; pre-processing mirrors the published
``DPTImageProcessor`` settings (keep aspect ratio, sides a multiple of 14, ImageNet normalisation) but is done
in numpy/PIL so no torchvision is needed. ZoeDepth (:mod:`~cartoonseg.depth.zoedepth`) and Marigold
(:mod:`~cartoonseg.depth.marigold`) run through their library classes as published.

Models (``DEPTH_MODELS``; weights on the Hugging Face hub; each is downloaded file by file from a checked list):

* ``small``: ``depth-anything/Depth-Anything-V2-Small-hf``, 24.8 M parameters, **Apache-2.0** (the default);
* ``base``: ``depth-anything/Depth-Anything-V2-Base-hf``, 97.5 M, **CC-BY-NC-4.0 (non-commercial)**;
* ``large``: ``depth-anything/Depth-Anything-V2-Large-hf``, 335 M, **CC-BY-NC-4.0 (non-commercial)**;
* ``zoedepth``: ``Intel/zoedepth-nyu-kitti`` (ZoeD_M12_NK, BEiT-L backbone), 345 M, **MIT**: metric depth, the
  original's ``zoe`` choice (it used ZoeD_M12_N);
* ``marigold-lcm``: ``prs-eth/marigold-depth-lcm-v1-0``, about 1.3 B (a Stable Diffusion 2 UNet), the original's
  ``marigold`` choice (4 steps, ensemble of 5, 768 px); licence: see its model card;
* ``marigold``: ``prs-eth/marigold-depth-v1-1``, about 1.3 B, **CreativeML Open RAIL++-M**: the current Marigold
  (DDIM, 4 steps).

Conventions. Relative Depth Anything models predict affine-invariant *inverse* depth, so the natural output is a
disparity-like map. :class:`DepthResult` holds, at the input image size:

* ``disparity``: float32 ``[H,W]`` in [0,1], **larger = nearer** (min-max normalised per image); this is the
  convention of ComfyUI depth preprocessors, and the one depth IMAGEs use between nodes;
* ``depth``: ``1 - disparity``, relative depth in [0,1], larger = farther (the original code inverted its
  normalised estimates the same way); neither is metric;
* ``raw``: the model's un-normalised prediction resized to the image.

A depth map made by any other node pack (an IMAGE) is accepted by :func:`disparity_from_image`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import precision_of, refuse_cpu_fp16, resolve_dtype
from .._optional import require
from ..hub import WeightsUnavailableError, check_download_allowed, hub_url
from .result import DepthResult, as_uint8_rgb, normalise

__all__ = [
    "DEPTH_MODELS",
    "FAMILIES",
    "DepthEstimator",
    "DepthModelSpec",
    "DepthResult",
    "depth_to_image",
    "disparity_from_image",
    "family_of",
    "load_depth_model",
    "resolve_depth_model",
]

_MODEL_FILES = ("config.json", "model.safetensors")
_OPTIONAL_FILES = ("preprocessor_config.json",)
#: The files of a diffusers Marigold depth pipeline (the Stable Diffusion 2 layout), checked after a download.
MARIGOLD_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
#: Tokenizer files: the slow layout (vocab + merges) or the fast one (tokenizer.json); one of them must be there.
MARIGOLD_OPTIONAL_FILES = (
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer.json",
)
FAMILIES = ("depth-anything", "zoedepth", "marigold")


@dataclasses.dataclass(frozen=True)
class DepthModelSpec:
    """A published depth model: hub repo, revision and licence (shown to users when they pick it), the family that
    runs it and the files a complete download has.

    Attributes:
        repo_id: Hugging Face repo.
        licence: shown to users.
        params: parameter count, for display.
        revision: hub revision.
        family: ``depth-anything`` (transformers, the DPT pre-processing), ``zoedepth`` (transformers, the
            ZoeDepth processor) or ``marigold`` (diffusers pipeline).
        files: required files (relative paths); the download is refused without any of them.
        optional_files: fetched when the repo has them.
        steps, ensemble, processing_resolution: Marigold's defaults (0 = the pipeline's own).
    """

    repo_id: str
    licence: str
    params: str
    revision: str = "main"
    family: str = "depth-anything"
    files: tuple[str, ...] = _MODEL_FILES
    optional_files: tuple[str, ...] = _OPTIONAL_FILES
    steps: int = 0
    ensemble: int = 1
    processing_resolution: int = 0

    @property
    def folder_name(self) -> str:
        """Local folder name the model is stored under (the repo name)."""
        return self.repo_id.split("/")[-1]

    @property
    def url(self) -> str:
        return f"{hub_url(self.repo_id, '', self.revision).rsplit('/resolve/', 1)[0]}/tree/{self.revision}"


DEPTH_MODELS: dict[str, DepthModelSpec] = {
    "small": DepthModelSpec("depth-anything/Depth-Anything-V2-Small-hf", "Apache-2.0", "24.8M"),
    "base": DepthModelSpec("depth-anything/Depth-Anything-V2-Base-hf", "CC-BY-NC-4.0 (non-commercial)", "97.5M"),
    "large": DepthModelSpec("depth-anything/Depth-Anything-V2-Large-hf", "CC-BY-NC-4.0 (non-commercial)", "335M"),
    "zoedepth": DepthModelSpec("Intel/zoedepth-nyu-kitti", "MIT", "345M", family="zoedepth",
                               files=_MODEL_FILES + ("preprocessor_config.json",), optional_files=()),
    "marigold-lcm": DepthModelSpec("prs-eth/marigold-depth-lcm-v1-0", "see the model card", "1.3B", family="marigold",
                                   files=MARIGOLD_FILES, optional_files=MARIGOLD_OPTIONAL_FILES, steps=4, ensemble=5,
                                   processing_resolution=768),
    "marigold": DepthModelSpec("prs-eth/marigold-depth-v1-1", "CreativeML Open RAIL++-M", "1.3B", family="marigold",
                               files=MARIGOLD_FILES, optional_files=MARIGOLD_OPTIONAL_FILES, steps=4, ensemble=1,
                               processing_resolution=768),
}


def family_of(path: str | os.PathLike) -> str | None:
    """The family of a local model folder (None when it is not one): a diffusers ``model_index.json`` naming a
    Marigold depth pipeline, or a transformers ``config.json`` (``model_type`` ``zoedepth``, else Depth Anything or
    another DPT-style depth model)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        try:
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return "marigold" if isinstance(index, dict) and "Marigold" in str(index.get("_class_name", "")) else None
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return "zoedepth" if isinstance(config, dict) and config.get("model_type") == "zoedepth" else "depth-anything"
    return None


def _required_files(family: str | None) -> tuple[str, ...]:
    return MARIGOLD_FILES if family == "marigold" else _MODEL_FILES


def _is_model_dir(path: Path, files: Sequence[str] | None = None) -> bool:
    if not path.is_dir():
        return False
    files = files if files is not None else _required_files(family_of(path))
    return all((path / f).is_file() for f in files) and _tokenizer_ok(path, files)


def _tokenizer_ok(path: Path, files: Sequence[str]) -> bool:
    """A Marigold pipeline needs its tokenizer: tokenizer.json, or vocab.json + merges.txt."""
    if "tokenizer/tokenizer_config.json" not in files:
        return True
    tok = path / "tokenizer"
    return (tok / "tokenizer.json").is_file() or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())


def _spec_for(name: str) -> DepthModelSpec | None:
    key = name.strip().lower()
    if key in DEPTH_MODELS:
        return DEPTH_MODELS[key]
    for spec in DEPTH_MODELS.values():
        if name in (spec.repo_id, spec.folder_name):
            return spec
    return None


def resolve_depth_model(
    name_or_path: str | os.PathLike = "small",
    *,
    search_dirs: Sequence[str | os.PathLike] = (),
    download_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
) -> Path:
    """Local folder of a depth model, downloading it when allowed.

    Args:
        name_or_path: an existing model folder; a key of :data:`DEPTH_MODELS` (``small``, ``zoedepth``,
            ``marigold``, ...); or a hub repo id / repo name (``depth-anything/Depth-Anything-V2-Small-hf``). Other
            repo ids of the Depth Anything layout work too.
        search_dirs: folders searched (in order) for a sub-folder named after the repo (e.g.
            ``Depth-Anything-V2-Small-hf``).
        download_dir: where a download goes (default: the first search dir, else ``~/.cache/cartoonseg/depth``);
            the model lands in ``download_dir/<repo name>``.
        allow_download: False never touches the network. ``HF_HUB_OFFLINE=1`` also forbids it.

    Raises:
        WeightsUnavailableError: not on disk and download disallowed, offline or failed; names the URL and the
            folder the files are expected in.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        family = family_of(path)
        if family is None or not _is_model_dir(path):
            files = _required_files(family)
            missing = ([_marker_problem(path)] if family is None and _marker_problem(path) else
                       [f for f in files if not (path / f).is_file()]
                       or ["the tokenizer (tokenizer.json or vocab.json + merges.txt)"])
            raise WeightsUnavailableError(
                f"depth model folder {path} lacks {' / '.join(missing)}; it needs the transformers layout "
                "(config.json, model.safetensors, optional preprocessor_config.json) or a diffusers Marigold "
                "pipeline (model_index.json and its component folders)"
            )
        return path
    name = str(name_or_path)
    spec = _spec_for(name)
    if spec is None:
        if "/" in name and not path.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
            spec = DepthModelSpec(name, "see the model card", "?")
        else:
            raise WeightsUnavailableError(
                f"depth model {name!r} is neither a folder nor a known model; known: {', '.join(DEPTH_MODELS)} "
                "or a hub repo id such as depth-anything/Depth-Anything-V2-Small-hf"
            )
    for folder in search_dirs:
        candidate = Path(folder).expanduser() / spec.folder_name
        if _is_model_dir(candidate, spec.files):
            return candidate
    base = Path(download_dir or (search_dirs[0] if search_dirs else Path.home() / ".cache" / "cartoonseg" / "depth"))
    target = base.expanduser() / spec.folder_name
    if _is_model_dir(target, spec.files):  # an earlier download (checked when it was made)
        return target
    how_to = (
        f"download {', '.join(spec.files + spec.optional_files)} from {spec.url} "
        f"(licence: {spec.licence}) into {target}"
    )
    check_download_allowed(f"depth model {spec.repo_id}", how_to, allow_download, url=spec.url)
    from huggingface_hub import snapshot_download
    # The download lands in a private temporary folder next to the target, is checked there, and only then takes
    # the target's name (one atomic rename), so a failed, killed or truncated download never leaves a folder that
    # later loads as if it were complete. Exactly the listed files are fetched (and checked afterwards).
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder_name}.partial-", dir=target.parent))
    try:
        try:
            snapshot_download(
                repo_id=spec.repo_id,
                revision=spec.revision,
                local_dir=str(tmp),
                allow_patterns=list(spec.files + spec.optional_files),
            )
        except Exception as exc:  # network errors, 404, auth: the manual route is the answer to all of them
            raise WeightsUnavailableError(
                f"downloading {spec.repo_id} failed ({type(exc).__name__}: {exc}); {how_to}"
            ) from exc
        problem = _download_problem(tmp, spec.files)
        if problem:
            raise WeightsUnavailableError(f"download of {spec.repo_id} is incomplete ({problem}); {how_to}")
        _place(tmp, target, spec.files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _marker_problem(path: Path) -> str | None:
    """Why the folder's ``model_index.json`` / ``config.json`` does not name a depth model (None when it does or is
    absent), for the refusal of :func:`resolve_depth_model`."""
    for marker in ("model_index.json", "config.json"):
        if not (path / marker).is_file():
            continue
        try:
            data = json.loads((path / marker).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"a readable {marker} (it is not valid JSON: {exc})"
        if not isinstance(data, dict):
            return f"a readable {marker} (it is not a JSON object)"
        if marker == "model_index.json":
            return f"a Marigold depth pipeline (its model_index.json names {data.get('_class_name')!r})"
        return None
    return None


def _download_problem(folder: Path, files: Sequence[str] = _MODEL_FILES) -> str | None:
    """Why ``folder`` is not a complete model download (None when it is): required files missing, a JSON file that
    is not a JSON object, or weights whose safetensors header does not match the file (truncated)."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    if not _tokenizer_ok(folder, files):
        return "missing the tokenizer (tokenizer/tokenizer.json or tokenizer/vocab.json + merges.txt)"
    for path in sorted(p for p in folder.rglob("*.json") if ".cache" not in p.relative_to(folder).parts):
        name = path.relative_to(folder).as_posix()
        try:
            if not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                return f"{name} is not a JSON object"
        except (OSError, ValueError) as exc:
            return f"{name} is not valid JSON ({exc})"
    from safetensors import safe_open

    for name in (f for f in files if f.endswith(".safetensors")):
        try:
            with safe_open(str(folder / name), framework="pt", device="cpu") as fh:
                if not list(fh.keys()):
                    return f"{name} holds no tensors"
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for truncated files
            return f"{name} is unreadable ({type(exc).__name__}: {exc})"
    return None


def _place(tmp: Path, target: Path, files: Sequence[str] = _MODEL_FILES) -> None:
    """Give the checked download in ``tmp`` the name ``target``: one folder rename when ``target`` does not exist;
    otherwise (an incomplete folder left by hand or by an older version) file by file with the required files
    last, the marker file (``config.json`` / ``model_index.json``) the very last, so the folder counts as a model
    only once every file is in place."""
    hub_meta = tmp / ".cache"
    if hub_meta.is_dir():
        shutil.rmtree(hub_meta, ignore_errors=True)
    if not target.exists():
        try:
            os.replace(tmp, target)
            return
        except OSError:
            if not target.is_dir():  # e.g. another process placed its own copy meanwhile: fall through and merge
                raise
    if _is_model_dir(target, files):
        return  # another process finished the same download first
    markers = ("config.json", "model_index.json")
    order = sorted((p for p in tmp.rglob("*") if p.is_file()),
                   key=lambda p: (p.relative_to(tmp).as_posix() in files, p.relative_to(tmp).as_posix() in markers))
    for src in order:
        dest = target / src.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)


def _constrain(value: float, multiple: int) -> int:
    out = int(round(value / multiple) * multiple)
    return max(out, multiple)


class DepthEstimator:
    """A ``transformers`` depth model plus its pre/post-processing. Call it on one RGB image.

    Args:
        model: a ``DepthAnythingForDepthEstimation`` (or another ``*ForDepthEstimation`` whose forward takes
            ``pixel_values`` and returns ``predicted_depth``) in eval mode.
        size: target (height, width) of the processor; with ``keep_aspect_ratio`` the image is scaled by the
            factor closest to 1 that fits one of them (the DPT processor rule), then rounded to ``multiple``.
        multiple: both network sides are multiples of this (14 for the DINOv2 backbone).
        mean, std: normalisation of the [0,1] RGB input.
        keep_aspect_ratio: see ``size``.
        metric: the model predicts metric depth (larger = farther) instead of relative inverse depth.
        dtype: compute dtype (float32, or bfloat16 for the fast CPU mode; never float16 on CPU).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        size: tuple[int, int] = (518, 518),
        multiple: int = 14,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        keep_aspect_ratio: bool = True,
        metric: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model = model.eval()
        self.size = (int(size[0]), int(size[1]))
        self.multiple = int(multiple)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.keep_aspect_ratio = keep_aspect_ratio
        self.metric = metric
        self.dtype = dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> DepthEstimator:
        self.model.to(device)
        return self

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the image is resized to before the network (the DPT processor rule)."""
        sh, sw = self.size[0] / height, self.size[1] / width
        if self.keep_aspect_ratio:
            if abs(1 - sw) < abs(1 - sh):
                sh = sw
            else:
                sw = sh
        return _constrain(sh * height, self.multiple), _constrain(sw * width, self.multiple)

    def preprocess(self, image) -> Tensor:
        """One RGB image (uint8 ``[H,W,3]`` numpy/torch or float ``[H,W,3]`` in [0,1]) -> ``[1,3,h,w]`` float."""
        from PIL import Image

        rgb = as_uint8_rgb(image)
        h, w = self.network_size(rgb.shape[0], rgb.shape[1])
        resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
        x = torch.from_numpy(resized).permute(2, 0, 1)
        return ((x - self.mean) / self.std)[None]

    @torch.inference_mode()
    def __call__(self, image) -> DepthResult:
        """Depth of one image. See :class:`DepthResult` for the outputs (all ``[H,W]`` at the input size)."""
        rgb = as_uint8_rgb(image)
        height, width = rgb.shape[:2]
        x = self.preprocess(rgb).to(self.device)
        cpu_dtype = resolve_dtype(precision_of(self.dtype), "cpu") if self.device.type == "cpu" else None
        if cpu_dtype is not None and cpu_dtype != torch.float32:
            with torch.autocast("cpu", dtype=cpu_dtype):
                pred = self.model(pixel_values=x).predicted_depth
        elif cpu_dtype is not None:  # fp32 on CPU (asked for, or the fallback of an unsupported bf16)
            pred = self.model(pixel_values=x).predicted_depth
        else:
            pred = self.model(pixel_values=x.to(self.dtype)).predicted_depth
        pred = pred.float()
        if pred.dim() == 3:
            pred = pred[:, None]
        raw = F.interpolate(pred, size=(height, width), mode="bicubic", align_corners=False)[0, 0].cpu()
        raw = torch.nan_to_num(raw, nan=0.0)
        if self.metric:
            disp = 1.0 / raw.clamp_min(1e-6)
        else:
            disp = raw
        disparity = normalise(disp)
        return DepthResult(disparity=disparity, depth=1.0 - disparity, raw=raw)


def _require_family(family: str | None):
    """The optional package a depth family runs on (``transformers``; ``diffusers`` for Marigold), or
    :class:`MissingDependencyError` naming the extra that installs it."""
    if family == "marigold":
        return require("diffusers", extra="diffusion", purpose="Marigold depth")
    name = "ZoeDepth" if family == "zoedepth" else "Depth Anything V2"
    return require("transformers", extra="depth", purpose=f"depth estimation ({name})")


def load_depth_model(
    name_or_path: str | os.PathLike = "small",
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    search_dirs: Sequence[str | os.PathLike] = (),
    download_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    steps: int | None = None,
    ensemble: int | None = None,
    processing_resolution: int | None = None,
    seed: int = 0,
):
    """Load a depth model as an estimator: call it on one RGB image to get a :class:`DepthResult`.

    Resolution follows :func:`resolve_depth_model`; loading never touches the network (local files only). The
    family is read from the folder: Depth Anything (and other DPT-style ``transformers`` depth models) give a
    :class:`DepthEstimator` (processor settings from ``preprocessor_config.json`` when present, else 518, multiple
    of 14, ImageNet mean/std); ZoeDepth a :class:`~cartoonseg.depth.zoedepth.ZoeDepthEstimator`; a Marigold
    pipeline a :class:`~cartoonseg.depth.marigold.MarigoldEstimator` (needs ``diffusers``, the ``diffusion`` extra).

    Args:
        name_or_path: folder, a key of :data:`DEPTH_MODELS` or a hub repo id.
        device: torch device.
        dtype: ``torch.float32`` (default), ``torch.bfloat16`` or ``torch.float16``, resolved by
            :mod:`cartoonseg.device`: on a device without kernels for it, fp32 is used with one warning (a CPU
            without bf16 kernels; float16 is refused on CPU).
        steps, ensemble, processing_resolution, seed: Marigold's sampling (default: the model's entry in
            :data:`DEPTH_MODELS`, e.g. the original's 4 steps, ensemble of 5, 768 px for ``marigold-lcm``).

    Raises:
        WeightsUnavailableError: files missing and not downloadable.
        ValueError: a folder that is not a depth-estimation model, or float16 on CPU.
        MissingDependencyError: ``transformers`` (Depth Anything, ZoeDepth) or ``diffusers`` (Marigold) missing;
            the message names the extra to install.
    """
    from .marigold import check_marigold_settings

    check_marigold_settings(steps=steps, ensemble=ensemble, processing_resolution=processing_resolution)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    refuse_cpu_fp16(dtype, device)
    dtype = resolve_dtype(precision_of(dtype), device)  # bf16 on a CPU without bf16 kernels -> fp32, one warning
    known = _spec_for(str(name_or_path))
    family = known.family if known else family_of(name_or_path)
    if known or family:  # before any download: the missing package as a one-line error (others: after resolving)
        _require_family(family)
    folder = resolve_depth_model(name_or_path, search_dirs=search_dirs, download_dir=download_dir, allow_download=allow_download)
    family = family_of(folder)
    problem = _download_problem(folder, _required_files(family))  # a truncated or damaged file: one clear error
    if problem:
        raise ValueError(f"depth model folder {folder} is damaged: {problem}; replace the file (e.g. download the "
                         "model again into an empty folder)")
    if family == "marigold":
        from .marigold import load_marigold

        spec = _spec_for(str(name_or_path)) or _spec_for(folder.name)
        return load_marigold(
            folder, device=device, dtype=dtype,
            steps=steps if steps is not None else (spec.steps if spec else 0),
            ensemble=ensemble if ensemble is not None else (spec.ensemble if spec else 1),
            processing_resolution=(processing_resolution if processing_resolution is not None
                                   else (spec.processing_resolution if spec else 0)),
            seed=seed,
        )
    transformers = _require_family(family)
    if family == "zoedepth":
        from .zoedepth import load_zoedepth

        return load_zoedepth(folder, device=device, dtype=dtype)
    AutoConfig, AutoModelForDepthEstimation = transformers.AutoConfig, transformers.AutoModelForDepthEstimation
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        model = AutoModelForDepthEstimation.from_pretrained(folder, config=config, local_files_only=True)
    except ValueError as exc:
        raise ValueError(f"{folder} is not a transformers depth-estimation model (model_type={config.model_type!r}): {exc}") from exc
    model.eval()
    kwargs: dict = {}
    proc = folder / "preprocessor_config.json"
    if proc.is_file():
        cfg = json.loads(proc.read_text())
        size = cfg.get("size", {})
        if isinstance(size, dict) and "height" in size and "width" in size:
            kwargs["size"] = (int(size["height"]), int(size["width"]))
        elif isinstance(size, int):
            kwargs["size"] = (size, size)
        if "ensure_multiple_of" in cfg:
            kwargs["multiple"] = int(cfg["ensure_multiple_of"])
        if "keep_aspect_ratio" in cfg:
            kwargs["keep_aspect_ratio"] = bool(cfg["keep_aspect_ratio"])
        if cfg.get("image_mean") is not None:
            kwargs["mean"] = tuple(cfg["image_mean"])
        if cfg.get("image_std") is not None:
            kwargs["std"] = tuple(cfg["image_std"])
    metric = getattr(config, "depth_estimation_type", "relative") == "metric"
    if dtype != torch.float32 and torch.device(device).type != "cpu":
        model.to(dtype)
    model.to(device)
    return DepthEstimator(model, metric=metric, dtype=dtype, **kwargs)


def disparity_from_image(depth_image, size: tuple[int, int] | None = None, *, invert: bool = False) -> Tensor:
    """A depth map made elsewhere (e.g. a ComfyUI depth IMAGE) as a disparity ``[H,W]`` float32.

    Args:
        depth_image: ``[H,W]``, ``[H,W,C]`` (channels averaged; alpha ignored) or ``[1,H,W,C]``; uint8 or float.
            Convention: larger = nearer, as ComfyUI depth preprocessors produce; pass ``invert=True`` for
            maps where larger = farther.
        size: (H, W) to resize to (bilinear), e.g. the instance mask size; ComfyUI depth nodes sometimes round
            sizes to even numbers.
        invert: flip the convention (``1 - x`` after scaling to [0,1]).

    Returns:
        float32 ``[H,W]``; uint8 input is scaled to [0,1], float input is kept (NaN -> 0).
    """
    t = torch.as_tensor(depth_image).detach().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one depth frame, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() == 3:
        c = t.shape[-1]
        if c == 4:
            t = t[..., :3]
        elif c not in (1, 3):
            raise ValueError(f"depth image must have 1, 3 or 4 channels, got shape {tuple(t.shape)}")
        t = t.float().mean(-1) if t.dtype != torch.uint8 else t.float().mean(-1) / 255.0
    elif t.dim() == 2:
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    else:
        raise ValueError(f"depth image must be [H,W] or [H,W,C], got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("depth image is empty")
    t = torch.nan_to_num(t, nan=0.0)
    if invert:
        t = 1.0 - t
    if size is not None and tuple(t.shape) != tuple(size):
        t = F.interpolate(t[None, None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[0, 0]
    return t.contiguous()


def depth_to_image(disparity: Tensor) -> Tensor:
    """Grey ComfyUI-style depth IMAGE ``[H,W,3]`` in [0,1] (larger = nearer) from a disparity ``[H,W]``."""
    d = torch.nan_to_num(disparity.float(), nan=0.0).clamp(0, 1)
    return d[..., None].expand(-1, -1, 3).contiguous()
