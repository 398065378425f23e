"""End-view disocclusion inpainting of the 3D Ken Burns renderer (cartoonseg.kenburns.disocclusion) on analytic
scenes: a striped far plane and a near card, whose true novel views are known in closed form."""

from __future__ import annotations

import pytest
import torch

from cartoonseg.inpaint import patchmatch_inpaint
from cartoonseg.kenburns import CameraPath, KenBurnsConfig, build_scene, render_kenburns, resolve_poses
from cartoonseg.kenburns.disocclusion import FILLS, inpaint_disocclusions, overshoot_poses, select_key_views
from cartoonseg.kenburns.pointcloud import splat

try:  # the tiny random SD inpainting pipeline (diffusers is a dev requirement)
    from test_diffusion_inpaint import tiny_pipeline_dir  # noqa: F401  (a pytest fixture)
except ImportError:  # pragma: no cover
    tiny_pipeline_dir = None

H, W = 48, 64
FAR, NEAR = 0.1, 1.0  # nearness of the plane (Z = 10) and of the card (Z = 1)
CARD = (14, 34, 26, 40)  # rows y0:y1, cols x0:x1


def stripes(u: torch.Tensor) -> torch.Tensor:
    """Colour of the far plane at source column ``u`` (any real): vertical stripes, period 8 px."""
    phase = torch.floor(u / 4.0) % 2
    return torch.stack([0.2 + 0.6 * phase, 0.3 + 0.0 * phase, 0.8 - 0.6 * phase], -1)


def striped_scene():
    """Far striped plane with a plain grey card in front: image, nearness."""
    u = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    image = stripes(u).clone()
    nearness = torch.full((H, W), FAR)
    y0, y1, x0, x1 = CARD
    image[y0:y1, x0:x1] = torch.tensor([0.5, 0.5, 0.5])
    nearness[y0:y1, x0:x1] = NEAR
    return image, nearness


def far_plane_truth(pose: torch.Tensor, focal: float) -> torch.Tensor:
    """The far plane (Z = 10 in renderer units) seen from ``pose``: ``[H,W,3]`` (the card is not drawn)."""
    tx, ty, tz, k, px, py = (float(v) for v in pose)
    z = 1.0 / FAR
    x = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    cx = 0.5 * (W - 1)
    u = (x - cx - px) * (z - tz) / (k * focal) * focal / z + tx * focal / z + cx  # source column of each pixel
    return stripes(u)


def pan(frames: int = 5) -> CameraPath:
    return CameraPath(preset="pan-right", frames=frames, zoom=1.6, playback=False)


# ---------------------------------------------------------------------------------------------- key views
def test_key_views_straight_path_takes_its_ends_orbit_takes_more():
    image, nearness = striped_scene()
    scene = build_scene(image, nearness)
    straight = resolve_poses(pan(9), scene.depth)
    chosen = select_key_views(scene.background_depth, straight)
    assert chosen and set(chosen) <= {0, 8} and chosen[0] in (0, 8)
    orbit = resolve_poses(CameraPath(preset="orbit", frames=17, zoom=1.3, playback=False), scene.depth)
    around = select_key_views(scene.background_depth, orbit, max_views=8)
    assert len(around) >= 3  # a path that turns uncovers different sides of the card
    static = resolve_poses(CameraPath(preset="static", frames=3, playback=False), scene.depth)
    assert select_key_views(scene.background_depth, static) == []


def test_a_moving_path_always_inpaints_its_extreme():
    """A pan that opens a one-pixel hole column at full size (less than a pixel on the 192 px proxy, where the count
    sees nothing): the path's end is still a key view and its hole is inpainted, as the original always inpaints
    its extremes."""
    from cartoonseg.kenburns.camera import CameraPoses

    h, w = 240, 480
    nearness = torch.full((h, w), FAR)
    nearness[60:180, 200:280] = NEAR
    image = stripes(torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)).clone()
    scene = build_scene(image, nearness)
    poses = torch.tensor([[0, 0, 0, 1.0, 0, 0], [0.005, 0, 0, 1.0, 0, 0], [0.01, 0, 0, 1.0, 0, 0]])  # 2.4 px at Z=1
    path = CameraPoses(poses=poses, times=torch.tensor([0.0, 0.5, 1.0]), order=torch.arange(3), focal=w / 2,
                       anchor=1.0, fps=25.0)
    assert select_key_views(scene.background_depth, path) == [2]
    calls = []
    _, report = inpaint_disocclusions(scene.layers[0], scene.background_depth, scene.size, path,
                                      progress=lambda done, total: calls.append((done, total)))
    assert report.times == [1.0] and report.hole_pixels[0] >= 120  # the column the card uncovers, overshot 1.1x
    assert calls == [(0, 1), (1, 1)]  # progress over the key views, for the bars of the CLI and the node


