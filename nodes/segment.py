"""ComfyUI segmentation nodes: detector (stage 1), refiner (stage 2), the one-node segmenter (both) and instance
alpha mattes (cartoonseg.matting; needs the optional package pymatting: pip install 'cartoonseg[matting]').

Pipeline of "Instance-guided Cartoon Editing with a Large-scale Dataset" (arXiv 2312.01943): RTMDet-Ins proposes
instances with coarse masks, IS-Net refines each instance's mask at high resolution. The work is done by
``cartoonseg.Segmenter``; these nodes only loop over IMAGE batches (progress bar + cancel per frame), move the
networks on and off the GPU, and convert the per-frame ``cartoonseg.Instances`` into ComfyUI outputs:

* ``instances`` (``CARTOONSEG_INSTANCES``): a list with one CPU ``cartoonseg.Instances`` per frame;
* ``masks`` (MASK ``[sum N, H, W]``): every instance of every frame, in frame order; ``[1,H,W]`` zeros if none;
* ``combined_mask`` (MASK ``[B,H,W]``): union of each frame's instances (zeros for frames without any);
* ``preview`` (IMAGE ``[B,H,W,3]``): the frames with coloured instances, boxes and instance ids;
* ``count`` (INT): number of instances over all frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from cartoonseg.matting import METHODS as MATTING_METHODS
from cartoonseg.segmenter import PROMPT_MODES

from . import _comfy

CATEGORY = f"{_comfy.CATEGORY}/segment"
MASK_OUTPUTS = ("binary", "soft")
SEGMENT_RETURN_TYPES = ("CARTOONSEG_INSTANCES", "MASK", "MASK", "IMAGE", "INT")
SEGMENT_RETURN_NAMES = ("instances", "masks", "combined_mask", "preview", "count")
SEGMENT_OUTPUT_TOOLTIPS = (
    "the instances of every frame (masks, boxes, scores, ids), for the other CartoonSeg nodes",
    "one mask per instance, all frames in order",
    "union of each frame's instance masks",
    "the frames with coloured instances, boxes and ids",
    "number of instances over all frames",
)
_MODEL_TOOLTIP = "from Load Segmentation Model"
_IMAGE_TOOLTIP = "image or batch of frames (video)"

_TRACK_TOOLTIP = "video: keep instance ids stable across frames (mask-IoU tracking), so ids follow characters"
_MASK_OUTPUT_TOOLTIP = "binary = thresholded masks (0/1); soft = mask probabilities (for feathered compositing)"
_GREY_TOOLTIP = ("convert the image to grey (and back to 3 channels) before segmenting: manga pages and line art "
                 "(the original's infer_grey)")
_PROMPT_MODE_TOOLTIP = ("box prompts: kernel = the coarse mask of the detection that best overlaps the box (the "
                        "original's segment_with_bboxes; good with loose boxes); rectangle = the filled box")


def _grey_input() -> dict:
    return {"grey": ("BOOLEAN", {"default": False, "tooltip": _GREY_TOOLTIP})}


# ---------------------------------------------------------------------------------------------- shared helpers
def run_frames(image: torch.Tensor, fn: Callable[..., object]) -> list:
    """Call ``fn(index, frame[H,W,3], progress)`` for each frame of an IMAGE batch. The node's progress bar counts one
    unit per frame plus whatever units ``fn`` reports through ``progress(done, total)`` (the instances it refines),
    and every unit first checks ComfyUI's cancel flag."""
    results = []
    with _comfy.steps(image.shape[0]) as bar:
        for i in range(image.shape[0]):
            _comfy.throw_if_interrupted()  # also catches a cancel raised while the previous step's bar updated
            results.append(fn(i, image[i], bar.subtask()))
            bar.tick()
    return results


