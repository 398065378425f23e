"""ComfyUI loader node for the CartoonSegmentation instance segmenter (RTMDet-Ins detector + IS-Net refiner).

Weights are the ones released with "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943)
on the Hugging Face repo ``dreMaz/AnimeInstanceSegmentation`` (``rtmdetl_e60.ckpt``, ``refine_last.ckpt``), or any
file ``cartoonseg.load_detector`` / ``cartoonseg.load_refiner`` accept, placed under ``ComfyUI/models/cartoonseg``
(or a ``cartoonseg:`` entry of ``extra_model_paths.yaml``). Missing released files are downloaded by
``cartoonseg.resolve_weights`` (sha256 checked, ``HF_HUB_OFFLINE`` respected) only when the node is executed and
``auto_download`` is on.

The node returns a :class:`CartoonSegModel` (type ``CARTOONSEG_MODEL``); ComfyUI caches it like any node output.
The networks stay on the offload device (CPU) while idle and are moved to the compute device only for the duration
of a segmentation node (see :meth:`CartoonSegModel.on_device`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/loaders"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
OPTIMIZE = ("fast", "exact")
DEVICES = ("auto", "cpu")
NO_REFINER = "none"
# released file names (kept literal so the node's inputs do not depend on importing the library)
RELEASED_DETECTOR = "rtmdetl_e60.ckpt"
RELEASED_REFINER = "refine_last.ckpt"


class CartoonSegModel:
    """The ``CARTOONSEG_MODEL`` payload: detector + optional refiner and where/how to run them.

    Attributes:
        detector: RTMDet-Ins ``nn.Module`` (eval mode), resident on :attr:`offload_device` while idle.
        refiner: IS-Net ``nn.Module`` or ``None``.
        device: compute device used while a node runs.
        offload_device: where the networks live between nodes (CPU unless ``keep_loaded``).
        precision: ``"fp32" | "fp16" | "bf16"`` passed to ``cartoonseg.Segmenter``.
        keep_loaded: keep the networks on :attr:`device` after a node finished.
        optimize: ``"fast"`` (networks prepared in place: BN folded, channels-last) or ``"exact"`` (reference op
            order, bit-identical to the original implementation).
        detector_path / refiner_path: the files loaded (for error messages and the UI).
    """

    def __init__(self, detector, refiner, *, device, offload_device, precision="fp32", keep_loaded=False,
                 detector_path="", refiner_path="", optimize="fast") -> None:
        if optimize not in OPTIMIZE:
            raise ValueError(f"optimize must be one of {OPTIMIZE}, got {optimize!r}")
        self.detector = detector
        self.refiner = refiner
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.precision = precision
        self.keep_loaded = bool(keep_loaded)
        self.detector_path = str(detector_path)
        self.refiner_path = str(refiner_path)
        self.optimize = optimize

    @property
    def has_refiner(self) -> bool:
        return self.refiner is not None

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.detector, self.refiner) if m is not None]

    def _move(self, device: torch.device) -> None:
        for m in self.modules():
            m.to(device)

    @contextmanager
    def on_device(self) -> Iterator[CartoonSegModel]:
        """Move the networks to :attr:`device` for the block, then back to :attr:`offload_device` (also on
        errors and cancel) and release cached GPU memory, unless :attr:`keep_loaded`."""
        self._move(self.device)
        try:
            yield self
        finally:
            if not self.keep_loaded and self.offload_device != self.device:
                self._move(self.offload_device)
                _comfy.soft_empty_cache()

    def segmenter(self, *, use_refiner: bool = True, **kwargs):
        """A ``cartoonseg.Segmenter`` over these networks; ``kwargs`` are its runtime knobs
        (``det_size``, ``score_thr``, ``mask_thr``, ``refine_size``, ``max_instances``)."""
        import cartoonseg

        refiner = self.refiner if use_refiner else None
        fast = self.optimize == "fast"
        return cartoonseg.Segmenter(self.detector, refiner=refiner, precision=self.precision, fuse=fast,
                                    channels_last=fast, **kwargs)

    def __repr__(self) -> str:
        ref = os.path.basename(self.refiner_path) if self.refiner is not None else "none"
        return (f"CartoonSegModel(detector={os.path.basename(self.detector_path)!r}, refiner={ref!r}, "
                f"device={self.device}, precision={self.precision}, optimize={self.optimize}, "
                f"keep_loaded={self.keep_loaded})")


def _choices(released: str, extra: tuple[str, ...] = ()) -> list[str]:
    files = _comfy.list_model_files()
    out = list(extra) + [released]
    out += [f for f in files if f not in out]
    return out


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ComfyUI's compute device (respects ``--cpu``); ``"cpu"`` -> CPU."""
    if device == "auto":
        return torch.device(_comfy.torch_device())
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


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

    Files listed by ``folder_paths`` are used as they are. A released file name that is not present is fetched
    by ``cartoonseg.resolve_weights`` into the first ``cartoonseg`` model folder (sha256 checked); when that is
    not allowed or fails, its error names the URL and the destination.
    """
    import cartoonseg

    if not name or not isinstance(name, str):
        raise ValueError(f"{kind} file name must be a non-empty string, got {name!r}")
    found = _comfy.model_file_path(name)
    if found and os.path.isfile(found):
        return found
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    dirs = _comfy.model_dirs()
    search = []
    for d in dirs:
        search += [d, os.path.join(d, kind)]
    allow = bool(allow_download) and os.environ.get("CARTOONSEG_NO_DOWNLOAD", "") in ("", "0")
    path = cartoonseg.resolve_weights(name, search_dirs=tuple(search), download_dir=dirs[0], allow_download=allow)
    return str(path)


class CartoonSegModelLoader:
    DESCRIPTION = (
        "Loads the CartoonSegmentation instance segmenter: RTMDet-Ins detector (stage 1) and optional IS-Net mask "
        "refiner (stage 2) from models/cartoonseg. The released files (rtmdetl_e60.ckpt, refine_last.ckpt from "
        "huggingface.co/dreMaz/AnimeInstanceSegmentation) are downloaded on first use when auto_download is on "
        "(sha256 checked; HF_HUB_OFFLINE=1 or CARTOONSEG_NO_DOWNLOAD=1 forbid it). Models wait on the CPU and "
        "move to the GPU only while a CartoonSeg node runs, unless keep_loaded."
    )
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CARTOONSEG_MODEL",)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "detector": (_choices(RELEASED_DETECTOR), {
                    "default": RELEASED_DETECTOR,
                    "tooltip": "RTMDet-Ins weights in models/cartoonseg (.ckpt from the paper, or converted "
                               ".safetensors). The released file is downloaded when missing."}),
                "refiner": (_choices(RELEASED_REFINER, (NO_REFINER,)), {
                    "default": RELEASED_REFINER,
                    "tooltip": "IS-Net mask refiner weights, or 'none' for detector masks only."}),
                "device": (list(DEVICES), {"default": "auto", "tooltip": "auto = ComfyUI's device (GPU if any)"}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on CUDA, bf16 on CPUs with native bf16 (AMX/AVX512-BF16), else fp32; a precision the device cannot run falls back to fp32 with a warning"}),
                "auto_download": ("BOOLEAN", {"default": True,
                                              "tooltip": "fetch missing released weights from Hugging Face"}),
                "keep_loaded": ("BOOLEAN", {"default": False,
                                            "tooltip": "keep the models on the GPU between runs"}),
            },
            "optional": {
                "optimize": (list(OPTIMIZE), {
                    "default": "fast",
                    "tooltip": "fast = BatchNorm folded into the convolutions and channels-last layout (about 2x "
                               "faster on CPU; masks differ from the original code in ~1e-4 of the pixels); "
                               "exact = the original implementation's op order, bit-identical results"}),
            },
        }

    def load(self, detector, refiner, device, precision, auto_download, keep_loaded, optimize="fast"):
        import cartoonseg

        dev = resolve_device(device)
        prec = resolve_precision(precision, dev)
        det_path = resolve_model_file(detector, "detector", auto_download)
        offload = torch.device("cpu") if dev.type == "cpu" else torch.device(_comfy.offload_device())
        det = cartoonseg.load_detector(det_path, device="cpu")
        ref, ref_path = None, ""
        if refiner != NO_REFINER:
            ref_path = resolve_model_file(refiner, "refiner", auto_download)
            ref = cartoonseg.load_refiner(ref_path, device="cpu")
        if optimize == "fast":  # the loaded networks only ever run inference: fold in place, no second copy
            from cartoonseg.models.fuse import prepare_for_inference

            for module in (det, ref):
                if module is not None:
                    prepare_for_inference(module)
        model = CartoonSegModel(det, ref, device=dev, offload_device=offload, precision=prec,
                                keep_loaded=keep_loaded, detector_path=det_path, refiner_path=ref_path,
                                optimize=optimize)
        if model.keep_loaded:
            model._move(dev)
        else:
            model._move(offload)
        return (model,)


NODE_CLASS_MAPPINGS = {"CartoonSegModelLoader": CartoonSegModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CartoonSegModelLoader": "Load Cartoon Segmentation Model (CartoonSeg)"}
