"""3D Ken Burns renderer (cartoonseg.kenburns) on small analytic scenes: fronto-parallel planes at known depths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cartoonseg.kenburns import (
    CameraPath,
    KenBurnsConfig,
    build_scene,
    ease,
    fill_holes_far,
    fill_push_pull,
    fill_rows,
    playback_order,
    render_kenburns,
    render_poses,
    resolve_poses,
    splat,
    unproject,
)
from cartoonseg.kenburns.camera import AUTO_START_CROP, EASINGS, PRESETS, search_auto_end
from cartoonseg.kenburns.dof import bokeh_blur, focus_schedule
from cartoonseg.kenburns.fill import DIRECTIONS, nearest_valid
from cartoonseg.kenburns.render import coverage_counter
from cartoonseg.structures import Instances

RED = torch.tensor([1.0, 0.0, 0.0])
GREEN = torch.tensor([0.0, 1.0, 0.0])
BLUE = torch.tensor([0.0, 0.0, 1.0])


def two_planes(size: int = 64, near: float = 1.0, far: float = 0.25, box=(20, 44, 24, 40)):
    """A far blue plane and a near red card (rows y0:y1, cols x0:x1). Returns image, nearness, card mask."""
    y0, y1, x0, x1 = box
    image = BLUE.expand(size, size, 3).clone()
    nearness = torch.full((size, size), far)
    mask = torch.zeros(1, size, size)
    mask[0, y0:y1, x0:x1] = 1.0
    image[y0:y1, x0:x1] = RED
    nearness[y0:y1, x0:x1] = near
    return image, nearness, mask


def pose(tx=0.0, ty=0.0, tz=0.0, k=1.0, px=0.0, py=0.0) -> torch.Tensor:
    return torch.tensor([[tx, ty, tz, k, px, py]])


def centroid(weight: torch.Tensor) -> tuple[float, float]:
    h, w = weight.shape
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    total = weight.sum()
    return float((weight * xs).sum() / total), float((weight * ys).sum() / total)


# ---------------------------------------------------------------------------------------------- camera
def test_frame_count_playback_and_fps():
    path = CameraPath(preset="zoom-in", frames=75, playback=True, fps=30.0)
    assert path.total_frames == 148  # 75 + 73, the original's ping-pong
    assert CameraPath(frames=75, playback=False).total_frames == 75
    order = playback_order(5, True)
    assert order.tolist() == [0, 1, 2, 3, 4, 3, 2, 1]
    assert playback_order(2, True).tolist() == [0, 1]
    image, nearness, mask = two_planes(32, box=(10, 22, 10, 20))
    clip = render_kenburns(image, nearness, masks=mask, camera=CameraPath(preset="zoom-in", frames=6, fps=12.5))
    assert clip.frames.shape == (10, 32, 32, 3) and clip.disocclusion.shape == (10, 32, 32)
    assert clip.fps == 12.5
    # ping-pong: frame k of the way back equals frame k of the way out
    for k in range(1, 5):
        assert torch.equal(clip.frames[k], clip.frames[10 - k])


@pytest.mark.parametrize("easing", EASINGS)
def test_easing_is_monotone_with_fixed_ends(easing):
    t = torch.linspace(0, 1, 101)
    u = ease(t, easing)
    assert float(u[0]) == pytest.approx(0.0, abs=1e-6) and float(u[-1]) == pytest.approx(1.0, abs=1e-6)
    assert bool((u[1:] - u[:-1] >= -1e-7).all())


def test_camera_path_validation():
    with pytest.raises(ValueError, match="preset"):
        CameraPath(preset="spin")
    with pytest.raises(ValueError, match="frames"):
        CameraPath(frames=0)
    with pytest.raises(ValueError, match="zoom"):
        CameraPath(zoom=0.5)
    with pytest.raises(ValueError, match="easing"):
        CameraPath(easing="bounce")
    with pytest.raises(ValueError, match="fps"):
        CameraPath(fps=0.0)
    with pytest.raises(ValueError, match="coverage_fn"):
        resolve_poses(CameraPath(preset="auto"), torch.ones(16, 16))


def test_zoom_in_magnifies_anchor_depth_by_zoom():
    depth = torch.full((40, 60), 2.0)
    poses = resolve_poses(CameraPath(preset="zoom-in", frames=5, zoom=1.5), depth)
    focal = poses.focal
    assert focal == 30.0 and poses.anchor == pytest.approx(2.0)
    # two points at the anchor depth, 10 px apart around the centre, end 15 px apart
    z = torch.tensor([2.0, 2.0])
    u = torch.tensor([-5.0, 5.0])
    tx, ty, tz, k, px, py = poses.poses[-1]
    x = k * (z * u - focal * tx) / (z - tz) + px
    assert float(x[1] - x[0]) == pytest.approx(15.0, rel=1e-5)
    assert torch.allclose(poses.poses[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "auto"])
def test_flat_scene_reveals_nothing(preset):
    """With the anchor at the (only) depth, no preset may look past the image border: no holes at all."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(40, 48, 3, generator=g)
    nearness = torch.full((40, 48), 0.5)
    clip = render_kenburns(image, nearness, camera=CameraPath(preset=preset, frames=7, playback=False))
    assert float(clip.disocclusion.max()) == 0.0
    assert torch.isfinite(clip.frames).all()


def test_auto_path_start_and_end_follow_the_original():
    image, nearness, mask = two_planes(64)
    scene = build_scene(image, nearness, mask)
    poses = resolve_poses(CameraPath(preset="auto", frames=5), scene.depth, coverage_fn=coverage_counter(scene))
    z_a = poses.anchor
    assert z_a == pytest.approx(1.0, rel=1e-5)  # the near card
    start, end = poses.poses[0], poses.poses[-1]
    assert float(start[0]) == 0.0 and float(start[1]) == 0.0  # centred
    assert float(start[2]) == pytest.approx(z_a * (1 - AUTO_START_CROP), rel=1e-4)  # 0.97 crop
    end_zoom = 1.0 / (1.0 - float(end[2]) / z_a)
    assert end_zoom == pytest.approx(1.25 / AUTO_START_CROP, rel=1e-4)
    # the end shift lies on the search grid (+-100 px at 1024 -> +-6.25 px at 64) and inside the image
    shift = float(end[0]) * poses.focal / z_a
    assert abs(shift) <= 6.25 + 1e-4