def mask_values(inst, mask_output: str) -> torch.Tensor:
    """float32 ``[N,H,W]`` on the CPU: thresholded (``"binary"``) or probabilities (``"soft"``)."""
    if mask_output == "binary":
        return inst.binary.float().cpu()
    if mask_output == "soft":
        return inst.masks.float().clamp(0, 1).cpu()
    raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {mask_output!r}")


def stack_masks(frames: Sequence, mask_output: str, height: int, width: int) -> torch.Tensor:
    """All instances of all frames -> MASK ``[sum N,H,W]``; a ``[1,H,W]`` zero mask when there are none
    (downstream nodes such as MaskToImage fail on empty batches)."""
    from cartoonseg.structures import check_mask_budget

    check_mask_budget(sum(len(f) for f in frames), height, width, "the MASK output of all frames")
    parts = [mask_values(f, mask_output) for f in frames if len(f)]
    if not parts:
        return torch.zeros(1, height, width)
    return torch.cat(parts).contiguous()


def union_masks(frames: Sequence, mask_output: str) -> torch.Tensor:
    """Per-frame union -> MASK ``[B,H,W]`` (zeros for frames without instances)."""
    out = []
    for f in frames:
        m = mask_values(f, mask_output)
        out.append(m.amax(0) if len(f) else torch.zeros(f.image_size))
    return torch.stack(out).contiguous()


def preview_frames(image: torch.Tensor, frames: Sequence) -> torch.Tensor:
    """IMAGE ``[B,H,W,3]``: frames with coloured instance masks, boxes and id numbers."""
    from cartoonseg.visualize import overlay

    out = [torch.tensor(overlay(_comfy.image_to_uint8(image[i]), f)) for i, f in enumerate(frames)]
    return (torch.stack(out).float() / 255.0).contiguous()


def segment_outputs(image: torch.Tensor, frames: list, mask_output: str) -> tuple:
    """The five standard outputs (see the module docstring) from a checked IMAGE and its per-frame instances."""
    h, w = int(image.shape[1]), int(image.shape[2])
    masks = stack_masks(frames, mask_output, h, w)
    combined = union_masks(frames, mask_output)
    preview = preview_frames(image, frames)
    count = int(sum(len(f) for f in frames))
    return (frames, masks, combined, preview, count)


def to_cpu_instances(inst, height: int, width: int):
    """Library output -> a CPU ``Instances`` with float32 masks of the frame size (checked)."""
    inst = inst.to("cpu")
    if inst.image_size != (height, width):
        raise RuntimeError(f"segmenter returned masks of size {inst.image_size} for a {height}x{width} frame")
    if inst.masks.dtype != torch.float32:
        inst = inst.replace(masks=inst.masks.float())
    return inst


def track_frames(frames: list, iou_threshold: float = 0.3, max_age: int = 5, metric: str = "mask") -> list:
    """Stable ids across the frames (``cartoonseg.tracking``), with the node's progress bar and Cancel per frame."""
    from cartoonseg.tracking import TrackerConfig, track_instances

    config = TrackerConfig(iou_threshold=iou_threshold, max_age=max_age, metric=metric)
    with _comfy.steps(len(frames)) as bar:
        return track_instances(frames, config, progress=lambda done, total: bar.tick(),
                               interrupt=_comfy.throw_if_interrupted)


def check_model(model):
    from .loaders import CartoonSegModel

    if not isinstance(model, CartoonSegModel):
        raise TypeError(f"model must be a CARTOONSEG_MODEL from Load Segmentation Model, got {type(model).__name__}")
    return model


