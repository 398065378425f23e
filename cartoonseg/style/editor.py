"""The instance-aware style editing loop (paper §6.2, Fig. 8), independent of the diffusion backend.

For each frame: optionally restyle the background (characters removed first, as the original's PatchMatch clean
plate) and paste it through ``1 - union(masks > mask_thr)`` (binary, as the original's ``Image.composite``), or,
when the instances carry alpha mattes (``Instances.alphas``), composite the characters over it by their mattes,
``a F + (1 - a) background`` with ``a`` the sum of the mattes and ``F`` the estimated foreground colours
(:func:`cartoonseg.matting.unmix`), so no old background stays in hair strands or anti-aliased outlines. Then, back
to front, crop each instance with context, build its prompt (global style + its own tags), run img2img with the
**same seed** for every instance, and paste the result back through its feathered soft mask (the original's
``mask_blur``; the restyled crop redraws the character's edge, so the old matte does not describe it); each output
is the input of the next pass (``run_style.py``). Iteration ``k`` repeats the instance passes on the previous
result with seed ``seed + k*(k+1)/2``. ``mode="global"`` is the baseline the paper compares with: one img2img of
the whole image with the style prompt only.

The sampling itself is a *backend*: any callable taking a :class:`SampleRequest` and returning the restyled
region. :class:`cartoonseg.style.diffusers_backend.DiffusersBackend` runs diffusers pipelines; the ComfyUI node
wraps ComfyUI's own sampler. Images are float ``[H,W,3]`` RGB in [0,1], masks ``[H,W]`` in [0,1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..io import to_float_rgb
from ..structures import EXTRA_DEPTH, Instances
from ..transforms import check_same_aspect, resize_center_crop
from .config import StyleConfig
from .hints import extract_hint
from .prompts import instance_prompts, join_prompt
from .regions import dedupe_masks, feather_alpha, paint_order, paste, plan_crop, resize_image, resize_mask, work_size

__all__ = ["Backend", "PassRecord", "SampleRequest", "StyleResult", "count_passes", "style_edit", "style_edit_batch"]


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """One img2img call.

    Attributes:
        image: ``[1,h,w,3]`` float RGB in [0,1]; h and w are multiples of 8.
        prompt, negative: positive / negative text.
        seed: noise seed.
        hint: ``[1,h,w,3]`` ControlNet hint (white lines on black) or None = no ControlNet for this call.
        mask: ``[1,h,w]`` region to denoise (1 = resample, 0 = keep the input latent) or None = whole region.
        kind: ``"instance"``, ``"background"`` or ``"global"``.
        index: instance index in the frame's Instances (-1 for background/global).
        frame, iteration: where this call belongs.
    """

    image: Tensor
    prompt: str
    negative: str
    seed: int
    hint: Tensor | None = None
    mask: Tensor | None = None
    kind: str = "instance"
    index: int = -1
    frame: int = 0
    iteration: int = 0


Backend = Callable[[SampleRequest], Tensor]


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """What one pass did (for logs, tests and the node's prompt output)."""

    kind: str
    index: int
    frame: int
    iteration: int
    prompt: str
    negative: str
    seed: int
    box: tuple[int, int, int, int]
    work_hw: tuple[int, int]


@dataclasses.dataclass
class StyleResult:
    """Output of :func:`style_edit`: the image ``[H,W,3]`` and the passes in execution order."""

    image: Tensor
    passes: list[PassRecord]


def _check_image(image: Tensor, name: str = "image") -> Tensor:
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a float tensor [H,W,3] RGB in [0,1], got {type(image).__name__}")
    if image.dim() != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be [H,W,3] RGB, got shape {tuple(image.shape)}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"{name} is too small for diffusion: {image.shape[0]}x{image.shape[1]} (need >= 8x8)")
    return to_float_rgb(image, name=name)  # uint8 is 0..255 (not clamped to white), grey expanded, alpha dropped


def _selected(instances: Instances, config: StyleConfig) -> list[int]:
    keep = dedupe_masks(instances.masks, config.dedupe_threshold, instances.mask_thr)
    areas = instances.areas
    return [i for i in keep if int(areas[i]) >= max(1, config.min_area)]


def count_passes(instances: Instances, config: StyleConfig) -> int:
    """Number of backend calls :func:`style_edit` will make for one frame (for progress bars)."""
    if config.mode == "global":
        return config.iterations
    n = len(_selected(instances, config)) if len(instances) else 0
    return int(config.background_as_instance) + config.iterations * n


