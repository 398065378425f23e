"""ComfyUI nodes over per-frame instances: split/select, MASK -> instances, Impact-Pack SEGS, video tracking.

These answer the most requested feature of segmentation packs, "one mask per object, not one merged mask": pick
instances by index, score, area, position or (tracked) id, and get per-instance masks, padded crops, the union
and background masks and bounding boxes (the operations themselves are :mod:`cartoonseg.ops`). ``SEGS`` follows ltdrdata/ComfyUI-Impact-Pack's format
``((H, W), [SEG, ...])`` with ``SEG = (cropped_image, cropped_mask, confidence, crop_region, bbox, label,
control_net_wrapper)`` and is built here without importing Impact. Tracking uses ``cartoonseg.tracking``.
Related to the paper "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943), whose
editing applications all work per instance.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import torch

from cartoonseg.ops import (
    CROP_FILLS,
    ORDERS,
    SELECT_BY,
    crop_instances,
    grow_mask,
    masks_to_instances,
    parse_indices,
    select_instances,
)

from cartoonseg.boxes import BBOX_FORMATS
from cartoonseg.structures import fitted_boxes
from cartoonseg.tagger.prompts import instance_label
from cartoonseg.tracking import METRICS as TRACK_METRICS

from . import _comfy
from .segment import (
    _MASK_OUTPUT_TOOLTIP,
    MASK_OUTPUTS,
    mask_values,
    resize_masks,
    stack_masks,
    track_frames,
)

CATEGORY = f"{_comfy.CATEGORY}/instances"
MASKS_ARE = ("instances of one image", "one per frame")

# Same field names, order and default as Impact Pack's SEG, so Impact nodes can read ours (and _replace them).
SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"], defaults=[None])


# ---------------------------------------------------------------------------------------------- ComfyUI / Impact formats
def to_bounding_boxes(frames: list) -> list[list[dict]]:
    """Per-frame instances -> ComfyUI ``BOUNDING_BOX`` value (:func:`cartoonseg.boxes.to_bounding_box`)."""
    from cartoonseg.boxes import to_bounding_box

    return to_bounding_box(frames)


def impact_crop_region(width: int, height: int, bbox, crop_factor: float) -> list[int]:
    """Crop window around ``bbox`` (xyxy) scaled by ``crop_factor``, with Impact Pack's semantics: centred on the
    box, shifted back inside the image when it crosses a border, and cut to the image when larger than it; always
    holding the whole box (Impact's own rounding can cut a pixel off it)."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    cw, ch = (x2 - x1) * crop_factor, (y2 - y1) * crop_factor
    cx, cy = x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 2

    def place(limit: int, center: float, size: float) -> tuple[int, int]:
        start = int(center - size / 2)
        if start < 0:
            return 0, int(min(limit, size))
        if start + size > limit:
            return int(max(0, limit - size)), int(limit)
        return int(start), int(min(limit, start + size))

    nx1, nx2 = place(width, cx, cw)
    ny1, ny2 = place(height, cy, ch)
    # never narrower than the box itself (whole pixels): the truncations above can cut a pixel off a small factor
    nx1, ny1 = max(0, min(nx1, math.floor(x1))), max(0, min(ny1, math.floor(y1)))
    nx2, ny2 = min(width, max(nx2, math.ceil(x2))), min(height, max(ny2, math.ceil(y2)))
    return [nx1, ny1, nx2, ny2]


def instances_to_segs(inst, image_frame: torch.Tensor | None, crop_factor: float, drop_size: int,
                      label_prefix: str, mask_output: str = "binary"):
    """One frame's instances -> Impact ``SEGS`` ``((H, W), [SEG, ...])``.

    ``bbox`` is the integer xyxy box of the instance's mask (refinement can grow a mask beyond the detector's box)
    and ``crop_region`` that box scaled by ``crop_factor``, so the whole mask lies inside the crop;
    ``cropped_mask`` is float32 numpy ``[h,w]`` over ``crop_region``; ``cropped_image`` a ``[1,h,w,3]`` tensor
    (or None without an image); ``confidence`` the score; ``label`` ``<label_prefix><instance id>``. Instances
    whose box is smaller than ``drop_size`` on a side are dropped.
    """
    h, w = inst.image_size
    masks = mask_values(inst, mask_output).numpy().astype(np.float32)
    boxes = fitted_boxes(inst)  # the refined mask, not the detector's box (refined pixels may lie outside it)
    segs = []
    for k in range(len(inst)):
        bx1, by1, bx2, by2 = (float(v) for v in boxes[k].tolist())
        bx1, by1 = max(0.0, bx1), max(0.0, by1)
        bx2, by2 = min(float(w), bx2), min(float(h), by2)
        if bx2 - bx1 < drop_size or by2 - by1 < drop_size:
            continue
        bbox = (int(bx1), int(by1), int(np.ceil(bx2)), int(np.ceil(by2)))
        region = impact_crop_region(w, h, bbox, crop_factor)
        cx1, cy1, cx2, cy2 = region
        cropped_mask = np.ascontiguousarray(masks[k, cy1:cy2, cx1:cx2])
        cropped_image = None
        if image_frame is not None:
            cropped_image = image_frame[None, cy1:cy2, cx1:cx2, :3].clone()
        label = instance_label(int(inst.ids[k]), label_prefix)  # the labels Merge Prompts' wildcard names
        segs.append(SEG(cropped_image, cropped_mask, float(inst.scores[k]), region, bbox, label, None))
    return ((h, w), segs)


# ---------------------------------------------------------------------------------------------- nodes
class CartoonSegInstanceSplit:
    DESCRIPTION = (
        "Pick and split instances: sort (index, score, area, left-to-right, top-to-bottom, id), select by position "
        "or by tracked id ('0', '0,2', '1-3', '-1', 'all'), and get one MASK per instance, padded crops, the "
        "union and background masks per frame, and boxes. frame = -1 works on every frame (video). Selecting "
        "by id after tracking follows the same character through a clip."
    )
    CATEGORY = CATEGORY
    FUNCTION = "split"
    RETURN_TYPES = ("MASK", "IMAGE", "MASK", "MASK", "MASK", "BOUNDING_BOX", "CARTOONSEG_INSTANCES", "INT")
    RETURN_NAMES = ("masks", "crops", "crop_masks", "union_mask", "background_mask", "bboxes", "instances", "count")
    OUTPUT_TOOLTIPS = (
        "one mask per selected instance",
        "padded crop of each selected instance",
        "each crop's instance mask",
        "union of the selected instances per frame (grown or shrunk by dilate)",
        "inverse of union_mask: everything but the selected instances",
        "boxes of the selected instances (BOUNDING_BOX; Convert Boxes turns them into other packs' formats)",
        "the selected instances",
        "number of selected instances",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment / Detect / Refine"}),
                "order": (list(ORDERS), {"default": "index", "tooltip": "sort before selecting"}),
                "select": ("STRING", {"default": "all", "multiline": False,
                                      "tooltip": "positions (or ids): '0', '0,2', '1-3', '-1' = last, 'all'"}),
                "select_by": (list(SELECT_BY), {"default": "position",
                                                "tooltip": "position in the sorted list, or instance id"}),
                "frame": ("INT", {"default": -1, "min": -1, "max": 100000, "tooltip": "-1 = every frame"}),
                "crop_padding": ("INT", {"default": 16, "min": 0, "max": 4096, "tooltip": "pixels around crops"}),
                "crop_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                      "tooltip": "0 = natural size (padded to the largest crop); >0 = square"}),
                "crop_fill": (list(CROP_FILLS), {"default": "image",
                                                 "tooltip": "what the crop shows outside the instance mask"}),
                "dilate": ("INT", {"default": 0, "min": -512, "max": 512,
                                   "tooltip": "grow (>0) or shrink (<0) the union in pixels (square window of "
                                              "side 2*|dilate|+1; Background Mask's dilate is elliptical, as the "
                                              "original's); the background "
                                              "mask is its inverse"}),
                "mask_output": (list(MASK_OUTPUTS), {"default": "binary", "tooltip": _MASK_OUTPUT_TOOLTIP}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "frames for the crops (else crops show the masks)"})},
        }

    def split(self, instances, order, select, select_by, frame, crop_padding, crop_size, crop_fill, dilate,
              mask_output, image=None):
        frames = _comfy.check_instances(instances)
        if frame >= len(frames):
            raise ValueError(f"frame {frame} out of range: instances have {len(frames)} frames (use -1 for all)")
        frame_ids = list(range(len(frames))) if frame < 0 else [int(frame)]
        h, w = frames[0].image_size
        if image is not None:
            image = _comfy.check_image(image)
            if image.shape[0] != len(frames) or tuple(image.shape[1:3]) != (h, w):
                raise ValueError(f"image {tuple(image.shape)} does not match instances ({len(frames)} frames of "
                                 f"{h}x{w})")
        indices = parse_indices(select)
        chosen = [select_instances(frames[i], order, indices, select_by) for i in frame_ids]
        masks = stack_masks(chosen, mask_output, h, w)
        union = torch.stack([mask_values(c, mask_output).amax(0) if len(c) else torch.zeros(h, w) for c in chosen])
        union = grow_mask(union, dilate).clamp(0, 1)
        background = 1.0 - union
        items = []
        for fi, c in zip(frame_ids, chosen):
            values = mask_values(c, mask_output)
            boxes = fitted_boxes(c)  # crops hold the whole (refined) mask
            items += [(fi, boxes[k], values[k]) for k in range(len(c))]
        if items:
            crops, crop_masks = crop_instances(image, items, int(crop_padding), int(crop_size), crop_fill)
        else:
            crops, crop_masks = torch.zeros(1, h, w, 3), torch.zeros(1, h, w)
        count = int(sum(len(c) for c in chosen))
        return (masks, crops, crop_masks, union.contiguous(), background.contiguous(), to_bounding_boxes(chosen),
                chosen, count)