# ---------------------------------------------------------------------------------------------- prompts for refine
def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[N,h,w]`` -> ``[N,height,width]`` (bilinear; identity when the size already matches)."""
    from cartoonseg.transforms import resize_float

    if masks.shape[-2:] == (height, width):
        return masks
    from cartoonseg.structures import check_mask_budget

    check_mask_budget(masks.shape[0], height, width, "prompt masks resized to the image")
    return resize_float(masks, (height, width)).clamp(0, 1)


def masks_per_frame(masks: torch.Tensor, frames: int, height: int, width: int) -> list[torch.Tensor]:
    """Distribute a MASK batch ``[M,h,w]`` over ``frames`` frames.

    With one frame, all ``M`` masks are prompts for it. With ``M == frames`` (and ``frames > 1``), mask ``i`` is the
    one prompt of frame ``i`` (empty masks give no prompt). One mask for several frames is the prompt of every frame
    (as one box list is). Anything else is ambiguous and raises.
    """
    masks = resize_masks(_comfy.check_mask(masks, "masks"), height, width)
    m = masks.shape[0]
    if frames == 1:
        keep = masks.flatten(1).amax(1) > 0
        return [masks[keep]]
    if m == frames:
        return [masks[i:i + 1] if masks[i].amax() > 0 else masks[i:i] for i in range(m)]
    if m == 1:  # one region for every frame of a clip
        return [masks if masks[0].amax() > 0 else masks[:0]] * frames
    raise ValueError(f"masks has {m} masks for {frames} frames: give one mask per frame, one mask for every frame, "
                     f"or a single frame with any number of masks (use Masks to Instances for other layouts)")


_F32_MAX = float(torch.finfo(torch.float32).max)


def parse_bboxes(bboxes, frames: int) -> list[torch.Tensor]:
    """Boxes from other nodes -> one xyxy float tensor ``[N,4]`` per frame.

    Accepted: ComfyUI's ``BOUNDING_BOX`` (a dict ``{x, y, width, height, ...}``, a list of them, or a list of
    such lists, one per frame), one ``[x1, y1, x2, y2]`` or lists of them, or a tensor ``[4]`` / ``[N,4]`` /
    ``[B,N,4]`` (xyxy pixels). A flat list/one tensor applies to every frame. Per-frame lists pair with the frames
    by the pack's batch rule (:func:`_comfy.frames_instances`): one list serves every frame, and with a single
    frame each of the ``L`` lists is a prompt of that one picture, so ``L`` lists come back (``L`` output frames).
    """

    def one(b) -> list[float]:
        if isinstance(b, dict):
            try:
                x, y = float(b["x"]), float(b["y"])
                vals = [x, y, x + float(b["width"]), y + float(b["height"])]
            except KeyError as e:
                raise ValueError(f"bounding box dict needs x, y, width, height; got keys {sorted(b)}") from e
        else:
            vals = [float(v) for v in (b.tolist() if isinstance(b, torch.Tensor) else b)]
            if len(vals) != 4:
                raise ValueError(f"a box needs 4 numbers x1,y1,x2,y2, got {vals}")
        # float32 is what the boxes become: a finite float64 past its range would turn infinite there
        if not all(math.isfinite(v) and abs(v) <= _F32_MAX for v in vals):
            raise ValueError(f"a box must hold finite numbers (within float32's range), got {b}")
        return vals

    def group(items) -> torch.Tensor:
        rows = [one(b) for b in items]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)

    if isinstance(bboxes, torch.Tensor):
        t = bboxes.float()
        if not bool(torch.isfinite(t).all()):
            rows = t.reshape(-1, t.shape[-1]) if t.dim() else t.reshape(1, 1)
            i = int((~torch.isfinite(rows)).any(1).nonzero()[0])
            raise ValueError(f"bboxes hold NaN or infinite coordinates (or values past float32's range): box "
                             f"{bboxes.reshape(rows.shape)[i].tolist()}")
        if t.dim() == 1 and t.shape[0] == 4:  # one box
            t = t[None]
        if t.dim() == 2 and t.shape[-1] == 4:
            return [t.clone() for _ in range(frames)]
        if t.dim() == 3 and t.shape[-1] == 4 and (t.shape[0] == frames or 1 in (t.shape[0], frames)):
            return [t[min(i, t.shape[0] - 1)].clone() for i in range(max(frames, t.shape[0]))]
        raise ValueError(f"bboxes tensor must be [N,4], [{frames},N,4] or [1,N,4] for the {frames} image frames "
                         f"(or [B,N,4] for a single frame), got {tuple(t.shape)}")
    if isinstance(bboxes, dict) or (isinstance(bboxes, (list, tuple)) and len(bboxes) == 4
                                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bboxes)):
        bboxes = [bboxes]  # one box (a BOUNDING_BOX dict or [x1, y1, x2, y2])
    if not isinstance(bboxes, (list, tuple)):
        raise TypeError(f"bboxes must be a BOUNDING_BOX (dict or list), got {type(bboxes).__name__}")
    nested = len(bboxes) > 0 and all(isinstance(b, (list, tuple)) and (len(b) == 0 or isinstance(b[0], (dict, list,
                                     tuple))) for b in bboxes)
    if nested:
        if len(bboxes) == frames or frames == 1:  # one picture for every list, as image + instances pair
            return [group(b) for b in bboxes]
        if len(bboxes) == 1:
            return [group(bboxes[0]) for _ in range(frames)]
        raise ValueError(f"bboxes has {len(bboxes)} per-frame box lists but image has {frames} frames; give one "
                         f"list per image frame, a single list (used for every frame) or a single image frame "
                         f"(used for every list)")
    g = group(bboxes)
    return [g.clone() for _ in range(frames)]


def prompts_per_frame(image: torch.Tensor, *, instances=None, masks=None, bboxes=None) -> tuple[torch.Tensor, list]:
    """The frames to refine and the refine prompts of each, from exactly one of the Refine node's prompt inputs:
    CARTOONSEG_INSTANCES (paired with the image as every node pairs them, :func:`_comfy.frames_instances`: one
    entry on either side serves every frame of the other), any MASK (:func:`masks_per_frame`: prompts of the
    image's frames) or boxes (:func:`parse_bboxes`: per-frame box lists pair with the frames by the same rule, so a
    single picture with ``L`` per-frame lists gives ``L`` frames)."""
    given = [n for n, v in (("instances", instances), ("masks", masks), ("bboxes", bboxes)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"connect exactly one prompt input (instances, masks or bboxes), got {given or 'none'}")
    frames, height, width = (int(v) for v in image.shape[:3])
    if masks is not None:
        return image, masks_per_frame(masks, frames, height, width)
    if bboxes is not None:
        boxes = parse_bboxes(bboxes, frames)
        return image.expand(len(boxes), -1, -1, -1), boxes  # a view: one picture refined per box list
    return _comfy.frames_instances(image, instances)


# ---------------------------------------------------------------------------------------------- nodes
#: widget values meaning "the refiner's own" (``RefinerConfig.mask_thr`` / ``refine_size``, saved in its weights file:
#: 0.3 / 720 for the released refine_last.ckpt), the library's and the CLI's default (None)
OWN_MASK_THRESHOLD = -1.0
OWN_REFINE_SIZE = 0


def _refiner_inputs(mask_threshold_tooltip: str) -> dict:
    return {
        "mask_threshold": ("FLOAT", {"default": OWN_MASK_THRESHOLD, "min": -1.0, "max": 1.0, "step": 0.01,
                                     "tooltip": f"{mask_threshold_tooltip}; -1 (any value below 0) = the refiner's "
                                                "own, saved in its weights (0.3 for the released refiner)"}),
        "refine_size": ("INT", {"default": OWN_REFINE_SIZE, "min": 0, "max": 2048, "step": 8,
                                "tooltip": "refiner working resolution (at least 32); 0 = the refiner's own, saved "
                                           "in its weights (720 for the released refiner)"}),
    }


def refiner_knobs(mask_threshold, refine_size) -> dict:
    """Widget values -> ``Segmenter`` keywords: ``mask_thr`` / ``refine_size`` None (the refiner's saved values) for
    the widgets' "own" values (a negative threshold, size 0)."""
    thr = float(mask_threshold)
    size = int(refine_size)
    return {"mask_thr": None if thr < 0 else thr, "refine_size": None if size == OWN_REFINE_SIZE else size}


def _common_detect_inputs() -> dict:
    return {
        "score_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "minimum detection score"}),
        "max_instances": ("INT", {"default": 100, "min": 1, "max": 1000, "tooltip": "keep at most this many"}),
        "det_size": ("INT", {"default": 640, "min": 128, "max": 2048, "step": 32,
                             "tooltip": "detector input size (longest side, pixels)"}),
    }


class CartoonSegDetect:
    DESCRIPTION = ("Stage 1: RTMDet-Ins instance detection with coarse masks, for every frame of an IMAGE batch. "
                   "Outputs per-frame instances, all instance masks, a combined mask per frame, a preview and "
                   "the instance count. Frames without detections give all-zero masks.")
    CATEGORY = CATEGORY
    FUNCTION = "detect"
    RETURN_TYPES = SEGMENT_RETURN_TYPES
    RETURN_NAMES = SEGMENT_RETURN_NAMES
    OUTPUT_TOOLTIPS = SEGMENT_OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CARTOONSEG_MODEL", {"tooltip": _MODEL_TOOLTIP}),
                "image": ("IMAGE", {"tooltip": _IMAGE_TOOLTIP}),
                **_common_detect_inputs(),
                "mask_output": (list(MASK_OUTPUTS), {"default": "binary", "tooltip": _MASK_OUTPUT_TOOLTIP}),
                "track_ids": ("BOOLEAN", {"default": False, "tooltip": _TRACK_TOOLTIP}),
            },
            "optional": _grey_input(),
        }

    def detect(self, model, image, score_threshold, max_instances, det_size, mask_output, track_ids, grey=False):
        model = check_model(model)
        image = _comfy.check_image(image)
        h, w = int(image.shape[1]), int(image.shape[2])
        seg = model.segmenter(use_refiner=False, det_size=int(det_size), score_thr=float(score_threshold),
                              max_instances=int(max_instances), grey=bool(grey))
        with model.on_device():
            frames = run_frames(image, lambda i, f, progress: to_cpu_instances(seg.detect(f), h, w))
        if track_ids:
            frames = track_frames(frames)
        return segment_outputs(image, frames, mask_output)