def _hint_for(source: Tensor, box: tuple[int, int, int, int], hw: tuple[int, int], kind: str, given: bool) -> Tensor:
    x1, y1, x2, y2 = box
    region = resize_image(source[y1:y2, x1:x2], hw)
    return (region if given else extract_hint(region, kind))[None]


def style_edit(
    image: Tensor,
    instances: Instances,
    backend: Backend,
    config: StyleConfig | None = None,
    *,
    background: Tensor | None = None,
    hint_image: Tensor | None = None,
    use_control: bool = True,
    frame: int = 0,
    progress: Callable[[], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> StyleResult:
    """Restyle one image, instance by instance.

    Args:
        image: float ``[H,W,3]`` RGB in [0,1].
        instances: the frame's :class:`Instances` (masks ``[N,H,W]`` at the image size; prompts/tags read from
            ``extras``, depth from ``extras["depth"]``).
        backend: the sampler, see :class:`SampleRequest`.
        config: :class:`StyleConfig` (None = the defaults).
        background: optional clean plate ``[H',W',3]`` of the image's aspect ratio, any size (another aspect is
            refused; characters already inpainted, e.g. by
            CartoonSegInpaintPatchMatch) for the background pass; otherwise ``config.background_fill`` makes one.
        hint_image: optional full-frame ControlNet hint ``[H',W',3]`` from an external preprocessor (white lines
            on black), any size; another aspect ratio is centre-cropped to the image's (as ComfyUI's ControlNet
            does, :func:`cartoonseg.transforms.resize_center_crop`); otherwise ``config.hint`` extracts one from the
            *original* image per region.
        use_control: False sends no hints at all (no ControlNet loaded).
        frame: frame index, passed through to the requests.
        progress: called after every pass.
        interrupt: called before every pass; raise from it to cancel.

    Returns:
        :class:`StyleResult` with the new image ``[H,W,3]`` and one :class:`PassRecord` per pass.
    """
    config = StyleConfig() if config is None else config
    image = _check_image(image)
    h, w = image.shape[:2]
    if not isinstance(instances, Instances):
        raise TypeError(f"instances must be a cartoonseg.Instances, got {type(instances).__name__}")
    if instances.image_size != (h, w):
        raise ValueError(f"instances are for a {instances.image_size} image but the image is {(h, w)}")
    if background is not None:  # checked before any pass: a plate of another picture would be stretched over it
        background = _check_image(background, "background")
        check_same_aspect(background.shape[:2], (h, w))
    hint_source = None
    if hint_image is not None:
        # another aspect ratio is centre-cropped, as ComfyUI's own ControlNet fits hints (never stretched)
        hint_source = resize_center_crop(_check_image(hint_image, "hint_image"), (h, w))
    hint_kind = None if (not use_control or (hint_source is None and config.hint == "none")) else config.hint
    want_hint = hint_kind is not None
    full = (0, 0, w, h)
    full_hw = work_size(h, w, config.resolution)
    canvas = image.clone()
    passes: list[PassRecord] = []

    def run(kind: str, index: int, it: int, box, hw, prompt: str, negative: str, source: Tensor, mask,
            lines_from: Tensor) -> Tensor:
        if interrupt is not None:
            interrupt()
        seed = config.iteration_seed(it)
        x1, y1, x2, y2 = box
        region = resize_image(source[y1:y2, x1:x2], hw)[None]
        hint = None
        if want_hint:
            given = hint_source is not None
            hint = _hint_for(hint_source if given else lines_from, box, hw, hint_kind, given)
        req = SampleRequest(
            image=region, prompt=prompt, negative=negative, seed=seed, hint=hint, mask=mask,
            kind=kind, index=index, frame=frame, iteration=it,
        )
        out = backend(req)
        if not isinstance(out, Tensor) or out.dim() != 4 or out.shape[0] != 1 or out.shape[-1] < 3:
            raise RuntimeError(f"style backend must return a [1,h,w,3] tensor, got {getattr(out, 'shape', out)}")
        out = torch.nan_to_num(out[0, ..., :3].float().cpu(), nan=0.0).clamp(0, 1)
        passes.append(PassRecord(kind, index, frame, it, prompt, negative, seed, tuple(box), tuple(hw)))
        result = resize_image(out, (y2 - y1, x2 - x1))
        if progress is not None:
            progress()
        return result

    if config.mode == "global":
        for it in range(config.iterations):
            out = run("global", -1, it, full, full_hw, config.style_prompt, config.negative_prompt, canvas, None, image)
            canvas = out
        return StyleResult(canvas, passes)

    keep = _selected(instances, config) if len(instances) else []
    sub = instances[keep] if keep else None
    masks = instances.masks.float().cpu().clamp(0, 1)

    if config.background_as_instance:
        mattes = None
        if keep and instances.alphas is not None:  # NaN: no coverage (as ops.background_mask reads it)
            mattes = torch.nan_to_num(instances.alphas.float().cpu(), nan=0.0).clamp(0, 1)
        if mattes is not None:  # what the characters cover (the mattes compose front to back: their sum)
            union = mattes[keep].sum(0).clamp(0, 1)
        else:  # the original composites through the binary union (repaint_person.py / run_style.py)
            union = (masks[keep] > instances.mask_thr).any(0).float() if keep else torch.zeros(h, w)
        if background is not None:
            plate = resize_image(background, (h, w))  # checked (float RGB, aspect) on entry
        elif keep and config.background_fill != "none":
            from ..inpaint import inpaint
            from ..ops import background_mask

            hole = background_mask(instances[keep], dilate=2)  # with mattes: every pixel they reach too
            plate = inpaint(canvas, hole, method=config.background_fill, seed=config.seed)
        else:
            plate = canvas
        prompt = join_prompt(config.style_prompt, config.background_prompt)
        negative = join_prompt(config.negative_prompt, config.background_negative)
        out = run("background", -1, 0, full, full_hw, prompt, negative, plate, None, plate)
        alpha = feather_alpha(1.0 - union, 0.0)
        if mattes is not None and bool(((union > 0) & (union < 1)).any()):
            # the characters "over" the new background: their estimated foreground colours, so the old
            # background mixed into a hair strand or an anti-aliased outline does not stay around them
            from ..matting import unmix

            fg, _ = unmix(canvas.cpu().numpy(), union.numpy())
            frac = ((union > 0) & (union < 1))[..., None].to(canvas.device)
            canvas = torch.where(frac, torch.from_numpy(fg).to(canvas), canvas)
        canvas = paste(canvas, out, full, alpha)

    if sub is None:
        return StyleResult(canvas, passes)
    prompts = instance_prompts(instances, config.style_prompt)
    depth = instances.extras.get(EXTRA_DEPTH)
    order = [keep[j] for j in paint_order(sub.masks, sub.boxes, [depth[i] for i in keep] if depth else None, config.order)]
    alphas = {i: feather_alpha(masks[i], config.mask_feather) for i in order}
    for it in range(config.iterations):
        for i in order:
            plan = plan_crop(
                masks[i], padding=config.crop_padding, feather=config.mask_feather,
                resolution=config.resolution, threshold=instances.mask_thr,
            )
            if plan is None:
                continue
            x1, y1, x2, y2 = plan.box
            alpha = alphas[i][y1:y2, x1:x2]
            mask = resize_mask(alpha, plan.work_hw)[None] if config.masked_denoise else None
            prompt = prompts[i]
            out = run("instance", i, it, plan.box, plan.work_hw, prompt, config.negative_prompt, canvas, mask, image)
            canvas = paste(canvas, out, plan.box, alpha)
    return StyleResult(canvas, passes)


def style_edit_batch(
    images: Tensor,
    instances: Sequence[Instances],
    backend: Backend,
    config: StyleConfig | None = None,
    *,
    backgrounds: Tensor | None = None,
    hint_images: Tensor | None = None,
    use_control: bool = True,
    progress: Callable[[], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> tuple[Tensor, list[PassRecord]]:
    """:func:`style_edit` over a batch ``[B,H,W,3]`` with one :class:`Instances` per frame (video: every frame and
    every instance uses the same seed, so a tracked character gets the same noise in each frame).

    ``backgrounds`` / ``hint_images`` may have 1 frame (used for all) or B frames.
    Returns the images ``[B,H,W,3]`` and all pass records.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be [B,H,W,3], got {getattr(images, 'shape', type(images).__name__)}")
    b = images.shape[0]
    if len(instances) != b:
        raise ValueError(f"got {len(instances)} Instances for {b} frames; need one per frame")

    def pick(t: Tensor | None, i: int, name: str) -> Tensor | None:
        if t is None:
            return None
        if t.dim() == 3:
            return t
        if t.shape[0] not in (1, b):
            raise ValueError(f"{name} has {t.shape[0]} frames; need 1 or {b}")
        return t[i if t.shape[0] == b else 0]

    outs, records = [], []
    for f in range(b):
        res = style_edit(
            images[f], instances[f], backend, config,
            background=pick(backgrounds, f, "backgrounds"), hint_image=pick(hint_images, f, "hint_images"),
            use_control=use_control, frame=f, progress=progress, interrupt=interrupt,
        )
        outs.append(res.image)
        records.extend(res.passes)
    return torch.stack(outs), records
