"""The one data structure at the library boundary: :class:`Instances`.

Conventions (every part of cartoonseg uses them):

* boxes are ``float32 [N,4]`` **xyxy in original-image pixels** (they may extend past the image border,
  exactly as the reference detector returns them);
* scores are ``float32 [N]`` in ``[0,1]``, sorted descending when they come from the detector;
* masks are ``float32 [N,H,W]`` **probabilities** at the original image size, so they can be used as soft
  alpha mattes; :attr:`Instances.binary` is the thresholded view (``masks > mask_thr``);
* labels are ``int64 [N]`` class indices (the released model has one class, 0 = "object");
* ids are ``int64 [N]`` instance identities, ``arange(N)`` by default, stable across video frames when a
  tracker assigns them;
* alphas (optional) are ``float32 [N,H,W]`` **alpha mattes** (:func:`cartoonseg.matting.instance_alphas`):
  fractional opacity at hair and soft edges, consistent across instances (they sum to at most 1 per pixel, an
  occluded part belongs to the front instance); None until computed (refining the masks clears them);
* extras hold optional per-instance lists, kept aligned on filtering. The keys that applications hand to each
  other are declared once below (:data:`EXTRAS`): producers and consumers use these constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .io import to_float_mask

__all__ = [
    "EXTRAS",
    "EXTRA_CHARACTER_TAGS",
    "EXTRA_DEPTH",
    "EXTRA_PROMPT",
    "EXTRA_RATING",
    "EXTRA_TAGS",
    "Instances",
    "MATTE_SUPPORT",
    "MAX_MASK_ELEMENTS",
    "check_mask_budget",
    "masks_to_boxes",
]

#: An alpha matte (``Instances.alphas``) reaches a pixel where it exceeds this (under one 8-bit step): the pixels a
#: character touches, which the applications' inpainting holes cover.
MATTE_SUPPORT = 1.0 / 255.0

#: ``{tag: probability}`` per instance: general + character booru tags (written by ``tagger.tag_instances``).
EXTRA_TAGS = "tags"
#: ``{tag: probability}`` per instance: the character-name tags alone (``tagger.tag_instances``).
EXTRA_CHARACTER_TAGS = "character_tags"
#: ``{rating: probability}`` per instance (``tagger.tag_instances``).
EXTRA_RATING = "rating"
#: the merged diffusion prompt string per instance (``tagger.instance_prompts``; read by style editing).
EXTRA_PROMPT = "prompt"
#: the pooled disparity per instance, larger = nearer (``depth.z_order_instances``; read by Ken Burns, style
#: editing and puppets to order layers back to front).
EXTRA_DEPTH = "depth"
#: Every extras key applications pass to each other, with what it holds.
EXTRAS: dict[str, str] = {
    EXTRA_TAGS: "{tag: probability}: general + character booru tags",
    EXTRA_CHARACTER_TAGS: "{tag: probability}: character-name tags",
    EXTRA_RATING: "{rating: probability}",
    EXTRA_PROMPT: "merged diffusion prompt (str)",
    EXTRA_DEPTH: "pooled disparity (float, larger = nearer; None = unknown)",
}

#: Memory budget of one stack of instance masks (instances x height x width): 2**30 values, 4 GiB as float32 (e.g.
#: 16 instances at 8192², 60 at 4230²). Every place that allocates ``[N,H,W]`` masks from a count it does not control
#: (detections, prompts, node batches) checks it first with :func:`check_mask_budget`, so a request that would exhaust
#: memory is a ``ValueError`` naming the remedy instead of an allocator failure. Assign a larger value to the module
#: attribute on machines with the memory for it.
MAX_MASK_ELEMENTS = 1 << 30


def check_mask_budget(n: int, height: int, width: int, what: str = "instance masks") -> None:
    """Raise ``ValueError`` when ``n`` masks of ``height x width`` exceed :data:`MAX_MASK_ELEMENTS`."""
    import sys

    budget = sys.modules[__name__].MAX_MASK_ELEMENTS
    total = int(n) * int(height) * int(width)
    if total > budget:
        raise ValueError(
            f"{what}: {n} masks of {width}x{height} pixels ({total / 2**30:.1f} Gi values, {4 * total / 2**30:.1f} GiB "
            f"as float32) exceed the memory budget of {budget / 2**30:.2f} Gi values "
            f"(cartoonseg.structures.MAX_MASK_ELEMENTS); use fewer instances (max_instances, fewer prompts, a smaller "
            f"batch) or a smaller image")


@dataclasses.dataclass
class Instances:
    """Instances of one image. See the module docstring for the conventions."""

    boxes: Tensor
    scores: Tensor
    masks: Tensor
    labels: Tensor | None = None
    ids: Tensor | None = None
    mask_thr: float = 0.5
    extras: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    alphas: Tensor | None = None

    def __post_init__(self) -> None:
        if self.masks.dim() != 3:
            raise ValueError(f"Instances.masks must be [N,H,W], got shape {tuple(self.masks.shape)}")
        n = self.masks.shape[0]
        if self.boxes.shape != (n, 4):
            raise ValueError(f"Instances.boxes must be [N,4] with N={n}, got shape {tuple(self.boxes.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"Instances.scores must be [N] with N={n}, got shape {tuple(self.scores.shape)}")
        if self.labels is None:
            self.labels = torch.zeros(n, dtype=torch.int64, device=self.boxes.device)
        if self.ids is None:
            self.ids = torch.arange(n, dtype=torch.int64, device=self.boxes.device)
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(
                f"Instances.labels/ids must be [N] with N={n}, got {tuple(self.labels.shape)} / {tuple(self.ids.shape)}"
            )
        if not 0.0 <= float(self.mask_thr) <= 1.0:
            raise ValueError(f"Instances.mask_thr must lie in [0,1], got {self.mask_thr}")
        if self.alphas is not None and tuple(self.alphas.shape) != tuple(self.masks.shape):
            raise ValueError(f"Instances.alphas must have the masks' shape {tuple(self.masks.shape)}, "
                             f"got {tuple(self.alphas.shape)}")
        for key, values in self.extras.items():
            if len(values) != n:
                raise ValueError(f"Instances.extras[{key!r}] has {len(values)} entries for {n} instances")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, height: int, width: int, *, mask_thr: float = 0.5, device: torch.device | str = "cpu") -> Instances:
        """No instances, for an image of ``height`` x ``width`` pixels."""
        return cls(
            boxes=torch.zeros(0, 4, device=device),
            scores=torch.zeros(0, device=device),
            masks=torch.zeros(0, int(height), int(width), device=device),
            mask_thr=mask_thr,
        )

    @classmethod
    def from_masks(cls, masks: Tensor, *, scores: Tensor | None = None, mask_thr: float = 0.5) -> Instances:
        """Instances from soft or binary masks ``[N,H,W]``; boxes are the tight boxes of ``masks > mask_thr``
        (an empty mask gets an all-zero box). Mask values follow :func:`cartoonseg.io.to_float_mask` (uint8 0..255,
        bool 0/1, float clipped to [0,1])."""
        masks = to_float_mask(masks, name="masks")
        if masks.dim() == 2:
            masks = masks[None]
        boxes = masks_to_boxes(masks > mask_thr)
        if scores is None:
            scores = torch.ones(masks.shape[0], device=masks.device)
        return cls(boxes=boxes, scores=scores.float(), masks=masks, mask_thr=mask_thr)

    @staticmethod
    def cat(items: Sequence[Instances]) -> Instances:
        """Concatenate instances of the same image (and the same ``mask_thr``, which the result keeps). Alpha mattes
        are kept when every non-empty item has them; a mix of matted and unmatted instances is refused (ValueError),
        since the applications would read the missing mattes as fully transparent characters."""
        if not items:
            raise ValueError("Instances.cat needs at least one Instances")
        sizes = {tuple(i.image_size) for i in items}
        if len(sizes) != 1:
            raise ValueError(f"Instances.cat: all items must have the same image size, got {sorted(sizes)}")
        thresholds = sorted({float(i.mask_thr) for i in items})
        if len(thresholds) != 1:  # one mask_thr for all: the others' binary masks would silently change
            raise ValueError(f"Instances.cat: all items must have the same mask_thr, got {thresholds}; rethreshold "
                             f"first, e.g. item.replace(masks=item.binary.float(), mask_thr=0.5)")
        matted = [k for k, i in enumerate(items) if i.alphas is not None]
        plain = [k for k, i in enumerate(items) if i.alphas is None and len(i)]
        if matted and plain:  # the applications cut characters out by their mattes: a zero one would hide them
            raise ValueError(f"Instances.cat: items {matted} carry alpha mattes and items {plain} do not; compute "
                             "them for all (cartoonseg.matting.instance_alphas) or drop them (replace(alphas=None))")
        keys = set().union(*(i.extras.keys() for i in items))
        extras = {k: [v for i in items for v in i.extras.get(k, [None] * len(i))] for k in keys}
        return Instances(
            boxes=torch.cat([i.boxes for i in items]),
            scores=torch.cat([i.scores for i in items]),
            masks=torch.cat([i.masks for i in items]),
            labels=torch.cat([i.labels for i in items]),
            ids=torch.cat([i.ids for i in items]),
            mask_thr=items[0].mask_thr,
            extras=extras,
            alphas=torch.cat([i.alphas if i.alphas is not None else torch.zeros_like(i.masks) for i in items])
            if any(i.alphas is not None for i in items) else None,
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image the masks belong to."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def binary(self) -> Tensor:
        """bool ``[N,H,W]``: ``masks > mask_thr``."""
        return self.masks > self.mask_thr

    @property
    def areas(self) -> Tensor:
        """int64 ``[N]``: pixel count of each binary mask."""
        return self.binary.flatten(1).sum(1)

    @property
    def device(self) -> torch.device:
        return self.masks.device

    def union(self) -> Tensor:
        """float ``[H,W]``: the per-pixel maximum of all soft masks (zeros when empty)."""
        if len(self) == 0:
            return torch.zeros(self.image_size, device=self.device)
        return self.masks.amax(0)

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Instances:
        """Select instances with an int, a slice, an index list/array/tensor, or a bool mask ``[N]`` (tensor, numpy
        array or list of bools)."""
        if isinstance(index, slice):
            positions = list(range(len(self)))[index]
        else:
            if not isinstance(index, Tensor):
                try:
                    index = torch.as_tensor(index)
                except (TypeError, ValueError, RuntimeError):
                    raise TypeError(f"cannot index Instances with {type(index).__name__}") from None
            if index.numel() == 0:
                positions = []
            elif index.dtype == torch.bool:
                if index.shape != (len(self),):
                    raise ValueError(f"bool index must have shape [{len(self)}], got {tuple(index.shape)}")
                positions = index.nonzero().flatten().tolist()
            elif index.is_floating_point() or index.is_complex():
                raise TypeError(f"instance indices must be integers or bools, got {index.dtype}")
            else:
                positions = [int(i) for i in index.reshape(-1).tolist()]
        for p in positions:
            if not -len(self) <= p < len(self):
                raise IndexError(f"instance index {p} out of range for {len(self)} instances")
        idx = torch.tensor(positions, dtype=torch.long, device=self.device)
        return Instances(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            masks=self.masks[idx],
            labels=self.labels[idx],
            ids=self.ids[idx],
            mask_thr=self.mask_thr,
            extras={k: [v[p] for p in positions] for k, v in self.extras.items()},
            alphas=None if self.alphas is None else self.alphas[idx],
        )

    def to(self, device: torch.device | str) -> Instances:
        return dataclasses.replace(
            self,
            boxes=self.boxes.to(device),
            scores=self.scores.to(device),
            masks=self.masks.to(device),
            labels=self.labels.to(device),
            ids=self.ids.to(device),
            extras={k: list(v) for k, v in self.extras.items()},
            alphas=None if self.alphas is None else self.alphas.to(device),
        )

    def replace(self, **changes: Any) -> Instances:
        """A copy with some fields replaced (``dataclasses.replace``; validation runs again)."""
        return dataclasses.replace(self, **changes)


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes ``[N,4]`` (pixel edges: x2 = last column + 1) of bool masks ``[N,H,W]``.
    An empty mask gives ``[0,0,0,0]``."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, device=masks.device)
    rows = masks.any(2)
    cols = masks.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, h).amin(1)
    y2 = torch.where(rows, ar_h + 1, 0).amax(1)
    x1 = torch.where(cols, ar_w, w).amin(1)
    x2 = torch.where(cols, ar_w + 1, 0).amax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    boxes[~rows.any(1)] = 0.0
    return boxes


def fitted_boxes(instances: Instances) -> Tensor:
    """xyxy boxes ``[N,4]`` that fit each instance's (thresholded) mask, which after refinement can reach beyond the
    detector's box; an instance with an empty mask keeps its own box. Used wherever a box stands for the mask
    (Impact SEGS bbox and crop region, crops, box outputs)."""
    if len(instances) == 0:
        return instances.boxes.float().clone()
    binary = instances.binary
    tight = masks_to_boxes(binary).to(instances.boxes.device)
    empty = ~binary.flatten(1).any(1).to(instances.boxes.device)
    return torch.where(empty[:, None], instances.boxes.float(), tight)