class CartoonSegRefine:
    DESCRIPTION = ("Stage 2: IS-Net refinement of instance masks. Prompts come from CartoonSeg instances, from any "
                   "MASK batch (SAM, Impact, painted masks; one frame with many masks, one mask per frame, or one "
                   "for all) or from boxes (BOUNDING_BOX dicts or [x1,y1,x2,y2] lists). Connect exactly one of them. "
                   "Boxes become coarse masks through the detector (prompt_mode kernel: the best-overlapping "
                   "detection's mask) or as filled rectangles (prompt_mode rectangle).")
    CATEGORY = CATEGORY
    FUNCTION = "refine"
    RETURN_TYPES = SEGMENT_RETURN_TYPES
    RETURN_NAMES = SEGMENT_RETURN_NAMES
    OUTPUT_TOOLTIPS = SEGMENT_OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CARTOONSEG_MODEL", {"tooltip": _MODEL_TOOLTIP}),
                "image": ("IMAGE", {"tooltip": _IMAGE_TOOLTIP}),
                **_refiner_inputs("probability above which a refined pixel is foreground"),
                "mask_output": (list(MASK_OUTPUTS), {"default": "binary", "tooltip": _MASK_OUTPUT_TOOLTIP}),
            },
            "optional": {
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "refine these instances (e.g. from Detect)"}),
                "masks": ("MASK", {"tooltip": "refine these masks: many masks of one image, or one per frame "
                                              "(SAM, Impact, painted)"}),
                "bboxes": (_comfy.BOXES_INPUT, {"tooltip": "refine inside these boxes: core BOUNDING_BOX dicts, or "
                                                           "BBOX [x1,y1,x2,y2] lists in pixels (Convert Boxes, "
                                                           "Florence2, SAM2 packs)"}),
                "prompt_mode": (list(PROMPT_MODES), {"default": "kernel", "tooltip": _PROMPT_MODE_TOOLTIP}),
                **_grey_input(),
            },
        }

    def refine(self, model, image, mask_threshold, refine_size, mask_output, instances=None, masks=None,
               bboxes=None, prompt_mode="kernel", grey=False):
        from cartoonseg import Instances

        model = check_model(model)
        if not model.has_refiner:
            raise ValueError("Refine Masks needs a refiner: choose a refiner file in Load Segmentation Model "
                             f"(it was loaded with refiner='none'; detector {model.detector_path})")
        image, prompts = prompts_per_frame(_comfy.check_image(image), instances=instances, masks=masks, bboxes=bboxes)
        h, w = int(image.shape[1]), int(image.shape[2])
        seg = model.segmenter(use_refiner=True, **refiner_knobs(mask_threshold, refine_size),
                              prompt_mode=str(prompt_mode), grey=bool(grey))

        def one(i, frame, progress):  # ids, labels and extras of Instances prompts are kept by the library
            if len(prompts[i]) == 0:
                return Instances.empty(h, w, mask_thr=seg.mask_thr)
            return to_cpu_instances(seg.refine(frame, prompts[i], progress=progress,
                                               interrupt=_comfy.throw_if_interrupted), h, w)

        with model.on_device():
            frames = run_frames(image, one)
        return segment_outputs(image, frames, mask_output)


