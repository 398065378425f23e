"""Alpha mattes in the applications: puppet, Ken Burns and style editing cut characters out with
``Instances.alphas`` when present (a synthetic character with a soft fringe and a hair strand past its mask, true
alpha and colours known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cartoonseg.structures import Instances

pytest.importorskip("pymatting")

FG = (0.9, 0.15, 0.1)


def _scene(h: int = 80, w: int = 96):
    """A red disc with a 3-px linear fringe and a hair strand (alpha 0.5, 2 px wide, 16 px long) over a
    gradient. The segmenter's soft mask is steeper than the true alpha and misses the strand. Returns image, true
    alpha, foreground, background (float32) and the mask-only Instances."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(yy - 32, xx - 30)
    alpha = np.clip((16.0 - r) / 3.0 + 0.5, 0, 1)
    strand = (np.abs(yy - 32) < 1.0) & (xx >= 44) & (xx < 60)
    alpha = np.maximum(alpha, 0.5 * strand).astype(np.float32)
    fg = np.empty((h, w, 3), np.float32)
    fg[...] = FG
    bg = np.stack([0.1 + 0.0 * xx, 0.3 + 0.5 * xx / w, 0.8 - 0.3 * yy / h], -1).astype(np.float32)
    image = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.float32)
    mask = (np.clip((alpha - 0.5) * 3 + 0.5, 0, 1) * ~strand).astype(np.float32)
    return image, alpha, fg, bg, Instances.from_masks(torch.from_numpy(mask[None]))


def _matted(inst: Instances, alpha: np.ndarray) -> Instances:
    return inst.replace(alphas=torch.from_numpy(alpha[None]))


def test_puppet_moves_the_matte_with_foreground_colours_and_reveals_all_of_it():
    from cartoonseg.puppet import build_rig
    from cartoonseg.puppet.render import PuppetRenderer

    image, alpha, fg, bg, inst = _scene()
    dy = 12
    moved_alpha = np.zeros_like(alpha)
    moved_alpha[dy:] = alpha[:-dy]
    truth = moved_alpha[..., None] * fg + (1 - moved_alpha[..., None]) * bg
    fringe = (moved_alpha > 0) & (moved_alpha < 1)
    revealed = (alpha > 0) & (moved_alpha == 0)  # the old strand's place, among others
    errors = {}
    for name, instances in (("mask", inst), ("matte", _matted(inst, alpha))):
        rig = build_rig(instances)
        renderer = PuppetRenderer(image, rig, plate=bg)  # the true background as plate: only the cut-out differs
        joints = rig.characters[0].skeleton.joints
        rest, _ = renderer.render([joints])
        frame, _ = renderer.render([joints + (0.0, dy)])
        errors[name] = (float(np.abs(frame - truth)[fringe].mean()), float(np.abs(frame - bg)[revealed].max()),
                        float(np.abs(rest - image).max()))
    ch = rig.characters[0]
    x0, y0, x1, y1 = ch.box
    assert ch.matted and np.array_equal(ch.alpha, alpha[y0:y1, x0:x1])  # the layer alpha is the matte
    fringe_mask, revealed_mask, _ = errors["mask"]
    fringe_matte, revealed_matte, rest_matte = errors["matte"]
    assert fringe_matte < 0.01 and fringe_matte < 0.25 * fringe_mask, errors  # the fringe has the foreground colour
    assert revealed_matte < 1e-3, errors  # nothing of the character (the strand) stays where it was
    assert revealed_mask > 0.1, errors  # (the mask misses the strand: it stays behind)
    assert rest_matte < 0.02, errors  # the rest pose still reproduces the input (up to the estimate's residual)


def test_puppet_without_mattes_is_unchanged():
    from cartoonseg.puppet import build_rig

    image, alpha, fg, bg, inst = _scene()
    ch = build_rig(inst).characters[0]
    assert not ch.matted
    x0, y0, x1, y1 = ch.box
    assert np.array_equal(ch.alpha, inst.masks[0].numpy()[y0:y1, x0:x1])


def _pixel_maps(cloud, h: int, w: int) -> torch.Tensor:
    """A layer's point features back on the input pixel grid ``[C,H,W]``."""
    u = (cloud.ax / cloud.z + 0.5 * (w - 1)).round().long()
    v = (cloud.ay / cloud.z + 0.5 * (h - 1)).round().long()
    out = torch.zeros(cloud.features.shape[1], h, w)
    out[:, v, u] = cloud.features.t().float()
    return out


