"""Instance-aware style editing library (cartoonseg.style): regions, hints, prompts, the per-instance loop, and the
diffusers backend on a tiny randomly initialised SD1.5-style model (UNet/VAE/CLIP/ControlNet built here, no
downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _drawn import stick_figure
from cartoonseg.structures import Instances
from cartoonseg.style import (
    StyleConfig,
    canny,
    count_passes,
    dedupe_masks,
    feather_alpha,
    instance_prompts,
    lineart,
    paint_order,
    paste,
    plan_crop,
    style_edit,
    style_edit_batch,
    style_preset,
)
from cartoonseg.style.hints import extract_hint
from cartoonseg.style.regions import work_size


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _one_thread(_deterministic_threads):
    # tiny models: one thread is fastest and most stable on a shared CPU
    torch.set_num_threads(1)
    yield

def _scene(h: int = 96, w: int = 128):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(h, w, 3, generator=g) * 0.5 + 0.25
    m = torch.zeros(2, h, w)
    m[0, 16:48, 24:56] = 1.0  # far (higher bottom edge)
    m[1, 40:80, 64:104] = 0.9  # near, soft
    m[1, 38:40, 64:104] = 0.3  # a soft fringe
    inst = Instances.from_masks(m)
    inst = inst.replace(
        extras={
            "tags": [{"1girl": 0.95, "long_hair": 0.9, "hatsune_miku": 0.9, "smile_(x)": 0.6}, {"1boy": 0.9}],
            "character_tags": [["hatsune_miku"], []],
        }
    )
    return img, inst


class Spy:
    """Backend recording every request; returns a deterministic function of the input and the seed."""

    def __init__(self, fn=None):
        self.requests = []
        self.fn = fn

    def __call__(self, req):
        self.requests.append(req)
        if self.fn is not None:
            return self.fn(req)
        g = torch.Generator().manual_seed(req.seed)
        return (1.0 - req.image) * 0.5 + 0.5 * torch.rand(req.image.shape, generator=g)


# ----------------------------------------------------------------------------------------------- hints
def test_lineart_marks_dark_strokes_white_on_black():
    img = torch.ones(32, 32, 3)
    img[:, 15:17] = 0.0  # a vertical ink line
    out = lineart(img)
    assert out.shape == (32, 32, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(out[:, 15:17].mean()) > 0.8
    assert float(out[:, :8].max()) == 0.0 and float(out[:, 24:].max()) == 0.0  # flat paper stays black
    batch = lineart(torch.stack([img, img]))
    assert batch.shape == (2, 32, 32, 3) and torch.equal(batch[0], out)


def test_canny_finds_a_thin_step_edge():
    img = torch.zeros(40, 40, 3)
    img[:, 20:] = 1.0
    e = canny(img)[..., 0]
    assert set(torch.unique(e).tolist()) <= {0.0, 1.0}
    cols = e.sum(0)
    assert cols[18:22].sum() >= 40 and cols[:14].sum() == 0 and cols[26:].sum() == 0
    assert int((e[:, 17:23] > 0).sum(1).max()) <= 2  # non-maximum suppression keeps it thin
    with pytest.raises(ValueError, match="low <= high"):
        canny(img, low=0.5, high=0.1)
    with pytest.raises(TypeError):
        lineart([[0.0]])


# ----------------------------------------------------------------------------------------------- regions
def test_plan_crop_grows_by_padding_and_clips():
    m = torch.zeros(100, 200)
    m[10:30, 50:90] = 1
    plan = plan_crop(m, padding=16, feather=0, resolution=0)
    assert plan.box == (34, 0, 106, 46)  # y1 clipped at the top
    assert plan.work_hw == (48, 72)  # rounded to multiples of 8
    plan = plan_crop(m, padding=2, feather=4, resolution=256)
    x1, _, x2, _ = plan.box
    assert x1 == 50 - 9 and x2 == 90 + 9  # the feather band (2*4 + 1) wins over a smaller padding
    assert max(plan.work_hw) == 256 and all(s % 8 == 0 for s in plan.work_hw)
    assert plan_crop(torch.zeros(10, 10)) is None
    assert work_size(3, 5, 0) == (8, 8)


def test_feather_is_outward_only_and_bounded():
    m = torch.zeros(64, 64)
    m[20:40, 20:40] = 1
    a = feather_alpha(m, 3.0)
    assert torch.all(a >= m)  # every mask pixel keeps at least its mask value
    assert float(a[20:40, 20:40].min()) == 1.0
    reach = 2 * 3  # Gaussian truncated at 2 std
    assert float(a[: 20 - reach - 1].max()) == 0.0 and float(a[:, 40 + reach + 1 :].max()) == 0.0
    assert 0 < float(a[20 - 2, 30]) < 1
    tiny = torch.full((8, 8), 0.5 / 255)
    assert float(feather_alpha(tiny, 0).max()) == 0.0  # below one 8-bit level counts as zero


def test_paste_keeps_zero_alpha_pixels_bit_identical():
    canvas = torch.rand(20, 30, 3)
    patch = torch.rand(10, 10, 3)
    alpha = torch.zeros(10, 10)
    alpha[2:5, 2:5] = 0.5
    out = paste(canvas, patch, (5, 5, 15, 15), alpha)
    changed = (out != canvas).any(-1)
    expected = torch.zeros(20, 30, dtype=torch.bool)
    expected[7:10, 7:10] = True
    assert torch.equal(changed, expected)
    with pytest.raises(ValueError, match="do not match box"):
        paste(canvas, patch, (0, 0, 5, 5), alpha)


def test_paint_order_back_to_front():
    m = torch.ones(3, 4, 4)
    boxes = torch.tensor([[0, 0, 4, 30], [0, 0, 4, 10], [0, 0, 4, 20]], dtype=torch.float32)
    assert paint_order(m, boxes) == [1, 2, 0]  # lower bottom edge = nearer = painted last
    assert paint_order(m, boxes, depth=[0.9, 0.1, 0.5]) == [1, 2, 0]
    assert paint_order(m, boxes, depth=[0.1, 0.9, 0.5]) == [0, 2, 1]  # depth (larger = nearer) wins
    assert paint_order(m, boxes, depth=[0.1, None, 0.5]) == [1, 2, 0]  # incomplete depth: auto falls back
    nan = float("nan")  # depth pooling's value for an empty mask: unknown, like None (it used to scramble the sort)
    for depth in ([nan, 0.9, 0.5], [0.1, nan, 0.5], [0.1, 0.9, nan]):
        assert paint_order(m, boxes, depth=depth) == [1, 2, 0]
        with pytest.raises(ValueError, match="known"):
            paint_order(m, boxes, depth=depth, order="depth")
    assert paint_order(m, boxes, order="index") == [0, 1, 2]
    with pytest.raises(ValueError, match="depth"):
        paint_order(m, boxes, order="depth")


def _figure(cx: int, h: int = 96, w: int = 128) -> torch.Tensor:
    """A drawn figure's soft mask ``[h,w]`` standing on the ground line y = 88 (``tests/_drawn.py``), blurred 3x3."""
    return torch.from_numpy(stick_figure(cx, 0.7, kernel=3, h=h, w=w))