class CartoonSegSegment:
    DESCRIPTION = ("Detect and refine cartoon character instances (RTMDet-Ins + IS-Net) in every frame of an IMAGE "
                   "batch. Outputs per-frame instances, all instance masks, a combined mask per frame, a preview "
                   "with coloured instances and ids, and the instance count. Frames without detections give "
                   "all-zero masks; enable track_ids for videos.")
    CATEGORY = CATEGORY
    FUNCTION = "segment"
    RETURN_TYPES = SEGMENT_RETURN_TYPES
    RETURN_NAMES = SEGMENT_RETURN_NAMES
    OUTPUT_TOOLTIPS = SEGMENT_OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("CARTOONSEG_MODEL", {"tooltip": _MODEL_TOOLTIP}),
                "image": ("IMAGE", {"tooltip": _IMAGE_TOOLTIP}),
                **_common_detect_inputs(),
                "mask_threshold": _refiner_inputs(
                    "refined mask probability above which a pixel is foreground; without the refiner (refine off, "
                    "or a model without one) the detector's own 0.5 applies, as in the original")["mask_threshold"],
                "refine": ("BOOLEAN", {"default": True,
                                       "tooltip": "run the IS-Net refiner (ignored when the model has none)"}),
                "refine_size": _refiner_inputs("")["refine_size"],
                "mask_output": (list(MASK_OUTPUTS), {"default": "binary", "tooltip": _MASK_OUTPUT_TOOLTIP}),
                "track_ids": ("BOOLEAN", {"default": False, "tooltip": _TRACK_TOOLTIP}),
            },
            "optional": _grey_input(),
        }

    def segment(self, model, image, score_threshold, max_instances, det_size, mask_threshold, refine, refine_size,
                mask_output, track_ids, grey=False):
        model = check_model(model)
        image = _comfy.check_image(image)
        h, w = int(image.shape[1]), int(image.shape[2])
        use_refiner = bool(refine) and model.has_refiner
        knobs = refiner_knobs(mask_threshold, refine_size)
        if not use_refiner:
            knobs["mask_thr"] = None  # the detector's 0.5
        seg = model.segmenter(use_refiner=use_refiner, det_size=int(det_size), score_thr=float(score_threshold),
                              max_instances=int(max_instances), grey=bool(grey), **knobs)
        with model.on_device():
            frames = run_frames(image, lambda i, f, progress: to_cpu_instances(
                seg(f, progress=progress, interrupt=_comfy.throw_if_interrupted), h, w))
        if track_ids:
            frames = track_frames(frames)
        return segment_outputs(image, frames, mask_output)




