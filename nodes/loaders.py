"""ComfyUI loader node for the CartoonSegmentation instance segmenter (RTMDet-Ins detector + IS-Net refiner).

Weights are the ones released with "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943)
on the Hugging Face repo ``dreMaz/AnimeInstanceSegmentation`` (``rtmdetl_e60.ckpt``, ``refine_last.ckpt``), or any
file ``cartoonseg.load_detector`` / ``cartoonseg.load_refiner`` accept, placed under ``ComfyUI/models/cartoonseg``
(or a ``cartoonseg:`` entry of ``extra_model_paths.yaml``). Missing released files are downloaded by
``cartoonseg.resolve_weights`` (sha256 checked, ``HF_HUB_OFFLINE`` respected) only when the node is executed and
``auto_download`` is on.

The node returns a :class:`CartoonSegModel` (type ``CARTOONSEG_MODEL``), a model holder on ComfyUI's model
management (``nodes/_comfy.py``): the files are resolved and their headers checked here, the weights are read when a
node first needs them, and ComfyUI's "Unload Models" / ``POST /free`` / memory pressure release them while they are
on the device (weights handed back to RAM after a node, ``keep_loaded`` off, go with the node cache).
"""

from __future__ import annotations

import os
from functools import partial

import torch

from cartoonseg.device import PRECISION_CHOICES as PRECISIONS
from cartoonseg.hub import RELEASED_WEIGHTS

from . import _comfy
from ._comfy import DEVICES

CATEGORY = f"{_comfy.CATEGORY}/loaders"
# node-only: "fast" prepares the loaded networks in place (cartoonseg.models.fuse.prepare_for_inference)
OPTIMIZE = ("fast", "exact")
NO_REFINER = "none"
# the released file names, the widgets' defaults
RELEASED_DETECTOR = RELEASED_WEIGHTS["detector"].filename
RELEASED_REFINER = RELEASED_WEIGHTS["refiner"].filename


def _read_networks(detector_path: str, refiner_path: str, optimize: str) -> torch.nn.ModuleDict:
    """Read the detector (and refiner) onto the CPU; ``optimize="fast"`` prepares them in place for inference."""
    import cartoonseg

    nets = torch.nn.ModuleDict({"detector": cartoonseg.load_detector(detector_path, device="cpu")})
    if refiner_path:
        nets["refiner"] = cartoonseg.load_refiner(refiner_path, device="cpu")
    if optimize == "fast":  # the loaded networks only ever run inference: fold in place, no second copy
        from cartoonseg.models.fuse import prepare_for_inference

        for module in nets.values():
            prepare_for_inference(module)
    return nets


class CartoonSegModel(_comfy.ModelHolder):
    """The ``CARTOONSEG_MODEL`` payload: detector + optional refiner, held on ComfyUI's model management
    (:class:`nodes._comfy.ModelHolder`: read from disk when a node first needs them, placed on the device by
    ``load_models_gpu``, dropped when ComfyUI unloads models).

    Attributes:
        detector / refiner: the RTMDet-Ins / IS-Net ``nn.Module`` (reading them loads the weights; ``refiner`` is
            None without one).
        device / offload_device / keep_loaded: see :class:`nodes._comfy.ModelHolder`.
        precision: ``"fp32" | "fp16" | "bf16"`` passed to ``cartoonseg.Segmenter``.
        optimize: ``"fast"`` (networks prepared in place: BN folded, channels-last) or ``"exact"`` (reference op
            order, bit-identical to the original implementation).
        detector_path / refiner_path: the files (for error messages and the UI).
    """

    def __init__(self, detector_path, refiner_path="", *, device=None, offload_device=None, precision="fp32",
                 keep_loaded=False, optimize="fast", networks: torch.nn.ModuleDict | None = None) -> None:
        if optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
        self.detector_path = str(detector_path)
        self.refiner_path = str(refiner_path or "")
        self.precision = precision
        self.optimize = optimize
        self._has_refiner = bool(self.refiner_path) if networks is None else "refiner" in networks
        if networks is None:
            load = partial(_read_networks, self.detector_path, self.refiner_path, optimize)
        else:
            load = partial(lambda nets: nets, networks)
        name = os.path.basename(self.detector_path) + (f" + {os.path.basename(self.refiner_path)}"
                                                       if self.refiner_path else "")
        super().__init__(load, name=name or "CartoonSeg networks", device=device, offload_device=offload_device,
                         keep_loaded=keep_loaded, owns_weights=networks is None,
                         files=(self.detector_path, self.refiner_path) if networks is None else ())

    @classmethod
    def from_networks(cls, detector: torch.nn.Module, refiner: torch.nn.Module | None = None, **kwargs):
        """A holder over networks already in memory (scripts, tests): they stay the caller's, so a release (ComfyUI
        unloading models) only moves them to the offload device and the next node uses them again."""
        nets = torch.nn.ModuleDict({"detector": detector})
        if refiner is not None:
            nets["refiner"] = refiner
        return cls(kwargs.pop("detector_path", ""), kwargs.pop("refiner_path", ""), networks=nets, **kwargs)

    @property
    def has_refiner(self) -> bool:
        return self._has_refiner

    @property
    def detector(self) -> torch.nn.Module:
        return self.payload()["detector"]

    @property
    def refiner(self) -> torch.nn.Module | None:
        nets = self.payload()
        return nets["refiner"] if "refiner" in nets else None

    def segmenter(self, *, use_refiner: bool = True, **kwargs):
        """A ``cartoonseg.Segmenter`` over these networks; ``kwargs`` are its runtime knobs
        (``det_size``, ``score_thr``, ``mask_thr``, ``refine_size``, ``max_instances``)."""
        import cartoonseg

        refiner = self.refiner if use_refiner else None
        fast = self.optimize == "fast"
        return cartoonseg.Segmenter(self.detector, refiner=refiner, precision=self.precision, fuse=fast,
                                    channels_last=fast, **kwargs)

    def __repr__(self) -> str:
        ref = os.path.basename(self.refiner_path) if self.has_refiner else "none"
        return (f"CartoonSegModel(detector={os.path.basename(self.detector_path)!r}, refiner={ref!r}, "
                f"device={self.device}, precision={self.precision}, optimize={self.optimize}, "
                f"keep_loaded={self.keep_loaded}, {'loaded' if self.loaded else 'not loaded'})")