def _one_hiding_another(back_x: int, front_x: int):
    """Two figures on one ground line, the one at ``front_x`` drawn over the one at ``back_x``, as a segmenter
    sees them: the back one's mask only its visible part (its drawing less the front one's). Instance 0 is the
    back one. Returns the image, the masks ``[2,H,W]`` and the two colours."""
    back, front = _figure(back_x), _figure(front_x)
    colours = torch.tensor([[0.9, 0.4, 0.5], [0.95, 0.75, 0.3]])
    img = torch.full((96, 128, 3), 0.5)
    img[:] = torch.tensor([0.6, 0.8, 0.95])
    for m, col in ((back, colours[0]), (front, colours[1])):
        img = img * (1 - m[..., None]) + m[..., None] * col
    return img, torch.stack([back * (1 - front), front]), colours


@pytest.mark.parametrize("back_x, front_x", [(50, 72), (72, 50), (44, 58), (84, 68), (55, 74), (73, 54)])
def test_touching_figures_are_painted_as_the_picture_layers_them(back_x, front_x):
    """Two figures on one ground line tie on the ground rule, whose area tie-break put the larger (unbroken, front)
    one first: the back one's pass then pasted its feathered edge over the front one. The picture says which one
    is in front where they meet (its outline runs on unbroken), as the puppet's layering reads it."""
    img, masks, _ = _one_hiding_another(back_x, front_x)
    inst = Instances.from_masks(masks)
    assert paint_order(inst.masks, inst.boxes) == [0, 1]  # back to front: the hidden one first
    for depth in ([0.5, 0.5], [0.9, 0.1]):  # equal depth (one ground line), or a pooled depth saying the opposite
        assert paint_order(inst.masks, inst.boxes, depth) == [0, 1]
    # the named rules stay what they say
    assert paint_order(inst.masks, inst.boxes, order="bottom") == [1, 0]  # equal bottoms: larger area first
    assert paint_order(inst.masks, inst.boxes, [0.9, 0.1], order="depth") == [1, 0]
    # amodal masks (both drawn whole) read the same both ways at their crossings: depth, else the ground rule
    from cartoonseg.style.regions import mask_windows, occlusion, occlusion_order

    with pytest.raises(ValueError, match="base must order the 2 layers"):
        occlusion_order([0, 0], mask_windows(inst.masks))

    whole = torch.stack([_figure(back_x), _figure(front_x)])
    assert abs(occlusion(*mask_windows(whole))) < 1e-6
    assert paint_order(whole, inst.boxes) == paint_order(whole, inst.boxes, order="bottom")
    assert paint_order(whole, inst.boxes, [0.1, 0.9]) == [0, 1]
    assert paint_order(whole, inst.boxes, [0.9, 0.1]) == [1, 0]

    # the compositing: each pass paints its instance's colour; the front figure keeps its own everywhere
    flat = torch.tensor([[0.1, 0.2, 0.9], [0.9, 0.9, 0.1]])

    def paint(req):
        return flat[req.index].expand(req.image.shape).clone()

    spy = Spy(paint)
    cfg = StyleConfig(background_as_instance=False, mask_feather=4.0, resolution=0)
    out = style_edit(img, inst, spy, cfg).image
    assert [r.index for r in spy.requests] == [0, 1]
    front = inst.masks[1] > 0.999  # its pass pastes these at alpha 1 (the soft rim mixes with what lies below)
    assert torch.allclose(out[front], flat[1].expand(int(front.sum()), 3), atol=1e-6)