def test_kenburns_character_layer_takes_the_matte_and_the_plate_covers_it():
    from cartoonseg.kenburns import build_scene

    image, alpha, fg, bg, inst = _scene()
    h, w = alpha.shape
    near = torch.where(torch.from_numpy(alpha) > 0, 1.0, 0.25)
    fringe = torch.from_numpy((alpha > 0.05) & (alpha < 1))
    touched = torch.from_numpy(alpha > 0)
    fg_t, bg_t = torch.from_numpy(fg).permute(2, 0, 1), torch.from_numpy(bg).permute(2, 0, 1)
    errors = {}
    for name, instances in (("mask", inst), ("matte", _matted(inst, alpha))):
        scene = build_scene(torch.from_numpy(image), near, instances, torch.from_numpy(bg))
        assert scene.size == (h, w)
        background, character = (_pixel_maps(layer, h, w) for layer in scene.layers)
        a = character[3]
        colour = character[:3] / a.clamp_min(1e-6)
        errors[name] = (float((a - torch.from_numpy(alpha)).abs().max()),
                        float((colour - fg_t).abs()[:, fringe].mean()),
                        float((background[:3] - bg_t).abs()[:, touched].max()))
    assert errors["matte"][0] < 1e-6, errors  # the layer's alpha is the matte
    assert errors["matte"][1] < 0.01 and errors["matte"][1] < 0.25 * errors["mask"][1], errors
    assert errors["matte"][2] < 0.01, errors  # the background layer shows the plate wherever the matte reaches
    assert errors["mask"][2] > 0.1, errors  # (with the mask, the strand stays in the background layer)


def test_background_mask_covers_the_matte_support():
    from cartoonseg.ops import background_mask

    image, alpha, fg, bg, inst = _scene()
    plain = background_mask(inst) > 0.5
    matted = background_mask(_matted(inst, alpha)) > 0.5
    assert torch.equal(plain, inst.binary[0])
    assert torch.equal(matted, inst.binary[0] | torch.from_numpy(alpha > 1 / 255))


def test_style_background_paste_composites_the_matte_with_foreground_colours(monkeypatch):
    from cartoonseg.style import StyleConfig, editor, style_edit

    image, alpha, fg, bg, inst = _scene()
    new_bg = torch.zeros(*alpha.shape, 3)
    new_bg[..., 1] = 1.0  # the restyled background: pure green
    pasted = []
    real_paste = editor.paste

    def paste(canvas, patch, box, a):
        out = real_paste(canvas, patch, box, a)
        pasted.append(out)
        return out

    monkeypatch.setattr(editor, "paste", paste)

    def backend(req):
        return new_bg[None].clone() if req.kind == "background" else req.image

    cfg = StyleConfig(background_fill="none", resolution=0, mask_feather=0, masked_denoise=False)
    truth = torch.from_numpy(alpha[..., None] * fg) + (1 - torch.from_numpy(alpha)[..., None]) * new_bg
    fringe = torch.from_numpy((alpha > 0) & (alpha < 1))
    errors = {}
    for name, instances in (("mask", inst), ("matte", _matted(inst, alpha))):
        pasted.clear()
        style_edit(torch.from_numpy(image), instances, backend, cfg)
        after_bg = pasted[0]  # the canvas after the background pass
        errors[name] = float((after_bg - truth).abs()[fringe].mean())
    assert errors["matte"] < 0.02 and errors["matte"] < 0.25 * errors["mask"], errors


def _two_characters():
    """Two discs with 4-px soft edges, A in front of B and overlapping it: mattes composed front to back (they sum
    to 1 where A's edge lies over B), as instance_alphas makes them; the mask-only instances; image and background."""
    h, w = 80, 120
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def disc(cy, cx):
        return np.clip((20.0 - np.hypot(yy - cy, xx - cx)) / 4.0 + 0.5, 0, 1).astype(np.float32)

    a_front, raw_back = disc(40, 50), disc(40, 75)
    a_back = raw_back * (1 - a_front)
    bg = np.stack([0.2 + 0 * xx, 0.6 + 0.3 * xx / w, 0.3 + 0.4 * yy / h], -1).astype(np.float32)
    image = (a_front[..., None] * np.float32((0.9, 0.1, 0.1)) + a_back[..., None] * np.float32((0.1, 0.1, 0.9))
             + (1 - a_front - a_back)[..., None] * bg).astype(np.float32)
    masks = np.stack([np.clip((a - 0.5) * 3 + 0.5, 0, 1) for a in (a_front, raw_back)]).astype(np.float32)
    inst = Instances.from_masks(torch.from_numpy(masks)).replace(extras={"depth": [1.0, 0.5]})
    return image, bg, inst, np.stack([a_front, a_back])


def test_puppet_rest_pose_reproduces_overlapping_matted_characters():
    """Where a matted character's edge lies over another one, both mattes are fractional and sum to 1: the
    renderer must not attenuate the back one again (its matte is already what the front one leaves), and the
    colours must add up to the input, so the rest pose reproduces the input there too."""
    from cartoonseg.puppet import build_rig
    from cartoonseg.puppet.render import PuppetRenderer

    image, bg, inst, mattes = _two_characters()
    for order in ([0, 1], [1, 0]):  # whichever character comes first in the instances
        instances = inst[order].replace(alphas=torch.from_numpy(mattes[order]))
        rig = build_rig(instances)
        assert all(ch.matted for ch in rig.characters)
        rest, _ = PuppetRenderer(image, rig, plate=bg).render([ch.skeleton.joints for ch in rig.characters])
        assert float(np.abs(rest - image).max()) < 1e-3, order