class CartoonSegMaskToInstances:
    DESCRIPTION = ("Turn any MASK batch (SAM, Impact, painted, CartoonSeg) into CARTOONSEG_INSTANCES: either all "
                   "masks are instances of one image (repeated for every frame of an optional image batch), or "
                   "there is one mask per frame. Optionally split masks into connected components.")
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "INT")
    RETURN_NAMES = ("instances", "count")
    OUTPUT_TOOLTIPS = ("the masks as instances, one entry per frame", "number of instances over all frames")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "masks": ("MASK", {"tooltip": "masks from any node (SAM, Impact, painted, CartoonSeg)"}),
                "masks_are": (list(MASKS_ARE), {"default": MASKS_ARE[0],
                                                "tooltip": "all masks belong to one image, or mask i belongs to "
                                                           "frame i"}),
                "mask_threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "mask value above which a pixel belongs to the instance"}),
                "split_components": ("BOOLEAN", {"default": False,
                                                 "tooltip": "each connected region becomes its own instance"}),
                "min_area": ("INT", {"default": 16, "min": 1, "max": 1 << 24,
                                     "tooltip": "drop instances smaller than this many pixels"}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "frames the masks belong to (size and frame count)"})},
        }

    def convert(self, masks, masks_are, mask_threshold, split_components, min_area, image=None):
        masks = _comfy.check_mask(masks, "masks")
        if masks.shape[0] == 0 or masks.shape[1] == 0 or masks.shape[2] == 0:
            raise ValueError(f"masks is empty: shape {tuple(masks.shape)}")
        if image is not None:
            image = _comfy.check_image(image)
            b, h, w = (int(v) for v in image.shape[:3])
            masks = resize_masks(masks, h, w)
        else:
            b = None
        thr, split, area = float(mask_threshold), bool(split_components), int(min_area)
        if masks_are == MASKS_ARE[0]:
            inst = masks_to_instances(masks, thr, split, area)
            frames = [inst] + [inst.replace() for _ in range((b or 1) - 1)]
        elif masks_are == MASKS_ARE[1]:
            if b is not None and masks.shape[0] not in (1, b):
                raise ValueError(f"one mask per frame: got {masks.shape[0]} masks for {b} frames")
            n = b or masks.shape[0]
            frames = [masks_to_instances(masks[min(i, masks.shape[0] - 1)][None], thr, split, area)
                      for i in range(n)]
        else:
            raise ValueError(f"masks_are must be one of {MASKS_ARE}, got {masks_are!r}")
        return (frames, int(sum(len(f) for f in frames)))