def test_dedupe_drops_masks_inside_larger_ones():
    m = torch.zeros(3, 20, 20)
    m[0, 0:10, 0:10] = 1
    m[1, 1:9, 1:9] = 1  # 100 % inside mask 0
    m[2, 5:15, 5:15] = 1  # 25 % inside
    assert dedupe_masks(m, 0.8) == [0, 2]
    assert dedupe_masks(m, 1.0) == [0, 1, 2]


# ----------------------------------------------------------------------------------------------- prompts
def test_instance_prompts_merge_style_and_tags():
    _, inst = _scene()
    p = instance_prompts(inst, "3D pixar style")
    assert p[0] == "3D pixar style, 1girl, long hair, smile \\(x\\)"  # character tag dropped, tagger formatting
    assert p[1] == "3D pixar style, 1boy"
    given = inst.replace(extras={"prompt": ["3D pixar style, red hair", "blue eyes"]})
    assert instance_prompts(given, "3D pixar style") == ["3D pixar style, red hair", "3D pixar style, blue eyes"]
    given = inst.replace(extras={"prompt": ["1girl, anime coloring", "red hair, Anime"]})  # a tag holding the word
    assert instance_prompts(given, "anime") == ["anime, 1girl, anime coloring", "red hair, Anime"]
    # the same tag first: still not the style (it used to count as "at the start"); a multi-piece style as a run
    first = inst.replace(extras={"prompt": ["anime coloring, 1girl", "watercolor_(medium), 1girl"]})
    assert instance_prompts(first, "anime") == ["anime, anime coloring, 1girl", "anime, watercolor_(medium), 1girl"]
    assert instance_prompts(first, "watercolor")[1] == "watercolor, watercolor_(medium), 1girl"
    runs = inst.replace(extras={"prompt": ["1girl, Watercolor, soft light", "watercolor, 1girl, soft light"]})
    assert instance_prompts(runs, "watercolor, soft light") == ["1girl, Watercolor, soft light",
                                                                "watercolor, soft light, watercolor, 1girl, soft light"]
    bare = Instances.from_masks(torch.ones(2, 8, 8))
    assert instance_prompts(bare, "cg") == ["cg", "cg"]


# ----------------------------------------------------------------------------------------------- the loop
def test_instance_passes_same_seed_prompts_and_order():
    img, inst = _scene()
    spy = Spy()
    cfg = StyleConfig(style_prompt="3D pixar style", seed=7, background_fill="none", resolution=128)
    res = style_edit(img, inst, spy, cfg)
    kinds = [(r.kind, r.index) for r in spy.requests]
    assert kinds == [("background", -1), ("instance", 0), ("instance", 1)]  # background, then back to front
    assert {r.seed for r in spy.requests} == {7}
    assert spy.requests[1].prompt == "3D pixar style, 1girl, long hair, smile \\(x\\)"
    assert spy.requests[2].prompt == "3D pixar style, 1boy"
    assert spy.requests[0].prompt == "3D pixar style" and "1girl" in spy.requests[0].negative
    for r in spy.requests:
        assert r.hint is not None and r.hint.shape == r.image.shape  # lineart hint per region
        assert r.image.shape[1] % 8 == 0 and r.image.shape[2] % 8 == 0
    assert spy.requests[1].mask is not None and spy.requests[0].mask is None
    assert count_passes(inst, cfg) == 3 == len(res.passes)
    # iterations: seeds s, s+1, s+3; background only once
    spy2 = Spy()
    style_edit(img, inst, spy2, StyleConfig(seed=7, iterations=3, background_fill="none", resolution=64))
    assert [r.seed for r in spy2.requests] == [7, 7, 7, 8, 8, 10, 10]
    # depth reverses the order
    deep = inst.replace(extras={**inst.extras, "depth": [0.9, 0.1]})
    spy3 = Spy()
    style_edit(img, deep, spy3, StyleConfig(background_as_instance=False, resolution=64))
    assert [r.index for r in spy3.requests] == [1, 0]