class CartoonSegAlphaMatte:
    DESCRIPTION = ("Alpha mattes of segmented instances: a trimap from each refined soft mask (unknown band at the "
                   "boundary, snapped to the line art), alpha solved from the image colours (closed-form matting, pymatting), then made "
                   "consistent front to back so overlapping mattes sum to at most 1 and occluded parts belong to "
                   "the front character. Outputs the mattes (MASK, one per instance) and RGBA cut-outs with "
                   "background-free edge colours.")
    CATEGORY = CATEGORY
    FUNCTION = "matte"
    RETURN_TYPES = ("CARTOONSEG_INSTANCES", "MASK", "IMAGE", "INT")
    RETURN_NAMES = ("instances", "alphas", "cutouts", "count")
    OUTPUT_TOOLTIPS = (
        "the instances with their alpha mattes (Puppet Rig, 3D Ken Burns and Instance Style Edit cut the "
        "characters out by them; Background Mask covers every pixel they reach)",
        "one alpha matte per instance, all frames in order (a zero mask when there are none)",
        "one RGBA cut-out per instance (IMAGE with 4 channels; SaveImage writes RGBA PNGs)",
        "number of instances over all frames",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "the frames the instances were segmented from"}),
                "instances": ("CARTOONSEG_INSTANCES", {"tooltip": "from Segment / Refine (refined soft masks)"}),
                "band": ("INT", {"default": 0, "min": 0, "max": 256,
                                 "tooltip": "unknown band on both sides of each boundary in pixels; 0 = twice "
                                            "the soft mask's ramp width (its uncertainty, which grows with the "
                                            "image-to-refiner scale), at least 3"}),
                "method": (list(MATTING_METHODS), {"default": "cf",
                                           "tooltip": "pymatting solver: cf = closed-form (default), knn, lkm"}),
            },
            "optional": {
                "line_art": ("BOOLEAN", {"default": True,
                                         "tooltip": "snap the trimap to dark outlines: a character's outline stays "
                                                    "in its matte, background lines stay out"}),
            },
        }

    def matte(self, image, instances, band, method, line_art=True):
        from cartoonseg.matting import MattingConfig, cutouts, instance_alphas

        image, frames = _comfy.frames_instances(_comfy.check_image(image), instances)  # one output frame per pair
        h, w = int(image.shape[1]), int(image.shape[2])
        config = MattingConfig(band=int(band) or None, method=str(method), line_art=bool(line_art))
        out = run_frames(image, lambda i, f, progress: instance_alphas(_comfy.image_to_uint8(f), frames[i],
                                                                       config, progress=progress,
                                                                       name=f"frame {i}"))
        alphas = [f.alphas for f in out if len(f)]
        cut = [torch.from_numpy(c) for i, f in enumerate(out) for c in cutouts(_comfy.image_to_uint8(image[i]), f)]
        mask = torch.cat(alphas) if alphas else torch.zeros(1, h, w)
        rgba = (torch.stack(cut).float() / 255.0) if cut else torch.zeros(1, h, w, 4)
        return (out, mask.contiguous(), rgba.contiguous(), int(sum(len(f) for f in out)))



NODE_CLASS_MAPPINGS = {
    "CartoonSegDetect": CartoonSegDetect,
    "CartoonSegRefine": CartoonSegRefine,
    "CartoonSegSegment": CartoonSegSegment,
    "CartoonSegAlphaMatte": CartoonSegAlphaMatte,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CartoonSegDetect": "Detect Instances (CartoonSeg)",
    "CartoonSegRefine": "Refine Masks (CartoonSeg)",
    "CartoonSegSegment": "Segment Instances (CartoonSeg)",
    "CartoonSegAlphaMatte": "Alpha Mattes (CartoonSeg)",
}