def test_overshoot_scales_the_move_and_stops_short_of_the_nearest_points():
    poses = torch.tensor([[0.1, -0.2, 0.5, 1.2, 2.0, 0.0]])
    out = overshoot_poses(poses, 1.1)
    assert torch.allclose(out, torch.tensor([[0.11, -0.22, 0.55, 1.22, 2.2, 0.0]]))
    capped = overshoot_poses(torch.tensor([[0.0, 0.0, 0.9, 1.0, 0.0, 0.0]]), 1.5, z_near=1.0)
    assert 0.9 < float(capped[0, 2]) <= 0.95 + 1e-6


def test_lifted_points_close_the_key_view_holes_behind_the_occluder():
    image, nearness = striped_scene()
    scene = build_scene(image, nearness)
    poses = resolve_poses(pan(5), scene.depth)
    before = len(scene.layers[0])
    layer, report = inpaint_disocclusions(scene.layers[0], scene.background_depth, scene.size, poses)
    assert report.hole_pixels and sum(report.hole_pixels) == len(layer) - before
    new_z = layer.z[before:]
    assert float(new_z.min()) >= (1.0 / FAR) * 0.9  # at the far plane's depth, behind the card (Z = 1)
    assert bool((layer.features[before:, 4] == 1.0).all())  # flagged as disoccluded
    for pose in report.poses:
        holes = splat(layer, pose[None], poses.focal, scene.size).weight <= 0
        assert int(holes.sum()) == 0


# ---------------------------------------------------------------------------------------------- quality
def test_patchmatch_fill_continues_the_far_texture_where_far_side_smears():
    """Stripes parallel to the disocclusion: the far-side fill copies one column across the hole, the end-view
    PatchMatch continues the stripes. Both are compared with the exact far plane on the disoccluded pixels."""
    image, nearness = striped_scene()
    errors = {}
    for fill in ("far-side", "patchmatch"):
        clip = render_kenburns(image, nearness, camera=pan(5), config=KenBurnsConfig(fill=fill))
        err = []
        for frame, mask, pose in zip(clip.frames, clip.disocclusion, clip.poses.poses):
            holes = mask > 0.5
            truth = far_plane_truth(pose, clip.poses.focal)
            err.append(((frame - truth) ** 2).mean(-1)[holes])
        errors[fill] = float(torch.cat(err).mean())
        assert torch.cat(err).numel() > 100  # the camera does open a disocclusion
    # the smear is off by about half the stripe contrast; the continued stripes only by the renderer's resampling
    # blur (measured: about 0.5x; 0.7x leaves room for PatchMatch's float-order differences between CPUs)
    assert errors["patchmatch"] < 0.7 * errors["far-side"], errors


def _card_character():
    mask = torch.zeros(1, H, W)
    y0, y1, x0, x1 = CARD
    mask[0, y0:y1, x0:x1] = 1.0
    return mask


def test_character_reveals_are_inpainted_at_the_key_views_not_taken_from_the_plate():
    """The card is a character over a wrong (magenta) plate. With ``character_reveals="plate"`` the background the
    moving camera reveals beside it shows that plate; with the default ``key-views`` it is inpainted in the key views
    from the striped plane around it (the plate shows nowhere) and is close to the true plane."""
    image, nearness = striped_scene()
    plate = torch.zeros(H, W, 3)
    plate[..., 0] = plate[..., 2] = 1.0
    results = {}
    for reveals in ("plate", "key-views"):
        clip = render_kenburns(image, nearness, masks=_card_character(), background=plate, camera=pan(5),
                               config=KenBurnsConfig(character_reveals=reveals))
        magenta, err, n = 0, 0.0, 0
        for frame, mask, pose in zip(clip.frames, clip.disocclusion, clip.poses.poses):
            revealed = mask > 0.5
            pink = (frame[..., 0] > 0.8) & (frame[..., 1] < 0.2) & (frame[..., 2] > 0.8)
            magenta += int((pink & revealed).sum())
            err += float(((frame - far_plane_truth(pose, clip.poses.focal)) ** 2).mean(-1)[revealed].sum())
            n += int(revealed.sum())
        assert n > 100  # the camera does reveal background beside the card
        results[reveals] = (magenta / n, err / n)
    assert results["plate"][0] > 0.8, results
    assert results["key-views"][0] == 0.0, results
    # magenta is ~0.5 off the stripes in every channel; the inpainted stripes only by the resampling blur
    assert results["key-views"][1] < 0.25 * results["plate"][1], results