class CartoonSegToSEGS:
    DESCRIPTION = ("Convert one frame's instances to Impact Pack SEGS (labels '<prefix><id>', confidence = score) "
                   "for Detailer (SEGS), SEGSPaste, SEGS filters and [LAB] wildcards. SEGS hold one image: "
                   "choose the frame.")
    CATEGORY = CATEGORY
    FUNCTION = "to_segs"
    RETURN_TYPES = ("SEGS",)
    RETURN_NAMES = ("segs",)
    OUTPUT_TOOLTIPS = ("Impact Pack SEGS of the chosen frame (boxes and crop regions fit the masks)",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment / Detect / Refine"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 100000,
                                  "tooltip": "which frame (SEGS describe one image)"}),
                "crop_factor": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 100.0, "step": 0.1,
                                          "tooltip": "crop region = box size x crop_factor (context for detailing)"}),
                "drop_size": ("INT", {"default": 10, "min": 1, "max": 8192,
                                      "tooltip": "skip instances whose box is smaller on a side"}),
                "label_prefix": ("STRING", {"default": "inst_",
                                            "tooltip": "SEG labels are <label_prefix><instance id>, for [LAB] "
                                                       "wildcards and SEGS label filters"}),
                "mask_output": (list(MASK_OUTPUTS), {"default": "binary", "tooltip": _MASK_OUTPUT_TOOLTIP}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "fills SEG.cropped_image"})},
        }

    def to_segs(self, instances, frame, crop_factor, drop_size, label_prefix, mask_output, image=None):
        frames = _comfy.check_instances(instances)
        if not 0 <= frame < len(frames):
            raise ValueError(f"frame {frame} out of range: instances have {len(frames)} frames")
        inst = frames[frame]
        image_frame = None
        if image is not None:
            image = _comfy.check_image(image)
            if frame >= image.shape[0] or tuple(image.shape[1:3]) != inst.image_size:
                raise ValueError(f"image {tuple(image.shape)} does not match frame {frame} of size "
                                 f"{inst.image_size}")
            image_frame = image[frame]
        return (instances_to_segs(inst, image_frame, float(crop_factor), int(drop_size), str(label_prefix),
                                  mask_output),)


