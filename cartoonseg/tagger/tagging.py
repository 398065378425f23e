"""WD SwinV2 v3 booru tagger: loading, tag selection and per-instance tagging.

Tag selection follows the SmilingWolf/wd-tagger Space (``app.py``): sigmoid probabilities,
a tag is kept when ``prob > threshold`` (general 0.35, character 0.85 by default), optional MCut per group
(character MCut floored at 0.15), rating tags returned apart with all four probabilities, tags sorted by
probability. Per-instance tagging follows the paper's code (CartoonSegmentation ``animeinsseg.infer_tags``):
crop each instance by its box, paint pixels outside its mask white, tag the crop, drop ``simple_background`` /
``white_background`` (which the white fill causes); the background (an inpainted plate, or the image with the
union of all instance masks painted white) is tagged as its own "instance" (paper §6.1, §6.2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointError, read_checkpoint
from ..device import resolve_dtype
from ..io import to_rgb_uint8
from ..ops import crop_window
from ..structures import EXTRA_CHARACTER_TAGS, EXTRA_RATING, EXTRA_TAGS, Instances
from ..tags import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_EXCLUDE, DEFAULT_GENERAL_THRESHOLD  # one home; re-exported
from .download import DEFAULT_TAGGER_REPO, resolve_tagger_dir
from .labels import CHARACTER, GENERAL, RATING, TagLabels, load_labels
from .preprocess import prepare_image, to_model_input
from .prompts import exclude_keys, tag_key
from ..models.swinv2 import (
    SWINV2_PRESETS,
    SwinTransformerV2,
    config_from_timm,
    filter_timm_swinv2,
    load_swinv2_state_dict,
)

__all__ = [
    "TagResult",
    "WDTagger",
    "load_tagger",
    "mcut_threshold",
    "DEFAULT_EXCLUDE",
    "instance_crops",
    "background_image",
    "tag_instances",
]

@dataclasses.dataclass
class TagResult:
    """Tags of one image, each a dict ``{tag: probability}`` sorted by probability (descending).

    Attributes:
        general: general tags above the general threshold.
        character: character-name tags above the character threshold.
        rating: all rating pseudo-tags (``general``, ``sensitive``, ``questionable``, ``explicit``).
    """

    general: dict[str, float]
    character: dict[str, float]
    rating: dict[str, float]

    @property
    def tags(self) -> dict[str, float]:
        """General and character tags together, sorted by probability."""
        merged = {**self.general, **self.character}
        return dict(sorted(merged.items(), key=lambda kv: -kv[1]))

    @property
    def rating_label(self) -> str | None:
        """The most probable rating, or None when the label file has no ratings."""
        return max(self.rating, key=self.rating.get) if self.rating else None

    def to_dict(self) -> dict:
        return {"general": self.general, "character": self.character, "rating": self.rating}

    @classmethod
    def empty(cls) -> TagResult:
        return cls({}, {}, {})


def mcut_threshold(probs: Tensor) -> float:
    """Maximum Cut threshold (Largeron et al. 2012): midpoint of the largest gap between sorted probabilities.

    Args:
        probs: ``[K]`` probabilities of one group; needs at least two values.
    """
    if probs.numel() < 2:
        raise ValueError(f"MCut needs at least 2 probabilities, got {probs.numel()}")
    ordered = probs.double().sort(descending=True).values
    gaps = ordered[:-1] - ordered[1:]
    t = int(gaps.argmax())
    return float((ordered[t] + ordered[t + 1]) / 2)


def _check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must lie in [0,1], got {value}")
    return value


class WDTagger(nn.Module):
    """A WD booru tagger: :class:`SwinTransformerV2` + its label file.

    Args:
        model: the network (logits over ``len(labels)`` tags).
        labels: names and categories, indexed like the outputs.
        batch_size: crops per forward pass in :meth:`probs`.
    """

    def __init__(self, model: SwinTransformerV2, labels: TagLabels, batch_size: int = 8) -> None:
        super().__init__()
        if model.cfg.num_classes != len(labels):
            raise ValueError(f"model has {model.cfg.num_classes} outputs but the label file has {len(labels)} tags")
        self.model = model.eval()
        self.labels = labels
        self.batch_size = int(batch_size)
        self._groups = {c: labels.indices(c) for c in (GENERAL, CHARACTER, RATING)}

    @property
    def image_size(self) -> int:
        return self.model.cfg.img_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Preprocessed batch ``[B,3,S,S]`` (BGR, ``(u8/255-0.5)/0.5``) -> logits ``[B,K]`` float32 on the CPU."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"logits expects a float tensor [B,3,{self.image_size},{self.image_size}], got {type(x)}")
        return self.model(x.to(self.device, self.dtype)).float().cpu()

    @torch.no_grad()
    def probs(self, images: Sequence, interrupt: Callable[[], None] | None = None) -> Tensor:
        """Images (anything :func:`~cartoonseg.tagger.preprocess.to_pil` accepts) -> probabilities ``[B,K]``.

        ``interrupt`` is called before every forward batch of ``batch_size`` images; raise from it to cancel."""
        out = []
        for start in range(0, len(images), self.batch_size):
            if interrupt is not None:
                interrupt()
            chunk = images[start : start + self.batch_size]
            batch = to_model_input(np.stack([prepare_image(im, self.image_size) for im in chunk]))
            out.append(torch.sigmoid(self.logits(batch)))
        if not out:
            return torch.zeros(0, len(self.labels))
        return torch.cat(out)

    def select(
        self,
        probs: Tensor,
        general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
        character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
        *,
        general_mcut: bool = False,
        character_mcut: bool = False,
        exclude: Iterable[str] = (),
    ) -> TagResult:
        """Threshold one probability vector ``[K]`` into a :class:`TagResult` (``prob > threshold`` keeps a tag).

        With ``general_mcut`` / ``character_mcut`` the threshold of that group is its MCut threshold (the
        character one floored at 0.15) instead of the given value. ``exclude`` names (an iterable or one
        comma-separated string) are dropped, matched as everywhere else by
        :func:`~cartoonseg.tagger.prompts.tag_key`: case-insensitively, spaces and underscores equivalent.
        """
        if probs.dim() != 1 or probs.shape[0] != len(self.labels):
            raise ValueError(f"expected probabilities [{len(self.labels)}], got {tuple(probs.shape)}")
        general_threshold = _check_threshold("general_threshold", general_threshold)
        character_threshold = _check_threshold("character_threshold", character_threshold)
        probs = torch.nan_to_num(probs.float().cpu(), nan=0.0)
        excluded = exclude_keys(exclude)

        def pick(category: int, threshold: float, mcut: bool, floor: float) -> dict[str, float]:
            index = self._groups[category]
            values = probs[index]
            if mcut and values.numel() >= 2:
                threshold = max(floor, mcut_threshold(values))
            names = self.labels.names
            chosen = [(names[i], float(p)) for i, p in zip(index.tolist(), values.tolist()) if p > threshold]
            return dict(sorted((kv for kv in chosen if tag_key(kv[0]) not in excluded), key=lambda kv: -kv[1]))

        ratings = self._groups[RATING]
        return TagResult(
            general=pick(GENERAL, general_threshold, general_mcut, 0.0),
            character=pick(CHARACTER, character_threshold, character_mcut, 0.15),
            rating={self.labels.names[i]: float(probs[i]) for i in ratings.tolist()},
        )

    def tag(
        self,
        image,
        general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
        character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
        *,
        general_mcut: bool = False,
        character_mcut: bool = False,
        exclude: Iterable[str] = (),
    ) -> TagResult:
        """Tag one whole image.

        Args:
            image: RGB uint8 ``[H,W,3]`` (numpy or torch), RGBA, greyscale, a float ``[H,W,3]`` tensor in [0,1]
                or a PIL image. Transparent pixels count as white, as in the reference.
            general_threshold, character_threshold, general_mcut, character_mcut, exclude: see :meth:`select`.
        """
        return self.tag_batch(
            [image],
            general_threshold,
            character_threshold,
            general_mcut=general_mcut,
            character_mcut=character_mcut,
            exclude=exclude,
        )[0]

    def tag_batch(
        self,
        images: Sequence,
        general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
        character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
        *,
        general_mcut: bool = False,
        character_mcut: bool = False,
        exclude: Iterable[str] = (),
        interrupt: Callable[[], None] | None = None,
    ) -> list[TagResult]:
        """:meth:`tag` for several images (batched forward passes; ``interrupt`` as in :meth:`probs`)."""
        exclude = tuple(exclude_keys(exclude))  # parsed once for the whole batch
        return [
            self.select(
                p,
                general_threshold,
                character_threshold,
                general_mcut=general_mcut,
                character_mcut=character_mcut,
                exclude=exclude,
            )
            for p in self.probs(list(images), interrupt=interrupt)
        ]


def _read_weights(path: Path) -> dict[str, Tensor]:
    try:
        return read_checkpoint(path)[0]
    except CheckpointError as error:
        raise RuntimeError(f"cannot read tagger weights {path}: {error}") from error


def load_tagger(
    source: str | os.PathLike = DEFAULT_TAGGER_REPO,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
    download_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    batch_size: int = 8,
    run_device: str | torch.device | None = None,
) -> WDTagger:
    """Load a WD SwinV2 tagger from a folder laid out like its Hugging Face repo (or from the repo itself).

    Args:
        source: folder with ``model.safetensors`` (timm keys), ``selected_tags.csv`` and optionally
            ``config.json`` (timm format: ``architecture``, ``num_classes``, ``model_args``; without it the
            wd-swinv2-tagger-v3 architecture is assumed); or a repo id such as ``SmilingWolf/wd-swinv2-tagger-v3``
            (downloaded into ``download_dir`` when missing, see :func:`resolve_tagger_dir`).
        device: where the model runs.
        precision: ``fp32`` (reference), ``fp16``, ``bf16`` or ``auto``, resolved for ``device`` by
            :func:`cartoonseg.device.resolve_precision` (unsupported -> fp32 with one warning).
        download_dir: parent folder for downloads.
        allow_download: allow fetching missing files from the hub.
        batch_size: crops per forward pass.
        run_device: the device the model will run on when it is loaded elsewhere first (e.g. ComfyUI's offload
            device); ``precision`` is checked for it. Default: ``device``.

    Returns:
        A :class:`WDTagger` in eval mode.
    """
    dtype = resolve_dtype(precision, device if run_device is None else run_device)
    folder = resolve_tagger_dir(source, download_dir=download_dir, allow_download=allow_download)
    labels = load_labels(folder / "selected_tags.csv")
    config_path = folder / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None
        cfg = config_from_timm(config)
    else:
        cfg = dataclasses.replace(SWINV2_PRESETS["wd-v3"], num_classes=len(labels))
    if cfg.num_classes != len(labels):
        raise ValueError(
            f"{config_path} says num_classes={cfg.num_classes} but selected_tags.csv has {len(labels)} tags"
        )
    model = SwinTransformerV2(cfg)
    load_swinv2_state_dict(model, filter_timm_swinv2(_read_weights(folder / "model.safetensors")))
    model = model.to(device=device, dtype=dtype).eval()
    return WDTagger(model, labels, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------- instances
def _rgb_uint8(image) -> np.ndarray:
    """Any supported image -> numpy uint8 ``[H,W,3]`` RGB (transparency composited on white, NaN -> 0)."""
    return to_rgb_uint8(image, nan="zero", alpha="white")


def instance_crops(image, instances: Instances) -> list[np.ndarray | None]:
    """Per instance: the box crop of ``image`` with pixels outside the (binary) mask painted white.

    Args:
        image: RGB image ``[H,W,3]`` of the same size as ``instances.masks`` (see :meth:`WDTagger.tag`).
        instances: boxes xyxy in pixels (clamped to the image; fractional edges rounded outwards) and masks.

    Returns:
        One uint8 RGB crop per instance, or None where the box or the mask inside it is empty.
    """
    rgb = _rgb_uint8(image)
    h, w = rgb.shape[:2]
    if instances.image_size != (h, w):
        mh, mw = instances.image_size
        raise ValueError(f"image is {h}x{w} but the instance masks are {mh}x{mw}")
    binary = instances.binary.cpu().numpy()
    crops: list[np.ndarray | None] = []
    for box, mask in zip(torch.nan_to_num(instances.boxes.float().cpu()).tolist(), binary):
        x1, y1, x2, y2 = crop_window(box, h, w, allow_empty=True)
        if x2 <= x1 or y2 <= y1 or not mask[y1:y2, x1:x2].any():
            crops.append(None)
            continue
        crop = rgb[y1:y2, x1:x2].copy()
        crop[~mask[y1:y2, x1:x2]] = 255
        crops.append(crop)
    return crops


def background_image(image, instances: Instances) -> np.ndarray:
    """The image with the union of all binary instance masks painted white: uint8 RGB ``[H,W,3]``."""
    rgb = _rgb_uint8(image).copy()
    if instances.image_size != rgb.shape[:2]:
        raise ValueError(f"image is {rgb.shape[0]}x{rgb.shape[1]} but the instance masks are {instances.image_size}")
    if len(instances):
        rgb[instances.binary.any(0).cpu().numpy()] = 255
    return rgb


def tag_instances(
    tagger: WDTagger,
    image,
    instances: Instances,
    *,
    general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
    character_threshold: float = DEFAULT_CHARACTER_THRESHOLD,
    general_mcut: bool = False,
    character_mcut: bool = False,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    tag_background: bool = True,
    background=None,
    interrupt: Callable[[], None] | None = None,
) -> tuple[Instances, TagResult | None]:
    """Tag every instance of one image, and its background.

    Args:
        tagger: a loaded :class:`WDTagger`.
        image: the RGB image ``[H,W,3]`` the instances belong to.
        instances: the instances (boxes, masks).
        general_threshold, character_threshold, general_mcut, character_mcut: see :meth:`WDTagger.select`.
        exclude: tag names dropped from every result, an iterable or one comma-separated string, matched as in
            :meth:`WDTagger.select` (default: the backgrounds the white fill causes).
        tag_background: also tag the background.
        background: optional background image ``[H,W,3]`` (e.g. inpainted); when None, the image with the union
            of the instance masks painted white is tagged.
        interrupt: cancel check called before every batch of instance crops (raise from it to stop).

    Returns:
        ``(instances, background_tags)``: a copy of ``instances`` whose ``extras`` hold, per instance,
        ``"tags"`` (general + character ``{tag: prob}``), ``"character_tags"`` (``{tag: prob}``) and ``"rating"``
        (``{rating: prob}``); an instance with an empty box or mask gets empty dicts. ``background_tags`` is a
        :class:`TagResult`, or None when ``tag_background`` is False.
    """
    crops = instance_crops(image, instances)
    todo = [c for c in crops if c is not None]
    if tag_background:
        todo.append(_rgb_uint8(background) if background is not None else background_image(image, instances))
    options = dict(general_mcut=general_mcut, character_mcut=character_mcut, exclude=tuple(exclude_keys(exclude)))
    if interrupt is not None:
        options["interrupt"] = interrupt
    results = iter(tagger.tag_batch(todo, general_threshold, character_threshold, **options) if todo else [])
    per_instance = [next(results) if c is not None else TagResult.empty() for c in crops]
    background_tags = next(results) if tag_background else None
    extras = dict(instances.extras)
    extras[EXTRA_TAGS] = [r.tags for r in per_instance]
    extras[EXTRA_CHARACTER_TAGS] = [r.character for r in per_instance]
    extras[EXTRA_RATING] = [r.rating for r in per_instance]
    return instances.replace(extras=extras), background_tags