def test_a_house_edge_hidden_by_a_character_shows_no_plate_at_either_end_of_a_pan():
    """A character stands in front of a house's edge (the house nearer than the far plane): behind it the plate lies
    on a depth ramp between house and plane, in front of what the far-side key view lifts. Both ends of the pan
    reveal background beside the character; before, the proxy took the second end as covered by the first one's
    far points and the frames there showed the (magenta) plate. Every frame's reveals are now inpainted at both
    ends: no magenta in the first frame."""
    image, nearness = striped_scene()
    image[10:, :30] = torch.tensor([0.9, 0.7, 0.2])  # the house, Z = 2
    nearness[10:, :30] = 0.5
    mask = torch.zeros(1, H, W)
    mask[0, 14:40, 24:38] = 1.0  # the character over the house's right edge (x = 30), Z = 1
    image[14:40, 24:38] = 0.5
    nearness[14:40, 24:38] = NEAR
    plate = torch.zeros(H, W, 3)
    plate[..., 0] = plate[..., 2] = 1.0
    clip = render_kenburns(image, nearness, masks=mask, background=plate, camera=pan(5))
    frame = clip.frames[0]
    pink = (frame[..., 0] > 0.8) & (frame[..., 1] < 0.2) & (frame[..., 2] > 0.8)
    assert int((clip.disocclusion[0] > 0.5).sum()) > 100  # the first frame does reveal background
    assert int(pink.sum()) <= 4, int(pink.sum())  # was 72: the plate beside the character
    assert {0.0, 1.0} <= set(clip.key_views.times)


def test_character_reveals_copy_only_from_near_their_own_band(monkeypatch):
    """Two characters' reveals, 40 px apart, fall into one group (one window). A fence at the depth of the house
    behind the first character stands beside the second: it was a copy source for the first strip (a green blob on
    the brown house in the benchmark's scene 0). Each band of the reveals now copies only from within ``margin`` px
    of itself, while the depth-edge holes (no ``reach``) keep the whole window."""
    import cartoonseg.inpaint as inpaint
    from cartoonseg.kenburns.disocclusion import fill_view

    sources = []
    real = inpaint.patchmatch_inpaint

    def spy(image, mask, *, source=None, **kw):
        sources.append(source.clone())
        return real(image, mask, source=source, **kw)

    monkeypatch.setattr(inpaint, "patchmatch_inpaint", spy)
    h, w = 32, 80
    rgb = torch.zeros(h, w, 3)
    rgb[..., 0] = 0.5
    depth = torch.full((h, w), 3.0)  # the house and the fence, one depth
    holes = torch.zeros(h, w, dtype=torch.bool)
    holes[8:24, 10:14] = True  # the strip beside the first character
    holes[8:24, 54:58] = True  # beside the second one, 40 px further
    fill_depth = torch.where(holes, depth, torch.zeros_like(depth))
    fill_view(rgb, holes, depth, fill_depth, margin=24, split_depth=True, reach=12)
    assert len(sources) == 1  # one group, one band
    xs = sources[0].nonzero()[:, 1]
    assert int(xs.min()) >= 10 - 12 and int(xs.max()) < 58 + 12
    near_first = sources[0][:, : 14 + 12].any()
    far_from_both = sources[0][:, 14 + 12 : 54 - 12].any()
    assert bool(near_first) and not bool(far_from_both)
    sources.clear()
    fill_view(rgb, holes, depth, fill_depth, margin=24, split_depth=True)
    assert bool(sources[0][:, 14 + 12 : 54 - 12].any())  # without a reach: the whole window


def test_render_gives_the_reveals_a_reach(monkeypatch):
    """The renderer's reveals pass a reach (the group margin) to :func:`fill_view`; its depth-edge holes do not."""
    import cartoonseg.kenburns.disocclusion as D

    seen = []
    real = D.fill_view

    def spy(*args, **kw):
        seen.append((kw.get("split_depth", False), kw.get("reach")))
        return real(*args, **kw)

    monkeypatch.setattr(D, "fill_view", spy)
    image, nearness = striped_scene()
    plate = torch.zeros(H, W, 3)
    render_kenburns(image, nearness, masks=_card_character(), background=plate, camera=pan(3))
    assert any(split for split, _ in seen)
    assert all((reach is not None) == split for split, reach in seen), seen


def test_reveals_behind_the_characters_use_larger_patches_than_the_depth_edges(monkeypatch):
    """The reveals behind the characters are inpainted with 7-px patches (a wider strip next to the surface the
    character hid: +0.4 dB on all uncovered pixels in ``bench/bench_kenburns_quality.py``), the depth edges' slivers
    keep 5-px ones (7 px lose there)."""
    import cartoonseg.kenburns.disocclusion as D

    seen = []
    real = D.fill_view

    def spy(*args, **kw):
        seen.append((kw.get("split_depth", False), kw["patch_size"]))
        return real(*args, **kw)

    monkeypatch.setattr(D, "fill_view", spy)
    image, nearness = striped_scene()  # the card is background: depth-edge holes beside it
    mask = torch.zeros(1, H, W)
    mask[0, 10:30, 46:56] = 1.0  # a character beside it: reveals
    image[10:30, 46:56] = 0.3
    nearness[10:30, 46:56] = NEAR
    render_kenburns(image, nearness, masks=mask, background=torch.zeros(H, W, 3), camera=pan(3))
    assert {patch for split, patch in seen if split} == {7}, seen
    assert {patch for split, patch in seen if not split} == {5}, seen
    assert (D.REVEAL_PATCH, D.END_VIEW_PATCH) == (7, 5)