def test_auto_search_picks_best_coverage_inside_the_image():
    def coverage(poses):  # prefers shifts near (+40, -20) px
        sx = poses[:, 0] * 500.0 / 1.0
        sy = poses[:, 1] * 500.0 / 1.0
        return -((sx - 40.0) ** 2 + (sy + 20.0) ** 2)

    dx, dy = search_auto_end((1000, 1000), 1.25, 1.0, 500.0, coverage)
    grid = torch.linspace(-100 * 1000 / 1024, 100 * 1000 / 1024, 16)
    assert dx == pytest.approx(float(grid[(grid - 40).abs().argmin()]), rel=1e-5)
    assert dy == pytest.approx(float(grid[(grid + 20).abs().argmin()]), rel=1e-5)
    # a crop zoom of 1.01 leaves a 5 px margin at 1000 px: every larger shift is rejected
    dx, dy = search_auto_end((1000, 1000), 1.01, 1.0, 500.0, lambda p: p[:, 0])
    assert abs(dx) <= 0.5 * 1000 * (1 - 1 / 1.01)


# ---------------------------------------------------------------------------------------------- geometry
def test_zero_motion_reproduces_the_input():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(48, 56, 3, generator=g)
    nearness = torch.rand(48, 56, generator=g) * 0.8 + 0.2
    masks = torch.zeros(2, 48, 56)
    masks[0, 10:30, 5:25] = 1.0
    masks[1, 20:44, 30:50] = torch.rand(24, 20, generator=g)  # soft alpha
    plate = torch.rand(48, 56, 3, generator=g)
    # the input is a real composite of characters over the plate (alpha matting), soft edges included
    character = torch.rand(48, 56, 3, generator=g)
    alpha = masks.amax(0)[..., None]
    image = alpha * character + (1 - alpha) * plate
    binary = (masks > 0.5).float()
    for kwargs in ({}, {"masks": masks, "background": plate}, {"masks": binary}):
        clip = render_kenburns(image, nearness, camera=CameraPath(preset="static", frames=3, playback=False), **kwargs)
        for frame in clip.frames:
            assert torch.allclose(frame, image, atol=1e-5), kwargs.keys()
        soft_edges = kwargs.get("masks") is masks
        assert float(clip.disocclusion.max()) <= (0.25 + 1e-5 if soft_edges else 1e-5)


def _cover(lo: float, hi: float, n: int) -> torch.Tensor:
    """Fraction of each pixel [i, i+1) inside [lo, hi) (anti-aliased edges)."""
    i = torch.arange(n, dtype=torch.float32)
    return (torch.minimum(i + 1, torch.tensor(hi)) - torch.maximum(i, torch.tensor(lo))).clamp(0.0, 1.0)


@pytest.mark.parametrize("matted", [False, True])
def test_overlapping_characters_composite_back_to_front(matted):
    """A farther card (Z=2) partly hidden by a nearer one (Z=1), both with anti-aliased edges, over a plate (Z=4);
    the soft masks (or alpha mattes) are the visible regions (they share the pixels where the cards meet). A static
    camera reproduces the input, and once the nearer card moves away the farther card's edge where they met shows
    its own colour, as in a ground-truth render of each card as its own layer, not a mix with the nearer card or
    the plate."""
    size, focal = 64, 32.0
    orange, green, sky = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.1, 0.7, 0.2]), torch.tensor([0.2, 0.3, 0.9])
    far_x, near_x = (12.3, 40.6), (30.4, 56.2)  # columns; the farther card ends behind the nearer one
    far = _cover(10.0, 50.0, size)[:, None] * _cover(*far_x, size)[None, :]
    near = _cover(20.0, 60.0, size)[:, None] * _cover(*near_x, size)[None, :]
    far_visible = far * (1.0 - near)
    image = (near[..., None] * green + far_visible[..., None] * orange
             + (1.0 - near - far_visible)[..., None] * sky)
    nearness = torch.full((size, size), 0.25)
    nearness[far_visible > 0.5] = 0.5
    nearness[near > 0.5] = 1.0
    masks = torch.stack([far_visible, near])
    if matted:
        masks = Instances.from_masks(masks > 0.5).replace(alphas=masks)
    plate = sky.expand(size, size, 3).clone()
    scene = build_scene(image, nearness, masks, plate)
    rgb, _, _ = render_poses(scene, pose(), focal)
    assert torch.allclose(rgb[0].permute(1, 2, 0), image, atol=1e-5)
    # the camera moves left: the nearer card shifts 4 px right, the farther one 2 px, the plate 1 px
    rgb, _, _ = render_poses(scene, pose(tx=-4.0 / focal), focal)
    frame = rgb[0].permute(1, 2, 0)
    # ground truth: each card drawn as its own layer at its depth, shifted by f t / Z
    far_t = _cover(10.0, 50.0, size)[:, None] * _cover(far_x[0] + 2, far_x[1] + 2, size)[None, :]
    near_t = _cover(20.0, 60.0, size)[:, None] * _cover(near_x[0] + 4, near_x[1] + 4, size)[None, :]
    truth = near_t[..., None] * green + (far_t * (1 - near_t))[..., None] * orange
    truth = truth + ((1 - far_t) * (1 - near_t))[..., None] * sky
    # the farther card's pixels that met the nearer card in the input (column 30, a = 0.4 next to 0.6 of the
    # nearer card), now 2 px right of it and clear of the nearer card (rows where both cards are)
    rows = slice(22, 48)
    edge = frame[rows, 32]
    assert float((edge - truth[rows, 32]).abs().max()) < 0.03, edge[0]
    assert float((edge - orange).abs().max()) < 0.03
    # its inside and the nearer card's inside are untouched; nothing of the plate shows between the cards' edges
    assert float((frame[rows, 20:32] - truth[rows, 20:32]).abs().max()) < 0.03
    assert float((frame[rows, 36:60] - truth[rows, 36:60]).abs().max()) < 0.03