def test_puppet_mesh_reaches_every_matte_pixel_and_moves_it():
    """The rest mesh covers every pixel the matte reaches (its outline polygon cut off a few fringe pixels, which
    then neither moved with the character nor left its place: an error of their alpha in the moved frame)."""
    from cartoonseg.puppet import build_rig
    from cartoonseg.puppet.render import PuppetRenderer
    from cartoonseg.structures import MATTE_SUPPORT

    image, alpha, fg, bg, inst = _scene()
    rig = build_rig(_matted(inst, alpha))
    renderer = PuppetRenderer(image, rig, plate=bg)
    layer = renderer.layers[0]
    ch = layer.character
    assert not ((ch.alpha > MATTE_SUPPORT) & (layer.rest_index == len(ch.mesh.triangles))).any()
    dy = 12
    moved = np.zeros_like(alpha)
    moved[dy:] = alpha[:-dy]
    truth = moved[..., None] * fg + (1 - moved[..., None]) * bg
    frame, _ = renderer.render([ch.skeleton.joints + (0.0, dy)])
    assert float(np.abs(frame - truth).max()) < 0.02


def test_kenburns_matte_past_the_mask_takes_the_characters_depth():
    """With a pooled depth map (the character's value inside its mask only), a hair strand past the mask lies at
    the background's depth: its points in the character layer must take the character's depth, or the strand
    drifts away from the character as the camera moves (parallax of the background)."""
    from cartoonseg.kenburns import build_scene

    image, alpha, fg, bg, inst = _scene()
    h, w = alpha.shape
    near = torch.where(inst.masks[0] > 0.5, 1.0, 0.25)  # z = 1 on the character, 4 behind it
    scene = build_scene(torch.from_numpy(image), near, _matted(inst, alpha), torch.from_numpy(bg))
    cloud = scene.layers[1]
    u = (cloud.ax / cloud.z + 0.5 * (w - 1)).round().long()
    v = (cloud.ay / cloud.z + 0.5 * (h - 1)).round().long()
    z = torch.full((h, w), float("nan"))
    z[v, u] = cloud.z.float()
    strand = z[32, 47:58]  # the strand's pixels, beyond the mask
    assert torch.allclose(strand, torch.ones_like(strand)), strand


def test_style_background_paste_reads_a_nan_in_the_mattes_as_no_coverage():
    """A NaN in a matte (user-made Instances) at a background pixel left the old, unstyled background there."""
    from cartoonseg.style import StyleConfig, style_edit

    image, alpha, fg, bg, inst = _scene()
    alpha = alpha.copy()
    alpha[0, 0] = np.nan

    def backend(req):  # the restyled background is black; instances come back unchanged
        return torch.zeros_like(req.image) if req.kind == "background" else req.image

    cfg = StyleConfig(background_fill="none", resolution=0, mask_feather=0, masked_denoise=False)
    out = style_edit(torch.from_numpy(image), _matted(inst, alpha), backend, cfg).image
    assert torch.equal(out[0, 0], torch.zeros(3)), out[0, 0]


def test_puppet_rest_pose_with_a_still_instance_next_to_a_matted_character():
    """An instance left still is painted at rest over its mask; where a matted character's fringe lies over it, it
    must paint the colour behind that fringe (what the frame starts from), not the input, which already holds the
    matted character and counted it twice (0.1 to 0.2 off on drawn scenes). Either one moving, either in front."""
    from cartoonseg.puppet import build_rig
    from cartoonseg.puppet.render import PuppetRenderer

    image, bg, inst, mattes = _two_characters()
    instances = inst.replace(alphas=torch.from_numpy(mattes))
    for select in ([0], [1]):
        rig = build_rig(instances, select=select)
        assert len(rig.stills) == 1 and all(ch.matted for ch in rig.characters)
        rest, _ = PuppetRenderer(image, rig, plate=bg).render([ch.skeleton.joints for ch in rig.characters])
        assert float(np.abs(rest - image).max()) < 1e-3, select


def test_puppet_rest_pose_when_a_foreground_colour_clips():
    """Mattes that give a white pixel partly to each of two characters (a white stripe on the front one that the
    matting shares with the one behind): the background estimate clips at 1 and so does the front colour; what is
    left must go to the other character's colour (before, it was dropped: 0.09 off on a drawn scene)."""
    from cartoonseg.puppet import build_rig
    from cartoonseg.puppet.render import PuppetRenderer

    image, bg, inst, mattes = _two_characters()
    patch = (slice(36, 44), slice(56, 62))  # inside the front disc, near the back one
    image = image.copy()
    image[patch] = 1.0
    mattes = mattes.copy()
    mattes[0][patch], mattes[1][patch] = 0.55, 0.35
    rig = build_rig(inst.replace(alphas=torch.from_numpy(mattes)))
    rest, _ = PuppetRenderer(image, rig, plate=bg).render([ch.skeleton.joints for ch in rig.characters])
    assert float(np.abs(rest - image).max()) < 1e-3