def test_characters_standing_on_the_ground_are_never_copied_into_their_reveals():
    """Two characters stand on a ground plane (each at the ground's depth at its feet). The reveals beside them form
    one group whose ground band reaches down to the nearer one's feet, so its depth range spans the farther
    character's depth: that character was a copy source, unmasked, and its colour was painted beside it (an orange
    wedge beside a head in the benchmark's scene 0). The characters are the occluders by what they are, not by
    their depth: none of their colour shows in any revealed pixel."""
    rows = torch.arange(H, dtype=torch.float32)
    nearness = (0.1 + 0.9 * rows / (H - 1))[:, None].expand(H, W).clone()  # ground: far at the top, near below
    u = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    phase = (torch.floor(u / 4.0) + torch.floor(rows[:, None] / 4.0)) % 2
    image = torch.stack([0.3 + 0.4 * phase, 0.6 + 0.0 * phase, 0.7 - 0.4 * phase], -1)  # checkered ground
    masks = torch.zeros(2, H, W)
    masks[0, 6:30, 18:28] = 1.0  # the farther character (magenta), feet on row 29
    masks[1, 18:, 40:50] = 1.0  # the nearer one (yellow), feet on the bottom row
    for m, colour in zip(masks, ([1.0, 0.0, 1.0], [1.0, 1.0, 0.0])):
        image[m > 0] = torch.tensor(colour)
        nearness[m > 0] = nearness[int(m.nonzero()[:, 0].max()), 0]
    plate = torch.full((H, W, 3), 0.5)
    clip = render_kenburns(image, nearness, masks=masks, background=plate, camera=pan(5))
    copied, n = 0, 0
    for frame, revealed in zip(clip.frames, clip.disocclusion):
        r, (red, green, blue) = revealed > 0.5, frame.unbind(-1)
        character = (red > 0.75) & (((green < 0.3) & (blue > 0.75)) | ((green > 0.75) & (blue < 0.3)))
        copied += int((character & r).sum())
        n += int(r.sum())
    assert n > 100  # the camera does reveal ground beside them
    assert copied == 0, (copied, n)


def test_fill_view_masks_the_occluder_whatever_its_depth(monkeypatch):
    """``fill_view(occluder=...)``: occluder pixels are never copy sources and, next to the holes, are masked like
    the rim, even where their depth lies inside the band's range."""
    import cartoonseg.inpaint as inpaint
    from cartoonseg.kenburns.disocclusion import fill_view

    calls = []
    real = inpaint.patchmatch_inpaint

    def spy(image, mask, *, source=None, **kw):
        calls.append((mask.clone(), source.clone()))
        return real(image, mask, source=source, **kw)

    monkeypatch.setattr(inpaint, "patchmatch_inpaint", spy)
    h, w = 32, 48
    rgb = torch.full((h, w, 3), 0.5)
    depth = torch.linspace(4.0, 1.0, h)[:, None].expand(h, w).clone()  # a ground plane
    holes = torch.zeros(h, w, dtype=torch.bool)
    holes[4:, 20:24] = True  # the reveal beside the character, down to its feet
    occluder = torch.zeros(h, w, dtype=torch.bool)
    occluder[4:, 24:30] = True  # the character, at the ground's depth (inside the band's range)
    depth[occluder] = 1.5
    rgb[occluder] = torch.tensor([1.0, 0.0, 1.0])
    fill_depth = torch.where(holes, depth, torch.zeros_like(depth))
    out = fill_view(rgb, holes, depth, fill_depth, margin=12, near_band=2, split_depth=True, occluder=occluder)
    win = occluder[:, 20 - 12 : 24 + 12]  # the group's window: its holes grown by the margin
    assert calls and all(mask.shape == win.shape for mask, _ in calls)
    for mask, source in calls:
        assert not bool((source & win).any())
        assert bool(mask[4:, 16:18].all()) and not bool(mask[4:, 18:22].any())  # the rim, 2 px, is masked
    assert not bool(((out[..., 1] < 0.3) & holes).any())  # no magenta in the hole
    calls.clear()
    fill_view(rgb, holes, depth, fill_depth, margin=12, near_band=2, split_depth=True)
    assert any(bool((source & win).any()) for _, source in calls)  # by depth alone it was a source