def test_iteration_seeds_near_the_largest_seed_stay_valid():
    """ComfyUI's seed widget goes up to 2**64 - 1; round k adds k(k+1)/2, which used to pass 2**64 and make the
    sampler's generator (torch.manual_seed) fail after the first round's passes had run."""
    img, inst = _scene()
    top = 2**64 - 1
    spy = Spy()  # seeds a torch.Generator with every request's seed, as the samplers do
    style_edit(img, inst, spy, StyleConfig(seed=top, iterations=3, background_fill="none", resolution=64))
    assert [r.seed for r in spy.requests] == [top, top, top, 0, 0, 2, 2]
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed must lie in"):
            StyleConfig(seed=bad)
    with pytest.raises(TypeError, match="seed must be an integer"):
        StyleConfig(seed=1.5)


def test_instance_passes_change_only_instance_pixels():
    img, inst = _scene()
    for feather in (0, 3):
        cfg = StyleConfig(background_as_instance=False, mask_feather=feather, masked_denoise=False, resolution=96)
        out = style_edit(img, inst, Spy(), cfg).image
        reach = torch.stack([feather_alpha(m, feather) for m in inst.masks]).amax(0) > 0
        changed = (out != img).any(-1)
        assert not bool(changed[~reach].any()), "pixels outside the (feathered) instance masks changed"
        assert bool(changed[inst.binary.any(0)].all())


def test_background_pass_changes_only_background_pixels():
    """Without mattes the background is pasted through the binary union (the original's Image.composite of the
    thresholded masks), so no half-weighted old background stays around the soft fringe."""
    img, inst = _scene()
    union = inst.binary.any(0)
    seen = {}

    def fn(req):
        if req.kind == "background":
            return torch.zeros_like(req.image)
        seen.setdefault(req.index, req.image[0].clone())
        return req.image

    cfg = StyleConfig(background_fill="none", resolution=0, crop_padding=8, mask_feather=0, masked_denoise=False)
    res = style_edit(img, inst, Spy(fn), cfg)
    # each instance crop sees the canvas after the background pass (identity instance passes, no resize)
    for record in res.passes[1:]:
        x1, y1, x2, y2 = record.box
        after_bg = seen[record.index]
        assert after_bg.shape[:2] == (y2 - y1, x2 - x1)
        u = union[y1:y2, x1:x2]
        orig = img[y1:y2, x1:x2]
        assert torch.equal(after_bg[u], orig[u])  # instance pixels (soft 0.9 included) untouched
        assert float(after_bg[~u].abs().max()) == 0.0  # background pixels, the 0.3 fringe included, replaced
    assert {r.index for r in res.passes[1:]} == {0, 1}
    assert bool(((inst.masks[1] > 0) & ~union).any())  # the scene has a soft fringe below the threshold


def test_background_clean_plate_is_used(monkeypatch):
    img, inst = _scene()
    plate = torch.full_like(img, 0.5)
    spy = Spy(lambda r: r.image)
    style_edit(img, inst, spy, StyleConfig(background_fill="none", resolution=0), background=plate)
    assert torch.allclose(spy.requests[0].image[0], plate)
    spy = Spy(lambda r: r.image)
    style_edit(img, inst, spy, StyleConfig(background_fill="telea", resolution=0))
    bg = spy.requests[0].image[0]
    assert not torch.equal(bg[inst.binary.any(0)], img[inst.binary.any(0)])  # characters filled in
    far = torch.nn.functional.max_pool2d(inst.masks.amax(0)[None, None], 9, 1, 4)[0, 0] == 0
    assert torch.allclose(bg[far], img[far], atol=0.5 / 255)  # away from the characters: the image (8-bit)


def test_global_baseline_one_pass_style_prompt_only():
    img, inst = _scene()
    spy = Spy()
    res = style_edit(img, inst, spy, StyleConfig(style_prompt="cinematic", mode="global", iterations=2, seed=3, resolution=0))
    assert [(r.kind, r.prompt, r.seed) for r in spy.requests] == [("global", "cinematic", 3), ("global", "cinematic", 4)]
    assert spy.requests[0].image.shape[1:3] == (96, 128)
    assert (res.image != img).any(-1).float().mean() > 0.99