class CartoonSegConvertBoxes:
    DESCRIPTION = (
        "The instances' boxes (fitted to their masks) for other nodes: BBOX as [x1,y1,x2,y2] per frame (kijai SAM2 "
        "Sam2Segmentation bboxes, Florence2-style nodes) or [x,y,w,h] (KJNodes crop/uncrop, BboxToInt); core "
        "BOUNDING_BOX dicts (SAM3 Detect, Draw BBoxes, Crop By BBoxes in recent ComfyUI); a filled box MASK per "
        "instance (every core mask node); box centres as JSON points (SAM2 coordinates_positive)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "convert"
    RETURN_TYPES = ("BBOX", "BOUNDING_BOX", "MASK", "STRING", "INT")
    RETURN_NAMES = ("bbox", "bounding_box", "box_masks", "centers_json", "count")
    OUTPUT_TOOLTIPS = (
        "BBOX of other packs, in the chosen format",
        "core ComfyUI BOUNDING_BOX: {x, y, width, height, score, label, id} dicts, a list per frame",
        "a filled rectangle per instance (frames in order)",
        'box centres [{"x": .., "y": ..}] as JSON (SAM2 point prompts)',
        "number of boxes",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment / Select Instances"}),
                "format": (list(BBOX_FORMATS), {
                    "default": "xyxy",
                    "tooltip": "xyxy = [x1,y1,x2,y2] per frame (SAM2, Florence2); xywh = [x,y,w,h] (KJNodes)"}),
                "frame": ("INT", {"default": -1, "min": -1, "max": 100000,
                                  "tooltip": "-1 = every frame; else one frame (most box consumers take one image)"}),
            },
        }

    def convert(self, instances, format, frame):
        import json

        from cartoonseg.boxes import box_centres, box_masks, to_bbox, to_bounding_box

        frames = _comfy.check_instances(instances)
        if frame >= len(frames):
            raise ValueError(f"frame {frame} out of range: instances have {len(frames)} frames (use -1 for all)")
        chosen = frames if frame < 0 else [frames[frame]]
        return (to_bbox(chosen, format), to_bounding_box(chosen), box_masks(chosen), json.dumps(box_centres(chosen)),
                int(sum(len(f) for f in chosen)))


class CartoonSegTrack:
    DESCRIPTION = ("Video: give instances stable ids across the frames of a batch by mask (or box) IoU with earlier "
                   "frames, so a selection by id follows the same character. Lost tracks are remembered for "
                   "max_age frames.")
    CATEGORY = CATEGORY
    FUNCTION = "track"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "INT")
    RETURN_NAMES = ("instances", "track_count")
    OUTPUT_TOOLTIPS = ("the instances with ids that follow each character through the frames",
                       "number of distinct tracks")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "instances of the frames of a video"}),
                "iou_threshold": ("FLOAT", {"default": 0.3, "min": 0.01, "max": 1.0, "step": 0.01,
                                            "tooltip": "minimum overlap with an earlier frame's instance to keep "
                                                       "its id"}),
                "max_age": ("INT", {"default": 5, "min": 0, "max": 10000,
                                    "tooltip": "frames a lost instance is remembered"}),
                "metric": (list(TRACK_METRICS), {"default": "mask",
                                                 "tooltip": "overlap of the masks (precise) or of the boxes (fast)"}),
            }
        }

    def track(self, instances, iou_threshold, max_age, metric):
        frames = _comfy.check_instances(instances)
        tracked = track_frames(frames, float(iou_threshold), int(max_age), metric)
        ids = {int(i) for f in tracked for i in f.ids.tolist()}
        return (tracked, len(ids))


NODE_CLASS_MAPPINGS = {
    "CartoonSegInstanceSplit": CartoonSegInstanceSplit,
    "CartoonSegMaskToInstances": CartoonSegMaskToInstances,
    "CartoonSegToSEGS": CartoonSegToSEGS,
    "CartoonSegTrack": CartoonSegTrack,
    "CartoonSegConvertBoxes": CartoonSegConvertBoxes,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegInstanceSplit": "Select Instances (CartoonSeg)",
    "CartoonSegMaskToInstances": "Masks to Instances (CartoonSeg)",
    "CartoonSegToSEGS": "Instances to SEGS (CartoonSeg)",
    "CartoonSegTrack": "Track Instances (CartoonSeg)",
    "CartoonSegConvertBoxes": "Convert Boxes (CartoonSeg)",
}