def test_depth_bands_split_a_group_at_depth_jumps():
    from cartoonseg.kenburns.disocclusion import _depth_bands

    group = torch.zeros(4, 6, dtype=torch.bool)
    group[1:3, :] = True
    depth = torch.full((4, 6), 2.0)
    depth[:, 3:] = 10.0  # the right half of the holes lies on a far wall, the left on a near ground
    depth[2, 0] = 2.1  # within the tolerance: same band
    bands = _depth_bands(group, depth, 0.1, True)
    assert len(bands) == 2
    (near, (lo0, hi0)), (far, (lo1, hi1)) = bands
    assert torch.equal(near, group & (depth < 5)) and torch.equal(far, group & (depth > 5))
    assert lo0 == pytest.approx(2.0 * 0.9) and hi0 == pytest.approx(2.1 * 1.1) and lo1 == pytest.approx(9.0)
    whole = _depth_bands(group, depth, 0.1, False)
    assert len(whole) == 1 and torch.equal(whole[0][0], group) and whole[0][1][1] == pytest.approx(11.0)
    assert _depth_bands(group, torch.full((4, 6), float("inf")), 0.1, True) == []


def test_pixels_visible_in_the_input_do_not_change_with_the_fill():
    image, nearness = striped_scene()
    clips = {f: render_kenburns(image, nearness, camera=pan(4), config=KenBurnsConfig(fill=f)) for f in FILLS[:2]}
    a, b = clips["far-side"], clips["patchmatch"]
    near_hole = torch.nn.functional.max_pool2d(
        torch.maximum(a.disocclusion, b.disocclusion)[:, None], 5, stride=1, padding=2)[:, 0] > 0
    assert torch.allclose(a.frames[~near_hole], b.frames[~near_hole], atol=1e-5)
    assert a.key_views is None and len(b.key_views.hole_pixels) >= 1


def test_static_camera_inpaints_nothing_and_reproduces_the_input():
    image, nearness = striped_scene()
    clip = render_kenburns(image, nearness, camera=CameraPath(preset="static", frames=2, playback=False))
    assert clip.key_views is not None and clip.key_views.hole_pixels == []
    assert torch.allclose(clip.frames[0], image, atol=1e-5)


def test_missing_plate_is_inpainted_with_texture():
    """No plate given: the characters' area is filled by PatchMatch (stripes continue behind the card), not by the
    smooth pull-push fill of ``far-side``."""
    image, nearness = striped_scene()
    mask = torch.zeros(1, H, W)
    y0, y1, x0, x1 = CARD
    mask[0, y0:y1, x0:x1] = 1.0
    truth = stripes(torch.arange(W, dtype=torch.float32)[None, :].expand(H, W))
    inside = (slice(y0 + 1, y1 - 1), slice(x0 + 1, x1 - 1))
    errors = {}
    for fill in ("far-side", "patchmatch"):
        scene = build_scene(image, nearness, mask, None, plate_fill=fill != "far-side")
        plate = scene.layers[0].features[:, 0:3].reshape(H, W, 3)
        errors[fill] = float(((plate - truth)[inside] ** 2).mean())
        assert torch.allclose(plate[:y0], image[:y0])  # outside the characters the plate is the input
    assert errors["patchmatch"] < 0.5 * errors["far-side"], errors


# ---------------------------------------------------------------------------------------------- diffusion
def test_diffusion_fill_needs_a_refiner_and_keeps_only_its_hole_pixels():
    image, nearness = striped_scene()
    with pytest.raises(ValueError, match="diffusion"):
        render_kenburns(image, nearness, camera=pan(3), config=KenBurnsConfig(fill="diffusion"))
    calls = []

    def magenta(img, mask, init):
        calls.append((img.shape, mask.dtype, float(mask.float().mean())))
        assert torch.isfinite(init).all() and torch.equal(img[~mask], init[~mask])
        out = init.clone()
        out[mask] = torch.tensor([1.0, 0.0, 1.0])
        return out

    clip = render_kenburns(image, nearness, camera=pan(3), config=KenBurnsConfig(fill="diffusion"), refiner=magenta)
    assert len(clip.key_views.hole_pixels) == len(calls) >= 1 and calls[0][1] == torch.bool
    n_calls = len(calls)
    last = clip.frames[-1]
    pink = (last[..., 0] > 0.9) & (last[..., 1] < 0.1) & (last[..., 2] > 0.9)
    holes = clip.disocclusion[-1] > 0.5
    assert int((pink & holes).sum()) > 0.8 * int(holes.sum())
    assert not bool(pink[~torch.nn.functional.max_pool2d(holes[None, None].float(), 3, 1, 1)[0, 0].bool()].any())
    # the same refiner does nothing unless fill is diffusion
    plain = render_kenburns(image, nearness, camera=pan(3), refiner=magenta)
    assert len(calls) == n_calls and not bool(((plain.frames[..., 1] < 0.1) & (plain.frames[..., 0] > 0.9)).any())