def test_uint8_images_are_0_to_255_not_white():
    # the library entry points read integer images by io's rule (0..255); .float().clamp(0, 1) made them white
    img, inst = _scene()
    u8 = (img * 255).round().to(torch.uint8)
    as_float = u8.float() / 255
    runs = []
    for x, plate, hint in ((u8, u8, u8), (as_float, as_float, as_float)):
        spy = Spy()
        res = style_edit(x, inst, spy, StyleConfig(resolution=0, background_fill="none"), background=plate,
                         hint_image=hint)
        runs.append((res.image, [r.image for r in spy.requests], [r.hint for r in spy.requests]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))
    assert float(runs[0][1][0].max()) < 0.9  # not clamped to white
    assert torch.equal(lineart(u8), lineart(as_float)) and torch.equal(canny(u8), canny(as_float))
    assert torch.equal(extract_hint(u8[None], "lineart"), extract_hint(as_float[None], "lineart"))


def test_hint_of_another_aspect_is_centre_cropped_like_comfy_controlnet():
    # ComfyUI's ControlNet fits a hint by common_upscale(..., "center"); stretching it moved every line off its place
    from cartoonseg.transforms import resize_center_crop

    img, inst = _scene()  # 96 x 128
    g = torch.Generator().manual_seed(1)
    wide = (torch.rand(96, 192, 3, generator=g) > 0.8).float()
    spy = Spy()
    style_edit(img, inst, spy, StyleConfig(mode="global", resolution=0), hint_image=wide)
    assert torch.equal(spy.requests[0].hint[0], wide[:, 32:160])  # the middle 128 columns, unscaled
    tall = (torch.rand(192, 64, 3, generator=g) > 0.8).float()  # 1:3 -> 4:3: the middle 48 rows, scaled x2
    assert torch.equal(resize_center_crop(tall, (96, 128)), resize_center_crop(tall[72:120], (96, 128)))
    assert torch.equal(resize_center_crop(tall[None], (96, 128))[0], resize_center_crop(tall, (96, 128)))


def test_hint_image_and_no_control():
    img, inst = _scene()
    hint = torch.zeros_like(img)
    hint[:, ::4] = 1.0
    spy = Spy()
    style_edit(img, inst, spy, StyleConfig(resolution=0, background_fill="none"), hint_image=hint)
    assert torch.equal(spy.requests[0].hint[0], hint)  # the given hint, not an extracted one
    spy = Spy()
    style_edit(img, inst, spy, StyleConfig(background_fill="none", resolution=64), use_control=False)
    assert all(r.hint is None for r in spy.requests)
    spy = Spy()
    style_edit(img, inst, spy, StyleConfig(background_fill="none", hint="none", resolution=64))
    assert all(r.hint is None for r in spy.requests)


def test_batch_cancel_progress_and_errors():
    img, inst = _scene()
    ticks = []
    out, records = style_edit_batch(
        torch.stack([img, img]), [inst, inst], Spy(), StyleConfig(background_fill="none", resolution=64), progress=lambda: ticks.append(1)
    )
    assert out.shape == (2, 96, 128, 3) and len(ticks) == 6 == len(records)
    assert [r.frame for r in records] == [0, 0, 0, 1, 1, 1]

    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        if len(calls) == 2:
            raise Stop
        calls.append(1)

    spy = Spy()
    with pytest.raises(Stop):
        style_edit(img, inst, spy, StyleConfig(background_fill="none", resolution=64), interrupt=interrupt)
    assert len(spy.requests) == 2
    with pytest.raises(ValueError, match="image is"):
        style_edit(img[:64], inst, Spy())
    with pytest.raises(ValueError, match="one per frame"):
        style_edit_batch(img[None], [inst, inst], Spy())
    with pytest.raises(RuntimeError, match="backend must return"):
        style_edit(img, inst, lambda r: r.image[0])
    with pytest.raises(ValueError, match="denoise"):
        StyleConfig(denoise=0)
    assert style_preset("sdxl_canny").hint == "canny" and style_preset("paper_sd15").steps == 24


def test_empty_instances_background_only():
    img, _ = _scene()
    spy = Spy()
    res = style_edit(img, Instances.empty(96, 128), spy, StyleConfig(resolution=64))
    assert [r.kind for r in spy.requests] == ["background"]
    assert (res.image != img).any()


# ----------------------------------------------------------------------------------------------- diffusers backend
diffusers = pytest.importorskip("diffusers")


def _tokenizer(tmp: Path):
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=77)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """Tiny random SD1.5-layout components + ControlNet (char-level CLIP tokenizer, 2-block UNet/VAE)."""
    from diffusers import AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    blocks = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
    unet = UNet2DConditionModel(
        **blocks, sample_size=16, in_channels=4, out_channels=4, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    controlnet = ControlNetModel(
        **blocks, in_channels=4, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), conditioning_embedding_out_channels=(4, 8),
    )
    vae = AutoencoderKL(
        **blocks, in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=512, eos_token_id=513, pad_token_id=513, vocab_size=514, hidden_size=16,
            intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=77,
        )
    )
    sched = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    tok_dir = tmp_path_factory.mktemp("tok")
    comps = {"unet": unet, "vae": vae, "text_encoder": text, "tokenizer": _tokenizer(tok_dir), "scheduler": sched}
    with torch.no_grad():  # ControlNet's zero convolutions would make any hint a no-op
        for p in controlnet.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    for m in (unet, vae, text, controlnet):
        m.eval()
    return comps, controlnet


