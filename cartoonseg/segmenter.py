"""Two-stage cartoon instance segmentation (arXiv 2312.01943 §4): RTMDet-Ins proposes boxes, scores and coarse
masks; IS-Net refines each instance's mask from the image plus its coarse mask (or any box/mask prompt).

Numerics follow the reference implementation (``AnimeInsSeg`` with ``refinenet_isnet``):

* stage 1 sees the **BGR** image letterboxed (resized up or down) to ``det_size`` with pad value 114 at the
  bottom/right; detections with score > ``score_thr`` are kept, at most ``max_instances``;
* stage 2 sees the **BGR** image / 255, only scaled *down* so its long side fits ``refine_size``, zero-padded
  bottom/right, plus the binary coarse mask as channel 3, in batches of ``refine_batch``; the output
  ``sigmoid(d1)`` is cropped and resized to the image with bilinear ``align_corners=True``.

Masks in the returned :class:`~cartoonseg.structures.Instances` are soft probabilities; ``Instances.binary``
thresholds them at ``mask_thr`` (refined) or the detector's ``mask_thr_binary`` (coarse, 0.5; a ``mask_thr`` given to a
Segmenter without a refiner thresholds the coarse masks instead). Boxes are the
detector's boxes, not recomputed after refinement (as in the reference).

Fast paths (on by default: ``fuse=True``, ``channels_last=True``): inference runs on a cached copy of each
network with BatchNorm folded into the convolutions (:mod:`cartoonseg.models.fuse`) and channels-last weights,
faster on CPU with oneDNN (figures: ``bench/run.py``). Outputs equal the reference ones up to fp32 rounding: on the golden data the
refiner's d1 logits move by 1.1e-4 of their range and 3e-5 of the refined mask pixels flip; the detector's mask
logits (~1e3) amplify rounding, so 1.2e-4 of a coarse mask's pixels flip. ``fuse=False, channels_last=False``
runs the reference op order and reproduces the original implementation bit for bit (the golden tests use it).

Full-resolution work (mask decoding, paste-back) is done a few instances at a time into one preallocated
``[N,H,W]`` output, so memory stays near the size of the result for large images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import MAX_CANVAS, RefinerConfig
from .device import DTYPES, PRECISION_CHOICES, resolve_precision
from .io import to_float_mask, to_rgb_uint8
from .models.fuse import inference_copy, is_prepared
from .models.isnet import ISNetDIS
from .models.rtmdet_ins import RTMDetIns
from .structures import Instances, check_mask_budget, masks_to_boxes
from .transforms import grey_rgb, letterbox, refine_canvas, resize_float

__all__ = ["Segmenter", "PROMPT_MODES", "check_settings"]

#: how :meth:`Segmenter.refine` turns box prompts into coarse masks (see the ``prompt_mode`` argument)
PROMPT_MODES = ("kernel", "rectangle")


def check_settings(*, det_size: int | None = None, score_thr: float | None = None, mask_thr: float | None = None,
                   refine_size: int | None = None, max_instances: int | None = None, precision: str | None = None,
                   refine_batch: int | None = None, prompt_mode: str | None = None) -> None:
    """``ValueError`` naming the first :class:`Segmenter` setting out of its range (None = not checked). The
    Segmenter runs it; commands call it before they load weights or create outputs, so a bad option fails first."""
    if det_size is not None and (int(det_size) % 32 or not 32 <= int(det_size) <= MAX_CANVAS):
        raise ValueError(f"det_size must be a multiple of 32 in [32, {MAX_CANVAS}], got {det_size}")
    if score_thr is not None and not 0.0 <= score_thr <= 1.0:
        raise ValueError(f"score_thr must lie in [0,1], got {score_thr}")
    if mask_thr is not None and not 0.0 <= mask_thr <= 1.0:
        raise ValueError(f"mask_thr must lie in [0,1], got {mask_thr}")
    if refine_size is not None and not 32 <= refine_size <= MAX_CANVAS:
        raise ValueError(f"refine_size must lie in [32, {MAX_CANVAS}], got {refine_size}")
    if max_instances is not None and not 1 <= max_instances <= 10_000:
        raise ValueError(f"max_instances must lie in [1, 10000], got {max_instances}")
    if precision is not None and precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    if refine_batch is not None and int(refine_batch) < 1:
        raise ValueError(f"refine_batch must be >= 1 or None, got {refine_batch}")
    if prompt_mode is not None and prompt_mode not in PROMPT_MODES + ("auto",):
        raise ValueError(f"prompt_mode must be one of {PROMPT_MODES + ('auto',)}, got {prompt_mode!r}")


class Segmenter:
    """Runs the detector and (optionally) the refiner on one image at a time.

    Args:
        detector: an :class:`~cartoonseg.models.RTMDetIns` (see :func:`cartoonseg.load_detector`).
        refiner: an :class:`~cartoonseg.models.ISNetDIS` with 4 input channels, or None for coarse masks only.
        det_size: detector canvas (multiple of 32); None = the checkpoint's test pipeline size (640).
        score_thr: keep detections with score > this.
        mask_thr: threshold of the refined probabilities for ``Instances.binary``; None = the refiner's
            ``RefinerConfig.mask_thr`` (saved in every weights file; 0.3, the original's). Without a refiner a value
            given here thresholds the coarse masks that calling the Segmenter returns; None keeps the detector's
            ``mask_thr_binary`` (0.5). ``result_mask_thr`` says which applies.
        refine_size: refiner canvas; images larger than this are scaled down for stage 2; None = the refiner's
            ``RefinerConfig.refine_size`` (720).
        max_instances: at most this many detections (highest scores first).
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"auto"``: autocast for the convolutions; the dynamic
            mask convs and all post-processing stay in fp32. Resolved for the current device at every call by
            :func:`cartoonseg.device.resolve_precision`: ``"auto"`` = the fastest native precision (bf16 on CPUs
            with AMX/AVX512-BF16, fp16 on CUDA, else fp32); a precision the device cannot run (bf16 on an AVX2-only
            CPU) falls back to fp32 with one warning.
        refine_batch: instances refined per forward pass; None = 4 (the reference's batches) except on the fast
            CPU path, where it is 1: oneDNN gains nothing from a batch there (``bench/run.py`` measures it).
        fuse: run a cached BN-folded copy of the networks (inference only; costs one extra copy of the weights).
            False (with ``channels_last=False``) = the reference op order, bit-exact with the original code.
        channels_last: run the convolutions in channels-last memory format (faster with oneDNN on CPU and with
            cuDNN tensor cores).
        prompt_mode: how :meth:`refine` turns **box** prompts into coarse masks. ``"kernel"`` (the reference's
            ``segment_with_bboxes``): the detector runs on the image, each box picks the candidate (before NMS,
            score > the checkpoint's ``score_thr``) with the highest box IoU, and that candidate's dynamic-kernel
            mask (probability > 0.5) is the coarse mask; the instance gets the candidate's box and score, and
            ``extras["prompt_box"]`` / ``extras["prompt_iou"]`` record the user's box and the IoU. A box that
            overlaps no candidate falls back to its rectangle (``prompt_iou`` 0, score 1); one that also covers no pixel of
            the image (outside it, inverted) gets an empty mask in both modes. Needs a detector.
            ``"rectangle"``: the filled box is the coarse mask (as in the refiner's training with box prompts), the
            instance keeps the user's box and score 1. A loose box gives the refiner a character-shaped prompt in
            kernel mode and a box-shaped one in rectangle mode. Mask and Instances prompts are not affected.
            ``"auto"`` (default): kernel when this Segmenter has a detector, rectangle for a refiner alone.
        grey: convert every image to grey and back to 3 channels before both stages (manga pages and line art;
            the reference's ``infer_grey``, which it applied to tagging only).
    """

    def __init__(
        self,
        detector: RTMDetIns | None,
        refiner: ISNetDIS | None = None,
        det_size: int | None = 640,
        score_thr: float = 0.3,
        mask_thr: float | None = None,
        refine_size: int | None = None,
        max_instances: int = 100,
        precision: str = "fp32",
        refine_batch: int | None = None,
        fuse: bool = True,
        channels_last: bool = True,
        prompt_mode: str = "auto",
        grey: bool = False,
    ) -> None:
        if detector is not None and not isinstance(detector, RTMDetIns):
            raise TypeError(f"detector must be an RTMDetIns (cartoonseg.load_detector), got {type(detector).__name__}")
        if refiner is not None and not isinstance(refiner, ISNetDIS):
            raise TypeError(f"refiner must be an ISNetDIS (cartoonseg.load_refiner), got {type(refiner).__name__}")
        if refiner is not None and refiner.config.in_ch != 4:
            raise ValueError(f"the refiner must take 4 input channels (image + mask), got {refiner.config.in_ch}")
        if detector is None and refiner is None:
            raise ValueError("Segmenter needs a detector, a refiner, or both")
        det_size = detector.config.det_size if (det_size is None and detector is not None) else det_size
        # one source of truth: the refiner's own config (saved with its weights) gives the stage-2 defaults
        ref_cfg = refiner.config if refiner is not None else RefinerConfig()
        mask_thr_given = mask_thr is not None
        mask_thr = ref_cfg.mask_thr if mask_thr is None else mask_thr
        refine_size = ref_cfg.refine_size if refine_size is None else refine_size
        check_settings(det_size=det_size, score_thr=score_thr, mask_thr=mask_thr, refine_size=refine_size,
                       max_instances=max_instances, precision=precision, refine_batch=refine_batch,
                       prompt_mode=prompt_mode)
        self.detector = detector.eval() if detector is not None else None
        self.refiner = refiner.eval() if refiner is not None else None
        self.det_size = None if det_size is None else int(det_size)
        self.score_thr = float(score_thr)
        self.mask_thr = float(mask_thr)
        #: the ``mask_thr`` of what calling this Segmenter returns: ``mask_thr`` with a refiner or when given, else
        #: (coarse masks, no threshold asked for) the detector's ``mask_thr_binary``
        self.result_mask_thr = (self.mask_thr if refiner is not None or mask_thr_given
                                else float(detector.config.mask_thr_binary))
        self.refine_size = int(refine_size)
        self.max_instances = int(max_instances)
        self.precision = precision
        self.refine_batch = None if refine_batch is None else int(refine_batch)
        self.fuse = bool(fuse)
        self.channels_last = bool(channels_last)
        self.prompt_mode = prompt_mode if prompt_mode != "auto" else ("kernel" if detector is not None else "rectangle")
        self.grey = bool(grey)

    # ------------------------------------------------------------------ device handling
    @property
    def device(self) -> torch.device:
        model = self.detector if self.detector is not None else self.refiner
        return next(model.parameters()).device

    @property
    def effective_precision(self) -> str:
        """The precision that runs on the current device (``precision`` after capability checks)."""
        return resolve_precision(self.precision, self.device)

    def to(self, device: torch.device | str) -> Segmenter:
        for model in (self.detector, self.refiner):
            if model is not None:
                model.to(device)
        return self

    def _infer(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that actually runs: the model itself or its cached fused / channels-last copy."""
        if not (self.fuse or self.channels_last) or is_prepared(model, self.fuse, self.channels_last):
            return model
        # CPU bf16 on a fully fused copy: store the weights in bf16 (every conv is a FusedConvAct or runs under
        # autocast), so no call re-casts them
        cpu_bf16 = self.fuse and self.device.type == "cpu" and self.effective_precision == "bf16"
        dtype = torch.bfloat16 if cpu_bf16 else None
        return inference_copy(model, fuse=self.fuse, channels_last=self.channels_last, dtype=dtype)

    def _refine_batch(self) -> int:
        if self.refine_batch is not None:
            return self.refine_batch
        fast = self.fuse or self.channels_last
        return 1 if (fast and self.device.type == "cpu") else 4

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        precision = self.effective_precision
        if precision == "fp32":
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=DTYPES[precision]):
            yield

    # ------------------------------------------------------------------ stages
    @torch.no_grad()
    def detect(self, image: np.ndarray | Tensor) -> Instances:
        """Stage 1 on an RGB image (see :func:`cartoonseg.io.to_rgb_uint8` for accepted inputs).

        Returns:
            Instances with coarse mask probabilities (``mask_thr`` = the detector's ``mask_thr_binary``).
        """
        if self.detector is None:
            raise RuntimeError("this Segmenter has no detector; use refine(image, prompts) with boxes or masks")
        det = self.detector
        outputs, geom = self._detector_outputs(self._rgb(image))
        dets = det.postprocess(
            outputs,
            0,
            img_shape=geom.img_shape,
            ori_shape=geom.ori_shape,
            scale_factor=geom.scale_factor,
            max_per_img=self.max_instances,
            min_score=self.score_thr,
        )
        return Instances(
            boxes=dets.boxes.float(),
            scores=dets.scores.float(),
            masks=dets.mask_logits.float().sigmoid_(),
            labels=dets.labels,
            mask_thr=det.config.mask_thr_binary,
        )

    def _rgb(self, image: np.ndarray | Tensor) -> np.ndarray:
        """The checked uint8 RGB image both stages see (grey-converted when ``grey``)."""
        rgb = to_rgb_uint8(image)
        return grey_rgb(rgb) if self.grey else rgb

    def _detector_outputs(self, rgb: np.ndarray) -> tuple:
        """Stage-1 network outputs on an RGB uint8 image, and the letterbox geometry."""
        det = self.detector
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        canvas, geom = letterbox(bgr, self.det_size, det.config.pad_value)
        with self._autocast():
            outputs = self._infer(det)(self._layout(det.normalize(canvas[None].to(self.device))))
        return outputs, geom

    @torch.no_grad()
    def refine(self, image: np.ndarray | Tensor, prompts: Instances | Tensor, *,
               prompt_mode: str | None = None, progress: Callable[[int, int], None] | None = None,
               interrupt: Callable[[], None] | None = None) -> Instances:
        """Stage 2: refine instance masks from prompts of any origin.

        Args:
            image: RGB image (as for :meth:`detect`).
            prompts: an :class:`Instances` (its binary masks are the coarse masks; boxes/scores/labels/ids/extras
                are kept), or a mask tensor ``[N,H,W]`` (soft or binary, image size), or a box tensor ``[N,4]``
                xyxy in image pixels (coarse mask from the detector's kernels or the rectangle: ``prompt_mode``). A
                box that covers no pixel of the image (outside it, inverted, thinner than a pixel) and matches no
                detection keeps its instance, with an empty mask.
            prompt_mode: ``"kernel"`` or ``"rectangle"`` for box prompts; None = this Segmenter's ``prompt_mode``
                (see the class docstring).
            progress: ``progress(done, total)`` after each refined instance (progress bars).
            interrupt: called before each instance; raising from it stops the work (Cancel).

        Returns:
            Instances with refined mask probabilities and ``mask_thr`` = this Segmenter's ``mask_thr``.
        """
        mode = self.prompt_mode if prompt_mode in (None, "auto") else prompt_mode
        if mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode must be one of {PROMPT_MODES}, got {mode!r}")
        if self.refiner is None:
            raise RuntimeError("this Segmenter has no refiner; pass refiner=load_refiner(...)")
        rgb = self._rgb(image)
        h, w = rgb.shape[:2]
        base = self._prompt_instances(prompts, h, w)
        base = base.replace(extras={k: list(v) for k, v in base.extras.items()})  # never share lists with the input
        if len(base) == 0:
            return base.replace(mask_thr=self.mask_thr)
        boxes_given = isinstance(prompts, Tensor) and prompts.dim() == 2 and prompts.shape[1] == 4
        # a box that covers no pixel of the image (outside it, inverted, thinner than a pixel) gives an empty prompt
        no_pixel = ~base.masks.flatten(1).any(1) if boxes_given else None
        if mode == "kernel" and boxes_given:
            base = self.kernel_prompts(rgb, base.boxes)
        if isinstance(prompts, Instances):  # coarse masks are binarised, one instance at a time
            out = self._refine(rgb, len(base), base.device, lambda i: base.masks[i] > base.mask_thr, progress, interrupt)
        else:
            out = self._refine(rgb, len(base), base.device, lambda i: base.masks[i], progress, interrupt)
        if no_pixel is not None:  # ... and nothing to segment: an empty mask, not what the refiner makes of nothing
            blank = (no_pixel & ~base.masks.flatten(1).any(1).cpu()).to(out.device)
            out[blank] = 0.0
        return base.replace(masks=out, mask_thr=self.mask_thr, alphas=None)

    @torch.no_grad()
    def _refine(self, rgb: np.ndarray, count: int, out_device: torch.device, prompt: Callable[[int], Tensor],
                progress: Callable[[int, int], None] | None = None,
                interrupt: Callable[[], None] | None = None) -> Tensor:
        """Stage 2 on an RGB uint8 image; ``prompt(i)`` gives instance i's coarse mask ``[H,W]`` (bool or float).
        ``interrupt()`` runs before each batch of instances, ``progress(done, count)`` after it.

        Returns:
            float32 ``[count,H,W]`` refined probabilities. Full-resolution temporaries are one ``[H,W]`` map at a
            time; the only ``[N,H,W]`` allocation is this output.
        """
        h, w = rgb.shape[:2]
        check_mask_budget(count, h, w, "refined instance masks")
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        size = self.refine_size
        canvas, (h2, w2) = refine_canvas(bgr, size)
        del bgr
        canvas = canvas.to(self.device)
        refiner = self._infer(self.refiner)
        out = torch.empty(count, h, w, dtype=torch.float32, device=out_device)
        batch = self._refine_batch()
        x = torch.zeros(min(batch, count), 4, size, size, device=self.device)
        x[:, :3] = canvas
        for start in range(0, count, batch):
            if interrupt is not None:
                interrupt()
            stop = min(start + batch, count)
            n = stop - start
            for j in range(n):
                m = prompt(start + j).to(self.device, torch.float32)
                x[j, 3, :h2, :w2] = resize_float(m, (h2, w2)) if (h2, w2) != (h, w) else m
                del m
            with self._autocast():
                logits = refiner.predict_logits(self._layout(x[:n]))
            prob = logits.float().sigmoid_()[:, :, :h2, :w2]
            for j in range(n):  # paste back one instance at a time: the temporary is one [H,W] map
                out[start + j] = F.interpolate(prob[j : j + 1], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
            if progress is not None:
                progress(stop, count)
        return out

    @torch.no_grad()
    def __call__(self, image: np.ndarray | Tensor, *, progress: Callable[[int, int], None] | None = None,
                 interrupt: Callable[[], None] | None = None) -> Instances:
        """Detect, then refine when a refiner is present. See the module docstring for the conventions.

        ``progress(done, total)`` is called after detection (``(0, N)``: N instances to refine) and after each
        refined instance; ``interrupt()`` before each instance (raise from it to stop: Cancel).

        Between the stages the coarse probabilities are reduced to binary masks (1 byte per pixel, all the
        refiner uses), so a large image holds at most one float ``[N,H,W]`` map at a time.
        """
        rgb = self._rgb(image)
        instances = self.detect(rgb)
        if self.refiner is None or not len(instances):
            return instances.replace(mask_thr=self.result_mask_thr)
        if progress is not None:
            progress(0, len(instances))
        coarse = instances.binary
        # keep boxes/scores/labels; drop the float coarse maps (a zero-stride view stands in until the refined ones)
        base = instances.replace(masks=torch.zeros((), device=instances.device).expand(*coarse.shape))
        del instances
        out = self._refine(rgb, len(base), base.device, lambda i: coarse[i], progress, interrupt)
        del coarse
        return base.replace(masks=out, mask_thr=self.mask_thr)

    @torch.no_grad()
    def kernel_prompts(self, image: np.ndarray | Tensor, boxes: Tensor) -> Instances:
        """Coarse masks of box prompts through the detector's dynamic kernels (``prompt_mode="kernel"``, the
        reference's ``segment_with_bboxes``): each box picks the pre-NMS candidate with the highest box IoU and
        gets that candidate's coarse mask (the detector's mask decoding, probability > 0.5), box and score;
        a box that overlaps no candidate keeps its rectangle. See the class docstring.

        Args:
            image: RGB image (as for :meth:`detect`; converted to grey when ``grey``).
            boxes: ``[N,4]`` xyxy in image pixels.

        Returns:
            Instances with binary (0/1 float) coarse masks, ``mask_thr`` 0.5 and ``extras["prompt_box"]`` /
            ``extras["prompt_iou"]``.
        """
        if self.detector is None:
            raise ValueError("prompt_mode='kernel' needs a detector (box prompts pick one of its candidates); "
                             "use prompt_mode='rectangle' with a refiner alone")
        from .boxes import box_iou  # the project's one pairwise box IoU

        rgb = self._rgb(image)  # grey conversion is idempotent: refine() may pass an already converted image
        h, w = rgb.shape[:2]
        prompt = self._prompt_instances(boxes, h, w)
        n = len(prompt)
        det = self.detector
        outputs, geom = self._detector_outputs(rgb)
        cands = det.postprocess(outputs, 0, img_shape=geom.img_shape, ori_shape=geom.ori_shape,
                                scale_factor=geom.scale_factor, with_masks=False, with_nms=False)
        user = prompt.boxes.to(self.device)
        if len(cands) and n:
            best_iou, best = box_iou(user, cands.boxes.float()).max(1)
        else:
            best_iou, best = torch.zeros(n, device=self.device), torch.zeros(n, dtype=torch.long, device=self.device)
        hit = best_iou > 0
        masks, out_boxes, scores = prompt.masks, prompt.boxes.clone(), prompt.scores.clone()
        if bool(hit.any()):
            picked = cands.select(best[hit])
            logits = det.decode_masks(outputs.mask_feat[0], picked, ori_shape=geom.ori_shape,
                                      scale_factor=geom.scale_factor)
            rows = hit.nonzero().flatten().cpu()
            masks[rows] = (logits > 0).float().to(masks.device)  # sigmoid > 0.5, as the reference hard-codes
            out_boxes[rows] = picked.boxes.float().to(out_boxes.device)
            scores[rows] = picked.scores.float().to(scores.device)
        extras = {"prompt_box": [[round(float(v), 3) for v in b] for b in prompt.boxes.tolist()],
                  "prompt_iou": [round(float(v), 6) for v in best_iou.tolist()]}
        return Instances(boxes=out_boxes, scores=scores, masks=masks, mask_thr=0.5, extras=extras)

    # ------------------------------------------------------------------ helpers
    def _prompt_instances(self, prompts: Instances | Tensor, h: int, w: int) -> Instances:
        if isinstance(prompts, Instances):
            if prompts.image_size != (h, w):
                raise ValueError(f"prompt instances are for a {prompts.image_size} image, the image is {(h, w)}")
            return prompts
        if not isinstance(prompts, Tensor):
            raise TypeError(f"prompts must be Instances, a mask tensor [N,H,W] or boxes [N,4], got {type(prompts)}")
        raw = prompts.detach().cpu()  # its dtype tells how mask values read (io.to_float_mask); boxes are pixels
        prompts = raw.float()
        if not torch.isfinite(prompts).all():
            _refuse_non_finite(raw, prompts)
        if prompts.dim() == 2 and prompts.shape == (h, w) and w == 4:
            raise ValueError(f"prompts of shape {tuple(prompts.shape)} are ambiguous for a {h}x{w} image (boxes [N,4] "
                             f"or one mask [H,W]?): pass a mask as [1,H,W] or boxes as Instances")
        if prompts.dim() == 2 and prompts.shape[1] == 4:
            check_mask_budget(len(prompts), h, w, "box prompt masks")
            return Instances(boxes=prompts, scores=torch.ones(len(prompts)), masks=boxes_to_masks(prompts, h, w))
        if prompts.dim() == 2 and prompts.shape == (h, w):
            prompts = prompts[None]
        if prompts.dim() == 3:
            if prompts.shape[1:] != (h, w):
                raise ValueError(f"prompt masks must be [N,{h},{w}] (the image size), got {tuple(prompts.shape)}")
            masks = to_float_mask(raw.reshape(prompts.shape), name="prompt masks")  # uint8 0..255, bool 0/1
            boxes = masks_to_boxes(masks > 0.5)
            return Instances(boxes=boxes, scores=torch.ones(len(masks)), masks=masks)
        raise ValueError(f"prompts must be masks [N,H,W] or boxes [N,4], got shape {tuple(prompts.shape)}")


def _refuse_non_finite(raw: Tensor, prompts: Tensor) -> None:
    """The ValueError for prompts with a NaN/infinite value (or a float64 one past float32's range), naming the
    first such box (its coordinates) or mask (its index)."""
    rows = prompts if prompts.dim() > 1 else prompts[None]
    i = int((~torch.isfinite(rows.flatten(1))).any(1).nonzero()[0])
    overflow = bool(torch.isfinite(raw if raw.dim() > 1 else raw[None])[i].all())
    why = "a coordinate past float32's range" if overflow else "a NaN or infinite coordinate"
    if prompts.dim() == 2 and prompts.shape[1] == 4:
        raise ValueError(f"box prompt {i} {raw[i].tolist()} has {why}; boxes are finite xyxy pixels "
                         f"(NaN or infinite values are refused)")
    raise ValueError(f"prompts contain NaN or infinite values (or values past float32's range): prompt {i}")


def boxes_to_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Filled rectangles ``[N,H,W]`` (float 0/1) of xyxy boxes, clipped to the image."""
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    b = boxes.float()[:, :, None, None]
    inside = (xs >= b[:, 0]) & (xs <= b[:, 2]) & (ys >= b[:, 1]) & (ys <= b[:, 3])
    return inside.float()