def test_parallax_shift_matches_the_pinhole_prediction():
    """Near card at Z=1, far plane at Z=4: a lateral camera move shifts each by f * t_x / Z (within a pixel)."""
    size, focal = 96, 48.0
    image = torch.full((size, size, 3), 0.5)
    nearness = torch.full((size, size), 0.25)
    mask = torch.zeros(1, size, size)
    mask[0, 30:70, 36:60] = 1.0
    nearness[30:70, 36:60] = 1.0
    image[30:70, 36:60] = torch.tensor([0.5, 0.4, 0.5])
    image[46:50, 46:50] = RED  # marker on the card, centre (47.5, 47.5)
    image[10:14, 10:14] = BLUE  # marker on the far plane, centre (11.5, 11.5)
    plate = torch.full((size, size, 3), 0.5)
    poses = resolve_poses(CameraPath(preset="pan-right", frames=6, zoom=1.3, playback=False), 1.0 / nearness)
    scene = build_scene(image, nearness, mask, plate)
    rgb, _, _ = render_poses(scene, poses.poses, poses.focal)
    for frame, (tx, ty, tz, k, px, py) in zip(rgb, poses.poses.tolist()):
        for (u, v), z, colour in (((47.5, 47.5), 1.0, RED), ((11.5, 11.5), 4.0, BLUE)):
            cx = 0.5 * (size - 1)
            ex = cx + px + k * (z * (u - cx) - focal * tx) / (z - tz)
            ey = cx + py + k * (z * (v - cx) - focal * ty) / (z - tz)
            score = (frame * colour[:, None, None]).sum(0) - (frame * (1 - colour)[:, None, None]).sum(0)
            mx, my = centroid((score - 0.3).clamp_min(0))
            assert abs(mx - ex) < 1.0 and abs(my - ey) < 1.0, (colour, mx, ex, my, ey)
    # the near card moves more than the far plane between the first and last frame
    first, last = poses.poses[0], poses.poses[-1]
    near_move = abs(float(last[0] - first[0])) * focal / 1.0 * float(first[3])
    far_move = abs(float(last[0] - first[0])) * focal / 4.0 * float(first[3])
    assert near_move > 3 * far_move > 0


def test_revealed_region_shows_the_background_plate_never_the_character():
    image, nearness, mask = two_planes(64)
    plate = GREEN.expand(64, 64, 3).clone()
    scene = build_scene(image, nearness, mask, plate)
    focal = 32.0
    shift = 6.0  # the card (Z=1) moves 6 px left, the far plane (Z=4) 1.5 px
    rgb, disocc, _ = render_poses(scene, pose(tx=shift / focal), focal)
    frame = rgb[0]
    red = (frame[0] > 0.5) & (frame[1] < 0.5)
    green = (frame[1] > 0.99) & (frame[0] < 0.01) & (frame[2] < 0.01)
    # new card footprint: rows 20:44, cols 18:34; old footprint moved by the far plane: cols 22.5:38.5
    revealed = torch.zeros(64, 64, dtype=torch.bool)
    revealed[21:43, 35:38] = True  # strictly inside (old card region seen through the far plane) minus the new card
    assert bool(green[revealed].all())
    assert float(disocc[0, 0][revealed].min()) > 0.99
    allowed = torch.zeros(64, 64, dtype=torch.bool)
    allowed[19:45, 17:35] = True
    assert not bool(red[~allowed].any())  # no smeared character outside its new footprint
    assert bool(red[21:43, 19:33].all())


def test_revealed_region_without_plate_takes_surrounding_background():
    image, nearness, mask = two_planes(64)
    scene = build_scene(image, nearness, mask, None)
    rgb, _, _ = render_poses(scene, pose(tx=6.0 / 32.0), 32.0)
    frame = rgb[0]
    assert float(frame[0, 21:43, 35:38].max()) < 0.05  # no red
    assert float(frame[2, 21:43, 35:38].min()) > 0.95  # blue of the far plane


def test_single_layer_holes_are_filled_from_the_far_side():
    """No instances: the depth map alone. The hole right of the moved card takes the far plane's colour."""
    image, nearness, _ = two_planes(64)
    rgb, disocc, _ = render_poses(build_scene(image, nearness), pose(tx=6.0 / 32.0), 32.0)
    frame, holes = rgb[0], disocc[0, 0] > 0.5
    assert int(holes.sum()) > 40  # the disocclusion exists
    assert float(frame[0][holes].max()) < 1e-5 and float(frame[2][holes].min()) > 1 - 1e-5