def _scene_small():
    img, inst = _scene(48, 64)
    m = torch.zeros(2, 48, 64)
    m[0, 8:24, 8:28] = 1
    m[1, 20:44, 36:60] = 1
    return img, inst.replace(masks=m, boxes=Instances.from_masks(m).boxes)


def test_diffusers_scheduler_is_dpmpp_2m_karras(tiny_sd):
    from cartoonseg.style.diffusers_backend import DiffusersBackend, make_scheduler

    comps, cn = tiny_sd
    be = DiffusersBackend(comps, StyleConfig(steps=3), controlnet=cn)
    s = be.components["scheduler"]
    assert type(s).__name__ == "DPMSolverMultistepScheduler"
    assert s.config.use_karras_sigmas and s.config.algorithm_type == "dpmsolver++" and s.config.solver_order == 2
    with pytest.raises(ValueError, match="allowed"):
        make_scheduler(s.config, "heunpp2", "karras")
    with pytest.raises(ValueError, match="Karras"):
        make_scheduler(s.config, "ddim", "karras")


def test_diffusers_style_edit_end_to_end(tiny_sd):
    from cartoonseg.style.diffusers_backend import DiffusersBackend

    comps, cn = tiny_sd
    img, inst = _scene_small()
    texts, hints = [], []
    tok = comps["tokenizer"]
    h1 = comps["text_encoder"].register_forward_pre_hook(
        lambda mod, args: texts.append(tok.decode(args[0][0], skip_special_tokens=True).replace(" ", ""))
    )
    h2 = cn.register_forward_hook(lambda mod, args, kwargs, out: hints.append(kwargs["controlnet_cond"].clone()), with_kwargs=True)
    try:
        cfg = StyleConfig(style_prompt="pixar", steps=3, resolution=32, background_fill="none", mask_feather=2, seed=5)
        be = DiffusersBackend(comps, cfg, controlnet=cn)
        out1 = style_edit(img, inst, be, cfg).image
        # per-call conditioning: the text encoder saw each pass's prompt (CLIP lower-cases)
        assert texts[:2] == ["pixar", "lowres,badanatomy,badhands,text,error,missingfingers,extradigit,fewerdigits"]
        assert "pixar,1girl,longhair,smile\\(x\\)" in texts and "pixar,1boy" in texts
        assert [c[0] for c in be.calls] == [
            "StableDiffusionControlNetImg2ImgPipeline",
            "StableDiffusionControlNetInpaintPipeline",
            "StableDiffusionControlNetInpaintPipeline",
        ]
        assert hints, "ControlNet was not called"
        # same seed -> same result; another seed -> another result
        texts.clear()
        out2 = style_edit(img, inst, DiffusersBackend(comps, cfg, controlnet=cn), cfg).image
        assert torch.equal(out1, out2)
        cfg7 = StyleConfig(**{**cfg.__dict__, "seed": 6})
        out3 = style_edit(img, inst, DiffusersBackend(comps, cfg7, controlnet=cn), cfg7).image
        assert not torch.equal(out1, out3)
        # only instance pixels change in instance passes
        cfg_i = StyleConfig(**{**cfg.__dict__, "background_as_instance": False})
        out_i = style_edit(img, inst, DiffusersBackend(comps, cfg_i, controlnet=cn), cfg_i).image
        reach = torch.stack([feather_alpha(m, 2) for m in inst.masks]).amax(0) > 0
        changed = (out_i != img).any(-1)
        assert not bool(changed[~reach].any()) and bool(changed[inst.binary.any(0)].any())
        # the ControlNet hint matters; without a ControlNet it is never called
        n = len(hints)
        hint = torch.zeros_like(img)
        out_h = style_edit(img, inst, DiffusersBackend(comps, cfg, controlnet=cn), cfg, hint_image=hint).image
        assert len(hints) > n and float(hints[-1].abs().max()) == 0.0 and not torch.equal(out_h, out1)
        n = len(hints)
        be_plain = DiffusersBackend(comps, cfg)
        style_edit(img, inst, be_plain, cfg)
        assert len(hints) == n and be_plain.calls[0][0] == "StableDiffusionImg2ImgPipeline"
        # global baseline
        cfg_g = StyleConfig(**{**cfg.__dict__, "mode": "global"})
        be_g = DiffusersBackend(comps, cfg_g, controlnet=cn)
        out_g = style_edit(img, inst, be_g, cfg_g).image
        assert [c[1] for c in be_g.calls] == ["pixar"] and (out_g != img).any(-1).float().mean() > 0.95
    finally:
        h1.remove()
        h2.remove()


