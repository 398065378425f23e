"""Frame-to-frame instance tracking: stable instance ids across the frames of a clip.

A small IoU tracker in the spirit of SORT-style association without a motion model (Bewley et al., "Simple
Online and Realtime Tracking", 2016), using mask IoU (mask overlap) or box IoU as the affinity. It is what lets a
per-instance selection (for example "instance id 2") follow the same character through a video: every frame's
:class:`~cartoonseg.structures.Instances` get ``ids`` that are reused for the instance that overlaps a track of an
earlier frame best, and fresh ids for new instances.

Association: pairs (track, detection) with IoU >= ``iou_threshold`` are matched greedily, highest IoU first (ties
broken by track age, then by order), so the result is deterministic. A track that finds no match is kept for
``max_age`` further frames (its last mask is compared with later frames, which bridges short occlusions or missed
detections), then dropped. Ids are never reused.

The original CartoonSegmentation code has no video tracking; this is our addition for ComfyUI video batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .boxes import box_iou  # its one home; re-exported here
from .structures import Instances

__all__ = ["METRICS", "TrackerConfig", "InstanceTracker", "track_instances", "mask_iou", "box_iou", "match_greedy"]

#: overlap measures of :class:`TrackerConfig` (``metric``)
METRICS: tuple[str, ...] = ("mask", "box")


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    Attributes:
        iou_threshold: minimum IoU in ``(0, 1]`` for a detection to continue a track.
        max_age: frames a lost track is remembered (0 = only the previous frame counts).
        metric: ``"mask"`` (IoU of the binary masks, robust for overlapping characters; pairs where a mask is
            empty fall back to box IoU) or ``"box"`` (IoU of the xyxy boxes; cheaper, use it for large frames
            with many instances).
        first_id: id given to the first new track.
    """

    iou_threshold: float = 0.3
    max_age: int = 5
    metric: str = "mask"
    first_id: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.iou_threshold) <= 1.0:
            raise ValueError(f"iou_threshold must lie in (0, 1], got {self.iou_threshold}")
        if int(self.max_age) < 0:
            raise ValueError(f"max_age must be >= 0, got {self.max_age}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if int(self.first_id) < 0:
            raise ValueError(f"first_id must be >= 0, got {self.first_id}")


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of two sets of masks.

    Args:
        a: bool/float ``[N,H,W]`` (values > 0.5 count as foreground when float).
        b: bool/float ``[M,H,W]`` of the same ``H,W``.

    Returns:
        float32 ``[N,M]``; 0 where both masks are empty.
    """
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask_iou: mask sizes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    a = (a > 0.5 if a.dtype != torch.bool else a).flatten(1).float()
    b = (b > 0.5 if b.dtype != torch.bool else b).flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def match_greedy(iou: Tensor, threshold: float, priority: Tensor | None = None) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of rows (tracks) to columns (detections).

    Args:
        iou: ``[T,D]`` affinities.
        threshold: pairs below it are never matched.
        priority: optional ``[T]`` row priority used to break exact IoU ties (lower first).

    Returns:
        ``(row, col)`` pairs, highest IoU first.
    """
    t, d = iou.shape
    if t == 0 or d == 0:
        return []
    prio = priority.tolist() if priority is not None else [0] * t
    flat = iou.flatten().tolist()
    order = sorted(range(t * d), key=lambda k: (-flat[k], prio[k // d], k // d, k % d))
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        if flat[k] < threshold:
            break
        r, c = divmod(k, d)
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class InstanceTracker:
    """Online tracker: feed the frames in order with :meth:`update`.

    Example:
        >>> tracker = InstanceTracker(TrackerConfig(iou_threshold=0.3))
        >>> tracked = [tracker.update(inst) for inst in frames]   # frames: list of Instances
    """

    def __init__(self, config: TrackerConfig | None = None, **overrides) -> None:
        config = config or TrackerConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.reset()

    def reset(self) -> None:
        """Forget all tracks (the next id is ``config.first_id`` again)."""
        self._ids: list[int] = []
        self._ages: list[int] = []  # frames since last seen (0 = seen in the previous update)
        self._masks: Tensor | None = None  # bool [T,H,W] last binary mask of each track
        self._boxes = torch.zeros(0, 4)
        self._size: tuple[int, int] | None = None
        self._next_id = int(self.config.first_id)

    @property
    def num_tracks(self) -> int:
        """Tracks currently remembered (seen within ``max_age`` frames)."""
        return len(self._ids)

    @property
    def next_id(self) -> int:
        return self._next_id

    def update(self, instances: Instances) -> Instances:
        """Assign ids to one frame's instances.

        Args:
            instances: the frame's instances (any device); frames must all have the same size.

        Returns:
            The same instances with ``ids`` replaced by track ids (int64 ``[N]``, on the input's device).
        """
        if not isinstance(instances, Instances):
            raise TypeError(f"InstanceTracker.update expects cartoonseg.Instances, got {type(instances).__name__}")
        size = instances.image_size
        if self._size is not None and size != self._size:
            raise ValueError(f"frame size changed from {self._size} to {size}; call reset() between clips")
        self._size = size
        cfg = self.config
        binary = instances.binary.cpu()
        boxes = instances.boxes.detach().float().cpu()
        n = len(instances)
        if self._masks is None:
            self._masks = torch.zeros(0, *size, dtype=torch.bool)
        if cfg.metric == "mask":
            iou = mask_iou(self._masks, binary)
            # an instance whose binary mask is empty (e.g. a low-confidence coarse mask) has no mask overlap to
            # speak of: compare it by its box instead
            empty = (self._masks.flatten(1).sum(1) == 0)[:, None] | (binary.flatten(1).sum(1) == 0)[None, :]
            if bool(empty.any()):
                iou = torch.where(empty, box_iou(self._boxes, boxes), iou)
        else:
            iou = box_iou(self._boxes, boxes)
        pairs = match_greedy(iou, float(cfg.iou_threshold), torch.tensor(self._ages, dtype=torch.long))
        det_to_track = {c: r for r, c in pairs}
        new_ids = []
        for j in range(n):
            if j in det_to_track:
                new_ids.append(self._ids[det_to_track[j]])
            else:
                new_ids.append(self._next_id)
                self._next_id += 1
        # update memory: matched / new tracks take this frame's mask, unmatched tracks age
        matched_tracks = set(det_to_track.values())
        keep = [r for r in range(len(self._ids)) if r not in matched_tracks and self._ages[r] + 1 <= cfg.max_age]
        self._ids = [self._ids[r] for r in keep] + new_ids
        self._ages = [self._ages[r] + 1 for r in keep] + [0] * n
        keep_idx = torch.tensor(keep, dtype=torch.long)
        self._masks = torch.cat([self._masks[keep_idx], binary])
        self._boxes = torch.cat([self._boxes[keep_idx], boxes])
        ids = torch.tensor(new_ids, dtype=torch.int64, device=instances.device)
        return instances.replace(ids=ids)


def track_instances(frames: Sequence[Instances], config: TrackerConfig | None = None, *,
                    progress: Callable[[int, int], None] | None = None, interrupt: Callable[[], None] | None = None,
                    **overrides) -> list[Instances]:
    """Track a whole clip: ``frames[t]`` -> the same instances with stable ``ids``.

    Args:
        frames: one :class:`Instances` per frame, in time order, all of the same image size.
        config: tracker settings (keyword overrides are applied on top, e.g. ``iou_threshold=0.5``).
        progress: ``progress(done, total)`` after every frame (a long clip at full HD takes minutes).
        interrupt: cancel check called before every frame (raise from it to stop).

    Returns:
        A new list of the same length; instance order within a frame is unchanged.
    """
    tracker = InstanceTracker(config, **overrides)
    out = []
    for f in frames:
        if interrupt is not None:
            interrupt()
        out.append(tracker.update(f))
        if progress is not None:
            progress(len(out), len(frames))
    return out