KIND_WORDS = {"detector": "RTMDet-Ins detector", "refiner": "IS-Net mask refiner"}
_KINDS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> peek result: a few bytes per file, no weights


def file_kind(path: str) -> str:
    """``"detector" | "refiner" | "unknown" | "unreadable"`` of a weights file, from its header only (a few ms),
    remembered until the file changes."""
    from cartoonseg.checkpoint import CheckpointError, peek_weights

    try:
        st = os.stat(path)
    except OSError:
        return "unreadable"
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _KINDS:
        try:
            _KINDS[key] = peek_weights(path)
        except (CheckpointError, OSError, ValueError):
            _KINDS[key] = "unreadable"
    return _KINDS[key]


def weights_choices(kind: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Dropdown of a loader: ``extra`` entries, the released file name (downloaded when missing), then the files
    under ``models/cartoonseg`` whose header says they are a ``kind`` network (depth and tagger weights, other
    models and unreadable files are left out)."""
    released = RELEASED_DETECTOR if kind == "detector" else RELEASED_REFINER
    out = list(extra) + [released]
    for name in _comfy.list_model_files():
        if name not in out:
            path = _comfy.model_file_path(name)
            if path and file_kind(path) == kind:
                out.append(name)
    return out


def check_file_kind(path: str, kind: str, widget: str) -> None:
    """A clear error for the node user when the file chosen in ``widget`` is not a ``kind`` network."""
    found = file_kind(path)
    if found == kind:
        return
    name = os.path.basename(path)
    if found in KIND_WORDS:
        raise ValueError(f"{name} is an {KIND_WORDS[found]}, not an {KIND_WORDS[kind]}: choose it in the "
                         f"'{found}' box of this loader, and an {KIND_WORDS[kind]} file in '{widget}'")
    if found == "unknown":
        raise ValueError(f"{name} holds weights of another model (not an {KIND_WORDS[kind]}); choose "
                         f"{RELEASED_DETECTOR if kind == 'detector' else RELEASED_REFINER} or a converted "
                         f"CartoonSeg .safetensors file in '{widget}'")
    from cartoonseg.checkpoint import peek_weights

    peek_weights(path)  # raises the reader's message: missing, empty, corrupt, not a weights file


resolve_device = _comfy.resolve_device  # one rule for every device widget (kept importable from here)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> the library's choice for ``device`` (:func:`cartoonseg.device.resolve_precision`: fp16 on CUDA,
    bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32); explicit values pass through, and the Segmenter
    checks them on the device it runs on (fp32 with one warning where the device cannot run them)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    from cartoonseg.device import resolve_precision as resolve

    return resolve("auto", device)


def resolve_model_file(name: str, kind: str, allow_download: bool) -> str:
    """Full path of a weights file chosen in the loader.

    Names resolve only inside the ``cartoonseg`` model folders (``models/cartoonseg``, ``<folder>/<kind>/`` and the
    folders ``extra_model_paths.yaml`` adds): absolute paths and ``..`` are refused. A released file name that is
    not present is fetched by ``cartoonseg.resolve_weights`` into the first ``cartoonseg`` model folder (sha256
    checked); when that is not allowed or fails, its error names the URL and the destination.
    """
    import cartoonseg
    what = f"{kind} file"
    rel = _comfy.safe_model_name(name, what)
    found = _comfy.find_in_model_dirs(rel, what=what) or _comfy.find_in_model_dirs(rel, kind, what=what)
    if found:
        return found
    dirs = _comfy.model_dirs()
    released = set(RELEASED_WEIGHTS) | {s.filename for s in RELEASED_WEIGHTS.values()}
    if rel not in released:
        raise ValueError(f"{what} {name!r} not found in the model folders ({', '.join(dirs)}); released files "
                         f"that download on demand: {', '.join(sorted(s.filename for s in RELEASED_WEIGHTS.values()))}")
    search = []
    for d in dirs:
        search += [d, os.path.join(d, kind)]
    allow = bool(allow_download) and os.environ.get("CARTOONSEG_NO_DOWNLOAD", "") in ("", "0")
    path = cartoonseg.resolve_weights(rel, search_dirs=tuple(search), download_dir=dirs[0], allow_download=allow)
    return str(path)


def resolve_model_files(detector: str, refiner: str | None, allow_download: bool) -> tuple[str, str]:
    """Both files of the loader (``refiner`` None = no refiner); when files are missing, one error names all."""
    from cartoonseg.hub import WeightsUnavailableError

    paths, errors = ["", ""], []
    for i, (name, kind) in enumerate(((detector, "detector"), (refiner, "refiner"))):
        if name is None:
            continue
        try:
            paths[i] = resolve_model_file(name, kind, allow_download)
        except WeightsUnavailableError as exc:
            errors.append(exc)
    if errors:
        raise WeightsUnavailableError.combine(errors)
    return paths[0], paths[1]


class CartoonSegModelLoader:
    DESCRIPTION = (
        "Loads the CartoonSegmentation instance segmenter: RTMDet-Ins detector (stage 1) and optional IS-Net mask "
        "refiner (stage 2) from models/cartoonseg. The released files (rtmdetl_e60.ckpt, refine_last.ckpt from "
        "huggingface.co/dreMaz/AnimeInstanceSegmentation) are downloaded on first use when auto_download is on "
        "(sha256 checked; HF_HUB_OFFLINE=1 or CARTOONSEG_NO_DOWNLOAD=1 forbid it). The weights are read when a "
        "node first needs them and belong to ComfyUI's model management, like core models: 'Unload Models' "
        "frees them while they are on the device (keep_loaded on, or a CPU-only ComfyUI); handed back to RAM after "
        "a node (keep_loaded off), they go with the node cache."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CARTOONSEG_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("detector + refiner, for the Segment / Detect / Refine nodes",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detector": (weights_choices("detector"), {
                    "default": RELEASED_DETECTOR,
                    "tooltip": "detector weights in models/cartoonseg: the paper's rtmdetl_e60.ckpt (downloaded "
                               "when missing) or a converted .safetensors. Only detector files are listed."}),
                "refiner": (weights_choices("refiner", (NO_REFINER,)), {
                    "default": RELEASED_REFINER,
                    "tooltip": "mask refiner weights (the paper's refine_last.ckpt, downloaded when missing), or "
                               "'none' for the detector's coarser masks. Only refiner files are listed."}),
                "device": (list(DEVICES), {"default": "auto",
                                           "tooltip": "auto = ComfyUI's device (the GPU if there is one); cpu"}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on a GPU, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32; a precision the device cannot run falls back to fp32 with a warning"}),
                "auto_download": ("BOOLEAN", {"default": True,
                                              "tooltip": "fetch the paper's weights from Hugging Face when missing"}),
                "keep_loaded": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "on: the models stay on the GPU between runs (until ComfyUI needs the memory or "
                               "you unload models); off: they go back to system memory after each node"}),
            },
            "optional": {
                "optimize": (list(OPTIMIZE), {
                    "default": "fast",
                    "tooltip": "fast = BatchNorm folded into the convolutions and channels-last layout (about 2x "
                               "faster on CPU; masks differ from the original code in ~1e-4 of the pixels); "
                               "exact = the original implementation's op order, bit-identical results"}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, detector, refiner, **_):
        """Path, size and mtime of the chosen files: a replaced weights file re-runs the loader (ComfyUI calls this
        with the node's inputs; nothing is downloaded here)."""
        return _comfy.loader_fingerprint(
            lambda: resolve_model_files(detector, None if refiner == NO_REFINER else refiner, False))

    def load(self, detector, refiner, device, precision, auto_download, keep_loaded, optimize="fast"):
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        if optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
        det_path, ref_path = resolve_model_files(detector, None if refiner == NO_REFINER else refiner, auto_download)
        check_file_kind(det_path, "detector", "detector")
        if ref_path:
            check_file_kind(ref_path, "refiner", "refiner")
        offload = torch.device("cpu") if dev.type == "cpu" else torch.device(_comfy.offload_device())
        return (CartoonSegModel(det_path, ref_path, device=dev, offload_device=offload, precision=prec,
                                keep_loaded=keep_loaded, optimize=optimize),)


NODE_CLASS_MAPPINGS = {"CartoonSegModelLoader": CartoonSegModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CartoonSegModelLoader": "Load Segmentation Model (CartoonSeg)"}