def test_diffusers_inpainting_checkpoint_runs_every_pass(tiny_sd):
    """An inpainting checkpoint (9-channel UNet, e.g. sd-v1-5-inpainting) runs the background pass and unmasked
    instance passes too (through the inpainting pipelines with a full mask), instead of failing inside a conv."""
    from diffusers import UNet2DConditionModel

    from cartoonseg.style.diffusers_backend import DiffusersBackend

    comps, cn = tiny_sd
    unet = comps["unet"]
    torch.manual_seed(0)
    unet9 = UNet2DConditionModel(**{**unet.config, "in_channels": 9}).eval()
    comps9 = {**comps, "unet": unet9}
    img, inst = _scene_small()
    for masked in (True, False):
        cfg = StyleConfig(steps=2, resolution=32, background_fill="none", masked_denoise=masked)
        for control in (None, cn):
            be = DiffusersBackend(comps9, cfg, controlnet=control)
            out = style_edit(img, inst, be, cfg).image
            assert out.shape == img.shape and bool(torch.isfinite(out).all()) and not torch.equal(out, img)
            assert all("Inpaint" in c[0] for c in be.calls) and len(be.calls) == 3
    with pytest.raises(ValueError, match="8 input channels"):
        DiffusersBackend({**comps, "unet": UNet2DConditionModel(**{**unet.config, "in_channels": 8})},
                         StyleConfig(steps=1))


def test_diffusers_offline_loading(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    from cartoonseg.style.diffusers_backend import load_components, load_controlnet

    comps, cn = tiny_sd
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")
    cn.save_pretrained(tmp_path / "cn")
    loaded = load_components(tmp_path / "sd")
    assert type(loaded["unet"]).__name__ == "UNet2DConditionModel"
    assert torch.equal(loaded["unet"].conv_in.weight, comps["unet"].conv_in.weight)
    assert type(load_controlnet(tmp_path / "cn")).__name__ == "ControlNetModel"
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="config_dir"):
        load_components(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError):
        load_components(tmp_path / "missing.safetensors")