def test_far_side_fill_of_sparse_holes_equals_the_whole_frame_fill(monkeypatch):
    """fill_holes_far works on the holes' bounding box grown by a pixel (every search path ends on the first non-hole
    pixel, inside that box): the result must be exactly the whole-frame one, borders and unknown depths included."""
    import cartoonseg.kenburns.fill as fill

    g = torch.Generator().manual_seed(1)
    for trial in range(12):
        values = torch.rand(2, 4, 40, 50, generator=g)
        depth = torch.rand(2, 1, 40, 50, generator=g) * 5 + 1
        valid = torch.ones(2, 1, 40, 50, dtype=torch.bool)
        y, x = min(3 * trial, 32), min(4 * trial, 44)  # a cluster of holes, moving into the bottom-right corner
        valid[:, :, y : y + 8, x : x + 6] = torch.rand(2, 1, 8, 6, generator=g) > 0.3
        if trial % 3 == 0:
            valid[0, 0, 0, :5] = False  # a second cluster on the top border
        depth[0, 0, y + 1, x + 1] = float("inf")  # a grazed pixel without z-buffer depth
        for side in ("farthest", "behind"):
            cropped = fill.fill_holes_far(values, valid, depth, side=side)
            monkeypatch.setattr(fill, "CROP_FRACTION", 0.0)
            whole = fill.fill_holes_far(values, valid, depth, side=side)
            monkeypatch.undo()
            assert torch.equal(cropped[0], whole[0]), (trial, side)
            assert torch.equal(cropped[1].nan_to_num(posinf=-1), whole[1].nan_to_num(posinf=-1)), (trial, side)


def test_zbuffer_nearest_point_wins_and_close_points_blend():
    depth = torch.tensor([[1.0, 3.0]])
    feats = torch.tensor([[[1.0, 0.0]]])  # the near point carries 1, the far one 0
    cloud = unproject(depth, feats)
    # move the far point onto the near one: far point at u=0.5 (c_x=0.5), near at u=-0.5 -> shift both onto x=0
    cloud.ax = torch.tensor([0.0, 0.0])
    cloud.ay = torch.tensor([0.0, 0.0])
    out = splat(cloud, pose(), 1.0, (1, 1), crack_fill=False)
    assert float(out.features[0, 0, 0, 0]) == 1.0 and float(out.depth[0, 0, 0, 0]) == 1.0
    cloud.z = torch.tensor([1.0, 1.01])  # within the 3 % band: blended equally
    out = splat(cloud, pose(), 1.0, (1, 1), crack_fill=False)
    assert float(out.features[0, 0, 0, 0]) == pytest.approx(0.5)


def test_moving_character_keeps_its_size():
    """A character layer shifted by half a pixel covers its own area: its edge pixels are resampled over the
    transparent ring around it instead of being normalised to full opacity (which grew a 16x16 card to about
    16x17, 272 px, in every moving frame)."""
    image, nearness, mask = two_planes(64, near=1.0, far=0.25, box=(24, 40, 24, 40))
    scene = build_scene(image, nearness, mask, background=BLUE.expand(64, 64, 3))
    rgb, _, _ = render_poses(scene, pose(px=0.5), 32.0)
    assert abs(float(rgb[0, 0].sum()) - 256.0) < 1.0  # red share of every pixel = the card's coverage
    assert float(rgb[0, 0, 30, 24]) == pytest.approx(0.5, abs=1e-4) and float(rgb[0, 0, 30, 40]) == pytest.approx(0.5, abs=1e-4)


def test_near_surface_edge_grows_at_most_half_a_pixel():
    """In the background layer a near card moved by 0.3 px: the pixel its last column only grazes (weight 0.3)
    blends the card with the far plane by weight instead of showing the card alone (which grew the card by a whole
    pixel per row); the other edge, covered 0.7, stays the card's."""
    image, nearness, _ = two_planes(64, near=1.0, far=0.25, box=(24, 40, 24, 40))
    scene = build_scene(image, nearness)
    rgb, _, _ = render_poses(scene, pose(px=0.3), 32.0)
    red = rgb[0, 0]
    assert float(red[30, 40]) == pytest.approx(0.3, abs=1e-4)  # grazed: 0.3 card + 0.7 far plane
    assert float(red[30, 24]) == pytest.approx(1.0, abs=1e-4)
    assert 256.0 <= float(red.sum()) < 256.0 + 16 * 0.5


def test_fill_rows_keeps_a_ground_plane_and_a_wall():
    """Behind an upright occluder, nearness interpolated along rows is exact for a wall (constant) above a ground
    plane (linear in the row); a smooth 2-D fill bends the ground into the wall."""
    h, w = 48, 64
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    near = torch.where(rows < 20, torch.full_like(rows, 0.1), 0.1 + 0.02 * (rows - 20))  # wall, then ground
    hole = torch.zeros(h, w, dtype=torch.bool)
    hole[10:44, 24:36] = True  # a character standing across the horizon
    filled = fill_rows(near[None, None], ~hole[None, None])[0, 0]
    assert torch.allclose(filled, near, atol=1e-6)
    smooth = fill_push_pull(near[None, None], ~hole[None, None])[0, 0]
    assert float((smooth - near)[hole].abs().max()) > 0.05
    # a hole touching the border takes its one side; a row with no known pixel keeps the smooth fill
    border = torch.zeros(h, w, dtype=torch.bool)
    border[:, :10] = True
    border[5] = True
    out = fill_rows(near[None, None], ~border[None, None])[0, 0]
    assert torch.allclose(out[border & (rows != 5)], near[border & (rows != 5)], atol=1e-6)
    assert torch.allclose(out[5], fill_push_pull(near[None, None], ~border[None, None])[0, 0, 5])


def test_near_surface_stays_opaque_under_magnification():
    """A card magnified 2.5x leaves one-pixel gaps between its splats; the far plane must not show through."""
    image, nearness, _ = two_planes(64, near=1.0, far=0.1, box=(26, 38, 26, 38))
    p = pose(tz=0.6)  # near magnification 1 / (1 - 0.6) = 2.5
    scene = build_scene(image, nearness)
    rgb, _, _ = render_poses(scene, p, 32.0)
    inner = rgb[0, :, 20:44, 20:44]
    assert float(inner[2].max()) < 1e-5 and float(inner[0].min()) > 1 - 1e-5
    # subdividing the magnified points alone closes the gaps; neither it nor crack filling leaks the far plane: the
    # test above can fail
    for crack_fill, subdivide, leaks in ((False, True, False), (True, False, False), (False, False, True)):
        layer = splat(scene.layers[0], p, 32.0, (64, 64), crack_fill=crack_fill, subdivide=subdivide)
        assert (float(layer.features[0, 2, 20:44, 20:44].max()) > 0.5) == leaks, (crack_fill, subdivide)