def test_diffusion_refiner_sees_a_clean_background_where_the_characters_are():
    """With the characters' reveals inpainted, the refiner of a key view gets the characters' area as plate and
    inside its mask (the original masks the rendered instances so no character is painted into a hole); only the
    revealed pixels keep its output, the character is never repainted."""
    image, nearness = striped_scene()
    u = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    plate = stripes(u)  # the true far plane: a clean background behind the card
    seen = []

    def magenta(img, mask, init):
        seen.append((img.clone(), mask.clone()))
        out = init.clone()
        out[mask] = torch.tensor([1.0, 0.0, 1.0])
        return out

    clip = render_kenburns(image, nearness, masks=_card_character(), background=plate, camera=pan(5),
                           config=KenBurnsConfig(fill="diffusion"), refiner=magenta)
    assert len(seen) == len(clip.key_views.hole_pixels) >= 1
    y0, y1, x0, x1 = CARD
    for img, mask in seen:
        card = (img - 0.5).abs().amax(-1) < 0.02  # the card's grey
        assert not bool(card.any())  # the refiner sees no character at all
        assert int(mask.sum()) >= (y1 - y0) * (x1 - x0)  # its area (and the reveals) are repainted
    last = clip.frames[-1]
    pink = (last[..., 0] > 0.9) & (last[..., 1] < 0.1) & (last[..., 2] > 0.9)
    revealed = clip.disocclusion[-1] > 0.5
    assert int((pink & revealed).sum()) > 0.8 * int(revealed.sum())
    grey = (last - 0.5).abs().amax(-1) < 0.02
    assert int(grey.sum()) >= 0.8 * (y1 - y0) * (x1 - x0) and not bool((pink & grey).any())


def test_config_validation():
    with pytest.raises(ValueError, match="fill"):
        KenBurnsConfig(fill="smear")
    with pytest.raises(ValueError, match="key_views"):
        KenBurnsConfig(key_views=-1)
    with pytest.raises(ValueError, match="key_view_overshoot"):
        KenBurnsConfig(key_view_overshoot=0.5)
    with pytest.raises(ValueError, match="character_reveals"):
        KenBurnsConfig(character_reveals="smear")