def test_cli_style_offline_end_to_end(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    import cartoonseg
    from _checkpoint_writers import save_mmengine_detector_checkpoint
    from cartoonseg.style.cli import main

    comps, cn = tiny_sd
    StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False).save_pretrained(tmp_path / "sd")
    cn.save_pretrained(tmp_path / "cn")
    torch.manual_seed(0)
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), tmp_path / "det.ckpt")
    img, _ = _scene(48, 64)
    Image.fromarray((img * 255).round().to(torch.uint8).numpy()).save(tmp_path / "in.png")
    rc = main([
        "style", str(tmp_path / "in.png"), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "sd"),
        "--controlnet", str(tmp_path / "cn"), "--detector", str(tmp_path / "det.ckpt"), "--refiner", "none",
        "--score-thr", "0", "--max-instances", "2", "--steps", "2", "--resolution", "32", "--style", "pixar",
        "--background-fill", "telea", "--compare",
    ])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "in_style.json").read_text())
    assert report["config"]["style_prompt"] == "pixar" and report["config"]["steps"] == 2
    assert len(report["runs"]["global"]) == 1 and report["runs"]["global"][0]["prompt"] == "pixar"
    assert report["runs"]["style"][0]["kind"] == "background"
    for name in ("in_style.png", "in_global.png", "in_hint.png"):
        assert Image.open(tmp_path / "out" / name).size == (64, 48)
    assert main(["style", str(tmp_path / "in.png"), "--out", str(tmp_path / "o2"), "--model", str(tmp_path / "nope"),
                 "--detector", str(tmp_path / "det.ckpt"), "--refiner", "none"]) == 2
    # --hint takes an image (it shares its name with the preset's built-in hint type, which --hint-type sets)
    lines = np.zeros((48, 64, 3), np.uint8)
    lines[10:12, :] = 255
    Image.fromarray(lines).save(tmp_path / "lines.png")
    assert main(["style", str(tmp_path / "in.png"), "--out", str(tmp_path / "o3"), "--model", str(tmp_path / "sd"),
                 "--controlnet", str(tmp_path / "cn"), "--detector", str(tmp_path / "det.ckpt"), "--refiner", "none",
                 "--score-thr", "0", "--max-instances", "1", "--steps", "1", "--resolution", "32",
                 "--background-fill", "telea", "--hint", str(tmp_path / "lines.png"), "--order", "auto"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o3" / "in_hint.png").convert("RGB")), lines)
    with pytest.raises(SystemExit):  # depth order needs per-instance depth, which only the ComfyUI graph has
        main(["style", str(tmp_path / "in.png"), "--out", str(tmp_path / "o4"), "--model", str(tmp_path / "sd"),
              "--order", "depth"])


def test_cli_style_checks_its_images_before_loading_models(tmp_path, capsys, spy_calls):
    """Unreadable images, --background or --hint failed only after the detector, tagger and SD model loaded
    (minutes); now they are checked first (in a batch the unreadable images are skipped, same warning)."""
    from PIL import Image

    from cartoonseg.style import cli as style_cli

    class Loaded(Exception):
        pass

    calls = spy_calls(style_cli, "load_networks", raises=Loaded)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(good)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    base = ["style", "--model", str(tmp_path / "sd"), "--detector", str(tmp_path / "det.ckpt")]
    for extra in ([str(junk)], [str(junk), str(junk.with_name("junk2.png"))], [str(good), "--background", str(junk)],
                  [str(good), "--hint", str(junk)]):
        junk.with_name("junk2.png").write_bytes(b"nor this")
        out = tmp_path / f"o{len(calls)}_{len(extra)}"
        assert style_cli.main([*base, *extra, "--out", str(out)]) == 2
        assert "error: " in capsys.readouterr().err and calls == [] and not out.exists()
    with pytest.raises(Loaded):
        style_cli.main([*base, str(junk), str(good), "--out", str(tmp_path / "mixed" / "deep")])
    assert len(calls) == 1 and "warning: skipping" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()  # a failure before the first write leaves no new (empty) folders


def test_rule_order_takes_boxes_and_areas_without_masks():
    """The named rules read only boxes and areas: callers with layers, not full-frame masks (the puppet), pass those
    (they used to hand paint_order one-pixel "masks" holding the areas). A depth list of the wrong length is refused:
    "auto" used to drop it quietly and fall back to the ground rule."""
    from cartoonseg.style.regions import rule_order

    boxes = [[0, 0, 4, 30], [0, 0, 4, 10], [0, 0, 4, 30]]
    areas = [5.0, 9.0, 7.0]
    masks = torch.zeros(3, 4, 40)
    for i, a in enumerate(areas):
        masks[i, 0, 12 * i:12 * i + int(a)] = 1.0  # apart: the occlusion cue leaves them to the rules
    t = torch.tensor(boxes, dtype=torch.float32)
    for order, depth in (("auto", None), ("bottom", None), ("index", None), ("depth", [0.3, 0.1, 0.3]),
                         ("auto", [0.3, 0.1, 0.3]), ("auto", [0.3, None, 0.3])):
        assert rule_order(boxes, areas, depth, order) == rule_order(t, areas, depth, order)
        assert rule_order(boxes, areas, depth, order) == paint_order(masks, t, depth, order)
    assert rule_order(boxes, areas) == [1, 2, 0]  # equal bottoms: the larger area first
    assert rule_order(boxes, areas, [0.3, 0.1, 0.3]) == [1, 2, 0]
    assert rule_order([], []) == []
    with pytest.raises(ValueError, match="one area per box"):
        rule_order(boxes, areas[:2])
    with pytest.raises(ValueError, match="unknown paint order"):
        rule_order(boxes, areas, order="front")
    for bad in ([0.1, 0.2], [0.1, 0.2, 0.3, 0.4]):
        with pytest.raises(ValueError, match="one entry .* per instance: got"):
            rule_order(boxes, areas, bad)
        with pytest.raises(ValueError, match="one entry .* per instance: got"):
            paint_order(masks, t, bad)
    with pytest.raises(ValueError, match=r"same N"):
        paint_order(masks, t[:2])


@pytest.mark.parametrize("back_x, front_x", [(50, 72), (72, 50), (44, 58), (84, 68), (55, 74), (73, 54)])
def test_a_back_mask_spilling_weakly_over_the_hidden_part_stays_behind(back_x, front_x):
    """A segmenter's mask of the back figure often covers the part it cannot see, less confidently (0.6 here): the
    masks then overlap, the junction cue alone read the crossing as amodal (0) or the wrong way, and the ground
    rule's area tie-break or the opposite depth painted the hidden figure last. Where the masks overlap, the one
    more confident there is in front: the rule the mattes always used, now shared (cartoonseg.occlusion)."""
    from cartoonseg.matting import occlusion_order as matte_order

    back, front = _figure(back_x), _figure(front_x)
    masks = torch.stack([torch.maximum(back * (1 - front), 0.6 * back * front), front])
    inst = Instances.from_masks(masks)
    for depth in (None, [0.5, 0.5], [0.9, 0.1]):
        assert paint_order(inst.masks, inst.boxes, depth) == [0, 1]  # back to front
    for scores in ([0.9, 0.8], [0.8, 0.9]):
        assert matte_order(inst.replace(scores=torch.tensor(scores))) == [1, 0]  # front to back: the same pair


def test_in_front_refuses_an_unknown_seam_cue():
    from cartoonseg.occlusion import in_front, mask_windows

    w = mask_windows(torch.stack([_figure(50), _figure(72)]))
    with pytest.raises(ValueError, match="allowed: junctions, shape"):
        in_front(*w, seam="depth")