@pytest.mark.parametrize("zoom", [3.0, 5.0, 8.0])
@pytest.mark.parametrize("fill", ["far-side", "patchmatch"])
def test_a_strong_zoom_magnifies_without_holes(zoom, fill):
    """A zoom of 3-8x on a flat scene reveals nothing: every frame is the bilinear magnification of the input
    (the points are subdivided before splatting), with no disocclusion and no black pixel. Before, the gaps
    between the splats were taken for holes (75-95 % of the frame) and some stayed black."""
    n = 48
    yy, xx = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    image = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 2 * yy), 0.5 + 0.4 * torch.cos(5 * yy),
                         0.5 + 0.3 * torch.sin(4 * (xx + yy))], -1)
    res = render_kenburns(image, torch.ones(n, n), camera=CameraPath("zoom-in", frames=2, zoom=zoom, playback=False),
                          config=KenBurnsConfig(fill=fill))
    g = torch.linspace(-1, 1, n) / zoom  # the centre crop of width n / zoom, sampled bilinearly
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    ideal = F.grid_sample(image.permute(2, 0, 1)[None], torch.stack([gx, gy], -1)[None], mode="bilinear",
                          align_corners=True)[0].permute(1, 2, 0)
    assert float(res.disocclusion.max()) < 1e-6
    # bilinear resampling of a bilinear interpolant: equal up to float rounding of the projections (1e-3 of the range)
    assert float((res.frames[-1] - ideal).abs().max()) < 1e-2


def test_frame_batching_does_not_change_results():
    image, nearness, mask = two_planes(48, box=(14, 34, 16, 30))
    plate = GREEN.expand(48, 48, 3).clone()
    kwargs = dict(masks=mask, background=plate, camera=CameraPath(preset="orbit", frames=7, playback=False))
    one = render_kenburns(image, nearness, config=KenBurnsConfig(frame_batch=1), **kwargs)
    many = render_kenburns(image, nearness, config=KenBurnsConfig(frame_batch=7), **kwargs)
    assert torch.allclose(one.frames, many.frames, atol=1e-5)
    assert torch.allclose(one.disocclusion, many.disocclusion, atol=1e-5)


def test_instances_input_and_layer_grouping():
    image, nearness, _ = two_planes(48, box=(14, 34, 16, 30))
    masks = torch.zeros(3, 48, 48)
    masks[0, 14:34, 16:30] = 1.0
    masks[1, 2:10, 2:10] = 1.0
    masks[2, 40:46, 30:46] = 1.0
    inst = Instances.from_masks(masks)
    inst.extras["depth"] = [0.9, 0.2, 0.5]
    camera = CameraPath(preset="pan-left", frames=4, playback=False)
    a = render_kenburns(image, nearness, masks=inst, camera=camera)
    b = render_kenburns(image, nearness, masks=masks, camera=camera)
    assert torch.allclose(a.frames, b.frames, atol=1e-5)
    scene = build_scene(image, nearness, inst, config=KenBurnsConfig(max_layers=2))
    assert len(scene.layers) == 2  # background + one group holding all three
    assert len(build_scene(image, nearness, inst).layers) == 4


def test_size_option_resizes_everything():
    image, nearness, mask = two_planes(64)
    clip = render_kenburns(
        image, nearness[:63, :63], masks=mask, camera=CameraPath(preset="zoom-in", frames=2, playback=False),
        config=KenBurnsConfig(size=32),
    )
    assert clip.frames.shape == (2, 32, 32, 3)
    # a sliver whose short side would fall under 8 px keeps its aspect (8 px short side), not squashed to 8 x size
    cam = CameraPath(preset="static", frames=1, playback=False)
    clip = render_kenburns(torch.rand(4, 400, 3), torch.rand(4, 400), camera=cam, config=KenBurnsConfig(size=64))
    assert clip.frames.shape == (1, 8, 800, 3)
    with pytest.raises(ValueError, match="too thin"):
        render_kenburns(torch.rand(2, 4000, 3), torch.rand(2, 4000), camera=cam, config=KenBurnsConfig(size=64))


def test_frame_size_is_what_render_kenburns_renders():
    """The public frame-size helper (callers check an output format before the slow steps; the CLI imported the
    renderer's private ``_working_size``) agrees with the frames rendered, and refuses what the renderer refuses."""
    import ast
    from pathlib import Path

    import cartoonseg.kenburns as kb
    from cartoonseg.kenburns import frame_size

    cam = CameraPath(preset="static", frames=1, playback=False)
    for (h, w), size in (((20, 30), 0), ((64, 48), 32), ((4, 400), 64), ((30, 20), 100)):
        clip = render_kenburns(torch.rand(h, w, 3), torch.rand(h, w), camera=cam, config=KenBurnsConfig(size=size))
        assert frame_size((h, w), size) == tuple(clip.frames.shape[1:3]), (h, w, size)
    with pytest.raises(ValueError, match="supported range"):
        frame_size((4, 4), 0)
    with pytest.raises(ValueError, match="too thin"):
        frame_size((2, 4000), 64)
    with pytest.raises(ValueError, match="positive"):
        frame_size((0, 10), 64)
    assert "frame_size" in kb.__all__
    tree = ast.parse(Path(kb.__file__).with_name("cli.py").read_text())
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
               if a.name.startswith("_") and n.level and (n.module or "").endswith("render")]
    assert private == [], private