# ---------------------------------------------------------------------------------------------- PatchMatch source
def test_patchmatch_copies_only_from_the_source_region():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(40, 40, 3)
    image[:, :20] = torch.tensor([1.0, 0.0, 0.0]) * (0.8 + 0.2 * torch.rand(40, 20, 1, generator=g))
    image[:, 20:] = torch.tensor([0.0, 0.0, 1.0]) * (0.8 + 0.2 * torch.rand(40, 20, 1, generator=g))
    hole = torch.zeros(40, 40, dtype=torch.bool)
    hole[15:25, 22:30] = True  # inside the blue half
    source = torch.zeros(40, 40, dtype=torch.bool)
    source[:, :20] = True
    out = patchmatch_inpaint(image, hole, source=source)
    assert float(out[hole][:, 2].max()) < 0.05 and float(out[hole][:, 0].min()) > 0.5  # red only
    assert torch.allclose(out[~hole], image[~hole], atol=1e-6)
    default = patchmatch_inpaint(image, hole)
    assert float(default[hole][:, 2].mean()) > 0.5  # without the restriction the blue surroundings win
    with pytest.raises(ValueError, match="source"):
        patchmatch_inpaint(image, hole, source=torch.zeros(40, 40, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- command line
def _write_inputs(folder):
    from PIL import Image

    image, nearness = striped_scene()
    Image.fromarray((image.numpy() * 255 + 0.5).astype("uint8")).save(folder / "img.png")
    Image.fromarray((nearness.numpy() * 255 + 0.5).astype("uint8")).save(folder / "depth.png")
    return ["kenburns", str(folder / "img.png"), "--depth", str(folder / "depth.png"), "--camera", "pan-right",
            "--zoom", "1.6", "--frames", "3"]


def test_cli_fill_choices(tmp_path, capsys):
    from cartoonseg.kenburns.cli import main

    args = _write_inputs(tmp_path)
    assert main([*args, "--out", str(tmp_path / "a.webp")]) == 0
    assert "key views inpainted (patchmatch)" in capsys.readouterr().out
    assert main([*args, "--fill", "far-side", "--out", str(tmp_path / "b.webp")]) == 0
    assert "key views" not in capsys.readouterr().out
    assert main([*args, "--fill", "diffusion", "--out", str(tmp_path / "c.webp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fill diffusion needs --diffusion-model") and "\n" == err[-1] and err.count("\n") == 1
    assert not (tmp_path / "c.webp").exists()
    assert main([*args, "--character-reveals", "plate", "--out", str(tmp_path / "d.webp")]) == 0
    with pytest.raises(SystemExit):
        main([*args, "--character-reveals", "smear", "--out", str(tmp_path / "e.webp")])
    assert "--character-reveals: invalid choice: 'smear'" in capsys.readouterr().err


def test_cli_plane_guidance_switch(tmp_path, monkeypatch):
    import cartoonseg.kenburns.cli as cli

    seen = []
    real = cli.render_kenburns
    monkeypatch.setattr(cli, "render_kenburns", lambda *a, **k: seen.append(k["config"]) or real(*a, **k))
    args = _write_inputs(tmp_path)
    assert cli.main([*args, "--out", str(tmp_path / "a.webp")]) == 0
    assert cli.main([*args, "--no-plane-guidance", "--out", str(tmp_path / "b.webp")]) == 0
    assert [c.plane_guidance for c in seen] == [True, False]


def test_cli_depth_refine_switch(tmp_path, monkeypatch):
    import cartoonseg.kenburns.cli as cli

    seen = []
    real = cli.render_kenburns
    monkeypatch.setattr(cli, "render_kenburns", lambda *a, **k: seen.append(k["config"]) or real(*a, **k))
    args = _write_inputs(tmp_path)
    for i, flag in enumerate(([], ["--depth-refine"], ["--no-depth-refine"])):
        assert cli.main([*args, *flag, "--fill", "far-side", "--out", str(tmp_path / f"{i}.webp")]) == 0
    assert [c.depth_refine for c in seen] == [True, True, False]  # on by default


def test_cli_diffusion_fill_runs_a_diffusers_pipeline(tmp_path, capsys, tiny_pipeline_dir):
    from PIL import Image

    from cartoonseg.kenburns.cli import main

    args = _write_inputs(tmp_path)
    code = main([*args, "--fill", "diffusion", "--diffusion-model", str(tiny_pipeline_dir), "--tags", "sky, stripes",
                 "--diffusion-steps", "2", "--short-side", "64", "--out", str(tmp_path / "clip.webp")])
    assert code == 0, capsys.readouterr().err
    assert "key views inpainted (diffusion)" in capsys.readouterr().out
    with Image.open(tmp_path / "clip.webp") as webp:
        assert webp.size == (W, H) and webp.n_frames == 3


def _quality_bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import bench_kenburns_quality as bench
    finally:
        sys.path.pop(0)
    return bench


def test_quality_benchmark_planar_truth_plate_is_exact_on_the_planes_only():
    """The benchmark's oracle plate: the exact background wherever the surface hidden behind the characters is the
    far wall or the ground, the pipeline's PatchMatch plate where it is a mid-ground card; an unknown plate name is
    refused with the allowed ones."""
    bench = _quality_bench()
    size = (64, 96)
    focal = 48.0
    layers = bench.make_scene(1, size[1] / size[0], focal)  # scene 1: a house mostly hidden by a character
    image, _, masks, _ = bench.scene_inputs(layers, size)
    background = [la for la in layers if not la.character]
    truth, (idx, _, _, _) = bench.render_truth(background, torch.tensor([0, 0, 0, 1.0, 0, 0]), focal, size)
    share = bench._down((idx >= 2).float()[..., None], bench.SUPERSAMPLE)[..., 0]  # layers 0, 1: wall, ground
    card, planar = share > 0.5, share < 0.5  # (a pixel half on a card is left out)
    pipeline = bench._pipeline_plate(image, masks)
    oracle = bench.planar_truth_plate(layers, pipeline, focal, size)
    hole = (pipeline - image).abs().amax(-1) > 0  # where the pipeline's plate differs from the input
    planar = hole & planar
    assert int(planar.sum()) > 50 and int((hole & card).sum()) > 10
    assert torch.equal(oracle[planar], truth[planar])
    assert torch.equal(oracle[hole & card], pipeline[hole & card])
    assert (pipeline[planar] - truth[planar]).abs().mean() > 0.01  # the oracle is not the pipeline's plate there
    with pytest.raises(ValueError, match="planar-truth"):
        bench.main(["--quick", "--plates", "truth,exact"])


def test_quality_benchmark_quick_run_reports_every_fill(tmp_path):
    """bench/bench_kenburns_quality.py end to end on one tiny scene: ground truth is ray cast, every fill and plate
    is rendered and scored (no figure is asserted; the benchmark's numbers live in the README)."""
    import json

    bench = _quality_bench()
    out = tmp_path / "q.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0

    def refuse(constant):
        raise AssertionError(f"{constant} is not standard JSON (a region without pixels must be null)")

    summary = json.loads(out.read_text(), parse_constant=refuse)["summary"]
    fills = ("far-side", "patchmatch+plate", "patchmatch")
    assert set(summary) == {f"{p}/{f}" for p in ("truth", "patchmatch") for f in fills}
    for row in summary.values():
        assert row["disoccluded"]["pixels"] > 0 and row["elsewhere"]["pixels"] > row["disoccluded"]["pixels"]
        for region in ("edges", "behind_characters"):  # split by the surface shown, which covers the region
            assert sum(row[f"{region}/{s}"]["pixels"] for s in bench.SURFACES) == row[region]["pixels"]
        assert 0 < row["elsewhere"]["ssim"] <= 1 and row["elsewhere"]["psnr"] > 15
        for scores in row.values():
            if isinstance(scores, dict) and scores["pixels"] == 0:
                assert scores["psnr"] is None and scores["ssim"] is None, scores


def test_quality_benchmark_first_scene_scores_held_out_scenes(tmp_path):
    """``--first-scene N`` scores scenes N.. (held-out scenes a change tuned on scenes 0-5 never saw), each exactly as
    a run from scene 0 scores it; a negative start is refused with one usage line."""
    import json

    bench = _quality_bench()
    common = ["--size", "96", "--frames", "3", "--cameras", "auto", "--fills", "far-side", "--plates", "truth"]
    both, held = tmp_path / "both.json", tmp_path / "held.json"
    assert bench.main([*common, "--scenes", "2", "--json", str(both)]) == 0
    assert bench.main([*common, "--scenes", "1", "--first-scene", "1", "--json", str(held)]) == 0
    rows = json.loads(both.read_text())["per_scene"]
    held_rows = json.loads(held.read_text())["per_scene"]
    assert [r["scene"] for r in rows] == [0, 1] and [r["scene"] for r in held_rows] == [1]
    assert held_rows[0] == rows[1]
    with pytest.raises(SystemExit) as err:
        bench.main(["--quick", "--first-scene", "-1"])
    assert err.value.code == 2


def test_quality_benchmark_fill_names():
    """The benchmark's fill names: a renderer fill with options after '+' (the plate behind the characters, no plane
    guidance, depth-edge refinement on or off); an unknown option is refused with the allowed ones."""
    bench = _quality_bench()
    assert bench.fill_config("patchmatch") == KenBurnsConfig(fill="patchmatch")
    assert bench.fill_config("patchmatch+plate") == KenBurnsConfig(fill="patchmatch", character_reveals="plate")
    assert bench.fill_config("patchmatch+noplanes") == KenBurnsConfig(fill="patchmatch", plane_guidance=False)
    both = bench.fill_config("patchmatch+plate+noplanes")
    assert both.character_reveals == "plate" and not both.plane_guidance
    assert bench.fill_config("far-side+edges") == KenBurnsConfig(fill="far-side", depth_refine=True)
    assert bench.fill_config("far-side+noedges") == KenBurnsConfig(fill="far-side", depth_refine=False)
    with pytest.raises(ValueError, match="plate, noplanes, edges, noedges"):
        bench.fill_config("patchmatch+planes")


def test_fill_view_skips_only_bands_lying_all_in_skip(spy_calls):
    """``fill_view(skip=...)``: a band whose pixels the caller replaces anyway (the plane-filled holes) is not
    inpainted; every other band, one with some pixels in ``skip`` included, is filled exactly as without it."""
    import cartoonseg.inpaint as inpaint
    from cartoonseg.kenburns.disocclusion import fill_view

    calls = spy_calls(inpaint, "patchmatch_inpaint")
    g = torch.Generator().manual_seed(0)
    h, w = 40, 120
    rgb = torch.rand(h, w, 3, generator=g)
    depth = torch.full((h, w), 3.0)
    holes = torch.zeros(h, w, dtype=torch.bool)
    a = torch.zeros_like(holes)
    a[14:26, 10:16] = True
    b = torch.zeros_like(holes)
    b[14:26, 90:96] = True  # 74 px away: another group with margin 12
    holes = a | b
    fill_depth = torch.where(holes, depth, torch.zeros_like(depth))
    ref = fill_view(rgb, holes, depth, fill_depth, margin=12)
    assert len(calls) == 2
    calls.clear()
    out = fill_view(rgb, holes, depth, fill_depth, margin=12, skip=a)
    assert len(calls) == 1
    assert torch.equal(out[~a], ref[~a])
    assert torch.equal(out[a], rgb[a])  # left as given (no fallback): the caller replaces it
    half_b = b & (torch.arange(w) < 93)[None]
    calls.clear()
    out = fill_view(rgb, holes, depth, fill_depth, margin=12, skip=a | half_b)
    assert len(calls) == 1
    assert torch.equal(out[b], ref[b])  # b runs whole: its skipped half shapes the rest's fill