def test_bad_inputs_get_clear_errors_or_sane_results():
    image, nearness, mask = two_planes(32, box=(10, 22, 10, 20))
    camera = CameraPath(preset="zoom-in", frames=2, playback=False)
    with pytest.raises(ValueError, match="image"):
        render_kenburns(torch.rand(32, 32, 5), nearness, camera=camera)
    with pytest.raises(ValueError, match="depth"):
        render_kenburns(image, torch.rand(2, 3, 32, 32), camera=camera)
    with pytest.raises(ValueError, match="masks"):
        render_kenburns(image, nearness, masks=torch.rand(1, 1, 32, 32), camera=camera)
    with pytest.raises(ValueError, match="supported range"):
        render_kenburns(torch.rand(4, 4, 3), torch.rand(4, 4), camera=camera)
    # masks of another size than the image are refused: stretched they would misplace every character layer
    for other in (mask[:, :, :16], torch.ones(1, 64, 64), Instances.from_masks(mask[:, :16])):
        with pytest.raises(ValueError, match="masks are .* but the image is 32x32"):
            render_kenburns(image, nearness, masks=other, camera=camera)
    with pytest.raises(TypeError, match="CameraPath"):
        render_kenburns(image, nearness, camera="auto")
    with pytest.raises(ValueError, match="min_disparity"):
        KenBurnsConfig(min_disparity=0.0)
    # uint8 images and plates are 0..255 (not clamped to white); other integers too (io's one rule), refused outside
    static = CameraPath(preset="static", frames=1, playback=False)
    dim = (image * 0.6 + 0.2) * 255
    as_float = render_kenburns(dim.round() / 255, nearness, masks=mask, background=(dim * 0.5).round() / 255,
                               camera=static)
    as_uint8 = render_kenburns(dim.round().to(torch.uint8), nearness, masks=mask,
                               background=(dim * 0.5).round().to(torch.uint8), camera=static)
    assert torch.allclose(as_uint8.frames, as_float.frames, atol=1e-5)
    as_int32 = render_kenburns(dim.round().int(), nearness, masks=mask,
                               background=(dim * 0.5).round().to(torch.uint8), camera=static)
    assert torch.equal(as_int32.frames, as_uint8.frames)
    with pytest.raises(ValueError, match=r"must lie in \[0,255\]"):
        render_kenburns((image * 255).int() + 300, nearness, camera=static)
    # a plate of another aspect ratio (another picture's, a crop) would be stretched: refused; another size of the
    # same aspect is resized
    plate = (dim * 0.5).round() / 255
    with pytest.raises(ValueError, match="background plate is 16x32 px but the image is 32x32"):
        render_kenburns(image, nearness, masks=mask, background=plate[:, :16], camera=static)
    half = F.interpolate(plate.permute(2, 0, 1)[None], size=(16, 16), mode="area")[0].permute(1, 2, 0)
    assert torch.isfinite(render_kenburns(image, nearness, masks=mask, background=half, camera=static).frames).all()
    # NaN / zero depth, grey and RGBA images: finite frames in [0,1]
    bad = nearness.clone()
    bad[0, :5] = float("nan")
    for img, dep in ((image, bad), (image[..., :1], torch.zeros(32, 32)), (torch.cat([image, image[..., :1]], -1), bad)):
        clip = render_kenburns(img, dep, masks=mask, camera=camera)
        assert torch.isfinite(clip.frames).all() and 0 <= float(clip.frames.min()) <= float(clip.frames.max()) <= 1


# ---------------------------------------------------------------------------------------------- depth of field
def _sharpness(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def test_depth_of_field_rack_focus_moves_from_background_to_character():
    size = 64
    g = torch.Generator().manual_seed(3)
    checker = ((torch.arange(size)[:, None] // 2 + torch.arange(size)[None, :] // 2) % 2).float()
    image = checker[..., None].expand(size, size, 3).clone() * 0.8 + 0.1
    nearness = torch.full((size, size), 0.1)
    mask = torch.zeros(1, size, size)
    mask[0, 16:48, 20:44] = 1.0
    nearness[16:48, 20:44] = 1.0
    image[16:48, 20:44] = torch.rand(32, 24, 3, generator=g)
    camera = CameraPath(preset="static", frames=5, playback=False)
    config = KenBurnsConfig(depth_of_field=True, dof_strength=4.0, dof_gamma=1.0)
    sharp = render_kenburns(image, nearness, masks=mask, camera=camera)
    dof = render_kenburns(image, nearness, masks=mask, camera=camera, config=config)
    card, far = (slice(20, 44), slice(24, 40)), (slice(0, 12), slice(0, 64))
    first, last = dof.frames[0].permute(2, 0, 1), dof.frames[-1].permute(2, 0, 1)
    ref = sharp.frames[0].permute(2, 0, 1)
    # frame 0: focus on the background -> background sharp, card blurred; last frame: the reverse
    assert _sharpness(first[:, far[0], far[1]]) > 0.9 * _sharpness(ref[:, far[0], far[1]])
    assert _sharpness(first[:, card[0], card[1]]) < 0.7 * _sharpness(ref[:, card[0], card[1]])
    assert _sharpness(last[:, far[0], far[1]]) < 0.5 * _sharpness(ref[:, far[0], far[1]])
    assert _sharpness(last[:, card[0], card[1]]) > 0.9 * _sharpness(ref[:, card[0], card[1]])
    # default lightness exponent stays in range
    bright = render_kenburns(image, nearness, masks=mask, camera=camera, config=KenBurnsConfig(depth_of_field=True))
    assert 0.0 <= float(bright.frames.min()) and float(bright.frames.max()) <= 1.0


def test_depth_of_field_keeps_what_is_in_focus_exactly():
    """The focus target and the pixels share one nearness scale: the character ends sharp whatever the farthest
    depth is (the ground here does not reach nearness 0), a flat scene stays sharp, and an in-focus dark outline is
    not washed out by its bright neighbours (the blur averages image ** 13, where a 1e-6 leak shows)."""
    h, w = 192, 256
    g = torch.Generator().manual_seed(0)
    image = torch.rand(h, w, 3, generator=g)
    camera = CameraPath(preset="static", frames=3, playback=False)
    config = KenBurnsConfig(depth_of_field=True, dof_strength=4.0, fill="far-side")
    near = torch.linspace(0.5, 1.0, h)[:, None].expand(h, w).clone()
    mask = torch.zeros(1, h, w)
    mask[0, 40:120, 100:160] = 1.0
    near[40:120, 100:160] = 0.75
    frames = render_kenburns(image, near, masks=mask, camera=camera, config=config).frames
    char = (slice(40, 120), slice(100, 160))
    assert float((frames[0][char] - image[char]).abs().mean()) > 0.1  # the rack focus starts on the background
    assert float((frames[-1][char] - image[char]).abs().max()) < 1e-5  # and ends on the character, exactly sharp
    flat = render_kenburns(image, torch.full((h, w), 0.4), camera=camera, config=config).frames
    assert float((flat - image).abs().max()) < 1e-5
    lines = torch.full((1, 3, 64, 96), 0.9)
    lines[..., 20:22, :] = 0.05
    lines[..., :, 40:41] = 0.05
    for size in ((64, 96), (48, 64)):
        x = lines[..., : size[0], : size[1]]
        out = bokeh_blur(x, torch.full((1, 1, *size), 0.7), torch.tensor([0.7]), strength=4.0)
        assert float((out - x).abs().max()) < 1e-5


def test_focus_schedule_and_zero_strength():
    times = torch.linspace(0, 1, 11)
    focus = focus_schedule(times, 0.9, 50.0)
    assert float(focus[0]) == pytest.approx(0.0, abs=1e-4) and float(focus[-1]) == pytest.approx(0.9, abs=1e-4)
    assert float(focus[5]) == pytest.approx(0.45)
    assert float(focus_schedule(times, 0.2, 50.0)[0]) == pytest.approx(1.0, abs=1e-4)
    frames = torch.rand(2, 3, 8, 8)
    assert torch.equal(bokeh_blur(frames, torch.rand(2, 1, 8, 8), torch.zeros(2), strength=0.0), frames)


# ---------------------------------------------------------------------------------------------- fills
def test_nearest_valid_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    valid = torch.rand(2, 6, 9, generator=g) < 0.3
    for direction in DIRECTIONS:
        index, steps = nearest_valid(valid, direction)
        for b in range(2):
            for i in range(6):
                for j in range(9):
                    n, expect = 0, -1
                    while 0 <= i + n * direction[0] < 6 and 0 <= j + n * direction[1] < 9:
                        if valid[b, i + n * direction[0], j + n * direction[1]]:
                            expect = (i + n * direction[0]) * 9 + j + n * direction[1]
                            break
                        n += 1
                    assert int(index[b, i, j]) == expect
                    if expect >= 0:
                        assert int(steps[b, i, j]) == n


def test_fill_functions_keep_known_pixels_and_fill_all_holes():
    g = torch.Generator().manual_seed(5)
    values = torch.rand(2, 3, 20, 30, generator=g)
    valid = torch.rand(2, 1, 20, 30, generator=g) > 0.6
    depth = torch.rand(2, 1, 20, 30, generator=g) + 1
    filled, fdepth = fill_holes_far(values, valid, depth)
    assert torch.equal(filled[valid.expand_as(values)], values[valid.expand_as(values)])
    assert torch.isfinite(filled).all() and torch.isfinite(fdepth).all()
    smooth = fill_push_pull(values, valid)
    assert torch.allclose(smooth[valid.expand_as(values)], values[valid.expand_as(values)])
    assert float(smooth.min()) >= 0.0 and float(smooth.max()) <= 1.0


# ---------------------------------------------------------------------------------------------- devices
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    image, nearness, mask = two_planes(64)
    plate = GREEN.expand(64, 64, 3).clone()
    kwargs = dict(masks=mask, background=plate, camera=CameraPath(preset="auto", frames=5, playback=False))
    cpu = render_kenburns(image, nearness, **kwargs)
    gpu = render_kenburns(image.cuda(), nearness.cuda(), device="cuda", **kwargs)
    assert gpu.frames.is_cuda
    assert torch.allclose(cpu.frames, gpu.frames.cpu(), atol=1e-3)


def test_explicit_device_is_respected():
    image, nearness, mask = two_planes(32, box=(10, 22, 10, 20))
    clip = render_kenburns(image, nearness, masks=mask, device="cpu", camera=CameraPath(frames=3, playback=False))
    assert clip.frames.device.type == "cpu" and clip.disocclusion.device.type == "cpu"
    assert math.isfinite(clip.fps)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_webp_and_frames(tmp_path, capsys):
    from PIL import Image

    from cartoonseg.kenburns.cli import main

    image, nearness, _ = two_planes(48, box=(14, 34, 16, 30))
    Image.fromarray((image.numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    Image.fromarray((nearness.numpy() * 255).astype("uint8")).save(tmp_path / "depth.png")
    args = [str(tmp_path / "img.png"), "--depth", str(tmp_path / "depth.png"), "--frames", "5", "--camera", "zoom-in"]
    assert main(["kenburns", *args, "--out", str(tmp_path / "clip.webp"), "--playback", "--fps", "10"]) == 0
    with Image.open(tmp_path / "clip.webp") as webp:
        assert webp.size == (48, 48) and webp.n_frames == 8
    assert main(["kenburns", *args, "--out", str(tmp_path / "frames"), "--size", "32"]) == 0
    frames = sorted((tmp_path / "frames").glob("frame_*.png"))
    assert len(frames) == 5 and len(list((tmp_path / "frames").glob("disocclusion_*.png"))) == 5
    with Image.open(frames[0]) as first:
        assert first.size == (32, 32)
    assert main(["kenburns", *args, "--out", str(tmp_path / "clip.gif")]) == 2  # clear error, no traceback
    # render options are checked before anything is read (or a depth model / segmenter / PatchMatch runs)
    missing = ["kenburns", str(tmp_path / "img.png"), "--depth", str(tmp_path / "missing.png"), "--out",
               str(tmp_path / "late.webp"), "--key-views", "99"]
    capsys.readouterr()
    assert main(missing) == 2 and not (tmp_path / "late.webp").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: --key-views must lie in [0, 16]"), err  # named as the option, not the field
    for h, w, size in ((3, 7, "1024"), (48, 1, "1024"), (4, 300, "100")):  # slivers under 8 px: enlarged, same aspect
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "sliver.png")
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(tmp_path / "sliver_depth.png")
        out = tmp_path / f"sliver_{h}x{w}.webp"
        assert main(["kenburns", str(tmp_path / "sliver.png"), "--depth", str(tmp_path / "sliver_depth.png"), "--frames",
                     "3", "--out", str(out), "--quiet", "--size", size]) == 0
        with Image.open(out) as webp:
            assert min(webp.size) == 8 and webp.size[0] / webp.size[1] == pytest.approx(w / h, rel=0.2)


def test_cli_writes_mp4(tmp_path, monkeypatch, capsys):
    """--out CLIP.mp4: H.264 through PyAV (cartoonseg.io.write_frames), every frame, the image size; without PyAV
    one error line naming the extra and no file."""
    import sys

    from PIL import Image

    from cartoonseg.kenburns.cli import main

    av = pytest.importorskip("av")
    image, nearness, _ = two_planes(48, box=(14, 34, 16, 30))
    Image.fromarray((image.numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    Image.fromarray((nearness.numpy() * 255).astype("uint8")).save(tmp_path / "depth.png")
    args = ["kenburns", str(tmp_path / "img.png"), "--depth", str(tmp_path / "depth.png"), "--frames", "5",
            "--camera", "zoom-in", "--fps", "12"]
    assert main([*args, "--out", str(tmp_path / "clip.mp4")]) == 0
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(12)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 5 and frames[0].shape == (48, 48, 3)
    assert frames[0].std() > 10  # the picture, not a blank frame
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    import cartoonseg.kenburns.cli as cli

    rendered = []
    monkeypatch.setattr(cli, "render_kenburns", lambda *a, **k: rendered.append(1))
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "other.mp4")]) == 2
    assert not (tmp_path / "other.mp4").exists()
    assert "cartoonseg[video]" in capsys.readouterr().err
    assert rendered == []  # refused before the rendering, not after it


def test_cli_frames_larger_than_the_clip_format_holds_are_refused_before_the_depth_is_read(tmp_path, monkeypatch,
                                                                                           capsys):
    """Ken Burns frames are at most 8192 px a side, more than the MPEG-4 fallback of a PyAV without H.264 holds
    (8190): refused once the picture's size is known, before depth, segmentation, inpainting and rendering."""
    from PIL import Image

    import cartoonseg.io as cio
    from cartoonseg.kenburns.cli import main

    av = pytest.importorskip("av")
    monkeypatch.setattr(cio, "_mp4_encoder", lambda: (av, "mpeg4"))
    Image.fromarray(np.full((8, 8192, 3), 128, np.uint8)).save(tmp_path / "wide.png")
    args = ["kenburns", str(tmp_path / "wide.png"), "--depth", str(tmp_path / "missing.png"), "--frames", "2",
            "--out", str(tmp_path / "o.mp4")]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: frames of 8192x8 px do not fit a .mp4 clip"), err
    assert "8190 px per side" in err[0] and "a smaller --size" in err[0] and ".webp" in err[0]
    assert not (tmp_path / "o.mp4").exists()


def test_cli_with_a_detector_runs_the_instance_pipeline(tmp_path):
    from PIL import Image

    import cartoonseg
    from _checkpoint_writers import save_mmengine_detector_checkpoint
    from cartoonseg.kenburns.cli import main

    torch.manual_seed(0)
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), tmp_path / "det.ckpt")
    image, nearness, _ = two_planes(48, box=(14, 34, 16, 30))
    Image.fromarray((image.numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    Image.fromarray((nearness.numpy() * 255).astype("uint8")).save(tmp_path / "depth.png")
    code = main(["kenburns", str(tmp_path / "img.png"), "--depth", str(tmp_path / "depth.png"), "--detector",
                 str(tmp_path / "det.ckpt"), "--refiner", "none", "--score-thr", "0.0", "--frames", "3",
                 "--no-download", "--out", str(tmp_path / "clip.webp")])
    assert code == 0 and (tmp_path / "clip.webp").is_file()


def test_a_clip_over_the_memory_budget_is_refused_before_any_work(monkeypatch):
    """The node allows 8192 px and 148 frames (about 89 GiB of frames): the allocation came after the inpainting and
    could only fail in the allocator or get the process killed. Now a clip over ``MAX_CLIP_ELEMENTS`` is a
    ``ValueError`` naming the sizes before the scene is built; a clip within it renders."""
    import cartoonseg.kenburns.render as render

    image = torch.rand(40, 60, 3)
    depth = torch.rand(40, 60)
    camera = CameraPath(preset="pan-right", frames=5, playback=True)  # 8 frames
    built = []
    monkeypatch.setattr(render, "build_scene", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(render, "MAX_CLIP_ELEMENTS", 8 * 60 * 60 * 4)  # 8 frames of 60x60 fit, 80x120 does not
    with pytest.raises(ValueError, match=r"a clip of 8 frames of 120x80 pixels .* exceeds the memory budget"):
        render_kenburns(image, depth, camera=camera, config=KenBurnsConfig(size=120, fill="far-side"))
    assert not built
    monkeypatch.undo()
    monkeypatch.setattr(render, "MAX_CLIP_ELEMENTS", 8 * 40 * 60 * 4)
    out = render_kenburns(image, depth, camera=camera, config=KenBurnsConfig(fill="far-side"))
    assert out.frames.shape == (8, 40, 60, 3)
