"""cartoonseg.occlusion: which of two instances is in front (the junction cue on drawn figures), and the one home
of the elliptic structuring element its cues and the other morphology share."""

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from _drawn import stick_figure
from cartoonseg.ops import disk

REPO = Path(__file__).resolve().parents[1]


def test_one_home_for_the_elliptic_structuring_element():
    """``cartoonseg.ops.disk`` is the disc of every elliptic morphology (it stood twice, as ``_disk`` in
    occlusion.py and data/chroma.py); no other library module defines its own."""
    for r in (1, 2, 4):
        expected = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        np.testing.assert_array_equal(disk(r), expected)
    copies = []
    for path in sorted((REPO / "cartoonseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in ("disk", "_disk"):
                copies.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert [c.split(":")[0] for c in copies] == ["cartoonseg/ops.py"], copies


def _figure(cx: int, sigma: float) -> np.ndarray:
    """A drawn stick figure's soft mask ``[96,128]`` (``tests/_drawn.py``), its edges blurred by ``sigma``."""
    return stick_figure(cx, sigma)


def _windows(back_x: int, front_x: int, sigma: float):
    """The windows of two figures, the one at ``front_x`` drawn over the one at ``back_x``; the back one's mask is
    its visible part (its drawing less the front one's). Returns (back, front)."""
    import torch

    from cartoonseg.occlusion import mask_windows

    back, front = _figure(back_x, sigma), _figure(front_x, sigma)
    return mask_windows(torch.from_numpy(np.stack([back * (1 - front), front])))


@pytest.mark.parametrize("apart", [18, 20])
@pytest.mark.parametrize("front_right", [True, False])
def test_figures_whose_arm_tips_end_on_the_other_ones_outline_read_as_drawn(apart, front_right):
    """18 px apart the front figure's arm crosses the back one's body and ends on its outline, and the heads and
    feet meet at single points: junctions that say nothing (they read near 0 by symmetry, or the wrong way at the
    arm's tip) outnumbered the T-junctions of the back figure's arm and body going behind the front one: read the
    wrong way at 18 px, undecided at 20. Each junction now counts by how clearly it reads, on a disc centred on
    its corner."""
    from cartoonseg.occlusion import in_front

    back_x, front_x = (50, 50 + apart) if front_right else (50 + apart, 50)
    back, front = _windows(back_x, front_x, 0.7)
    assert in_front(front, back) == 1
    assert in_front(back, front) == -1


@pytest.mark.parametrize("sigma, apart", [(1.5, 16), (1.5, 18), (2.0, 20), (2.0, 30), (2.0, 34)])
def test_blurry_seams_are_read_at_the_masks_common_half_level(sigma, apart):
    """Soft masks of blurred drawings meet along seams where both are under 0.5 though together they cover the
    pixels: each read alone at 0.5, the seam was a gap of background, with junctions all along it read by the
    parts' local widths (undecided or the wrong way). A pixel is background only where the background's weight
    ``1 - a - b`` is over 0.5; else it is the mask's with more alpha."""
    from cartoonseg.occlusion import in_front

    for back_x, front_x in ((40, 40 + apart), (40 + apart, 40)):
        back, front = _windows(back_x, front_x, sigma)
        assert in_front(front, back) == 1, (back_x, front_x)
        assert in_front(back, front) == -1, (back_x, front_x)


@pytest.mark.parametrize("front_right", [True, False])
def test_an_arm_tip_that_only_touches_the_other_outline_is_not_read_as_going_behind(front_right):
    """38 px apart the front figure's arm tip only touches the back one's body (a border of one pixel edge) while
    the back one's arm goes behind the front one's: the tip's junctions read as a part going behind (its rounded
    end covers a small wedge of the disc, the body about half) and outweighed the true ones: read the wrong way
    (-0.09; the style tests' figures, blurred by a 3 px kernel: -0.03, undecided).
    A part going behind is cut across its width; a junction whose hidden side meets the other
    over a border shorter than half its width is a tip and does not count."""
    from cartoonseg.occlusion import in_front, occlusion

    back_x, front_x = (50, 88) if front_right else (88, 50)
    back, front = _windows(back_x, front_x, 0.7)
    assert occlusion(front, back) > 0.05
    assert in_front(front, back) == 1
    assert in_front(back, front) == -1


def _head_and_body(rows_apart: int):
    """A drawn head (a disc) over a body (a rectangle) whose top edge lies ``rows_apart`` empty rows below the head's
    0.5 level, both blurred (sigma 1) as a segmenter's soft masks. Returns (head, body) ``[96,128]`` float32."""
    head = np.zeros((96, 128), np.uint8)
    cv2.circle(head, (64, 30), 12, 1, -1)  # rows 18..42 drawn, 19..41 over 0.5 once blurred
    body = np.zeros((96, 128), np.uint8)
    body[42 + rows_apart:90, 36:93] = 1
    return tuple(cv2.GaussianBlur(m.astype(np.float32), (7, 7), 1.0) for m in (head, body))


@pytest.mark.parametrize("rows_apart", [0, 2, 4, 5])
def test_the_mattes_order_masks_as_far_apart_as_their_shape_cue_reaches(rows_apart):
    """in_front's early-out dropped pairs whose boxes were more than SEAM_REACH (3) px apart, while the mattes' shape
    cue (masks grown by a disc of SEAM_REACH each) meets masks up to 5 px apart: a head 4-5 px over a body was left
    to the scores (the body, scored higher, in front of the head that bulges into it). The early-out is now only a
    shortcut that never drops a pair a cue orders."""
    import torch

    from cartoonseg.matting import occlusion_order
    from cartoonseg.occlusion import _wraps_around, in_front, mask_windows
    from cartoonseg.structures import Instances

    head, body = _head_and_body(rows_apart)
    windows = mask_windows(torch.from_numpy(np.stack([body, head])))
    assert windows[0][1][1] - windows[1][1][3] == rows_apart  # the empty rows between the masks' 0.5 levels
    assert _wraps_around(head > 0.5, body > 0.5) == 1  # the shape cue itself: the body is behind
    assert in_front(windows[1], windows[0], seam="shape") == 1 and in_front(windows[0], windows[1], seam="shape") == -1
    for scores in ([0.9, 0.5], [0.5, 0.9]):  # whatever the scores
        inst = Instances.from_masks(torch.from_numpy(np.stack([body, head]))).replace(scores=torch.tensor(scores))
        assert occlusion_order(inst) == [1, 0]  # front to back: the head, then the body


@pytest.mark.parametrize("seam", ["shape", "junctions"])
def test_in_front_early_out_never_drops_a_pair_a_cue_orders(seam):
    """Two discs at every offset round each other (gaps 0-8 px, straight and diagonal): in_front with its early-out
    agrees with the cues read on the whole picture (the shape cue's seam, the junction cue's own box test)."""
    from cartoonseg.occlusion import _wraps_around, in_front, occlusion

    def window(cx, cy, r):
        m = np.zeros((80, 80), np.float32)
        cv2.circle(m, (cx, cy), r, 1.0, -1)
        ys, xs = np.nonzero(m > 0.5)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        return m, (m[y0:y1, x0:x1], (int(x0), int(y0), int(x1), int(y1)))

    big, p = window(40, 40, 12)
    for dx, dy in [(1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (1, -1)]:
        for gap in range(9):
            cx, cy = 40 + dx * (12 + 6 + gap), 40 + dy * (12 + 6 + gap)  # a disc of radius 6, gap px of background
            small, q = window(cx, cy, 6)
            got = in_front(p, q, seam=seam)
            if seam == "shape":
                assert (got != 0) == (_wraps_around(big > 0.5, small > 0.5) is not None), (dx, dy, gap)
            else:
                assert got == (1 if occlusion(p, q) > 0.03 else -1 if occlusion(p, q) < -0.03 else 0), (dx, dy, gap)


@pytest.mark.parametrize("rise", [-4, 6])
@pytest.mark.parametrize("first_left", [True, False])
def test_figures_one_pixel_apart_are_left_undecided(rise, first_left):
    """Two figures side by side, one raised (or lowered) so their arm tips come within 1 px of each other: the drawings
    do not touch, nobody hides anybody. The blur covers the pixels between the tips only in part (0.58), and the
    common 0.5 level gave them to the mask with the larger of two alphas under 0.5: the anti-aliasing made a short
    border whose junctions read one figure in front (+-0.19, over the margin). A border whose pixels are nowhere
    covered at CONTACT_COVER is no contact: undecided (the callers' fallback order decides)."""
    import torch

    from cartoonseg.occlusion import in_front, mask_windows, occlusion, occlusion_order

    d = 54 if rise < 0 else 52  # 1 px of background between the arm tips
    left, right = _figure(30, 0.7), np.roll(_figure(30 + d, 0.7), rise, axis=0)
    drawn = [_figure(30, 0.01) > 0.5, np.roll(_figure(30 + d, 0.01), rise, axis=0) > 0.5]
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    assert not (cv2.dilate(drawn[0].astype(np.uint8), cross).astype(bool) & drawn[1]).any()  # no pixel edge shared
    masks = np.stack([left, right] if first_left else [right, left])
    p, q = mask_windows(torch.from_numpy(masks))
    assert occlusion(p, q) == 0.0 and occlusion(q, p) == 0.0
    assert in_front(p, q) == 0 and in_front(q, p) == 0
    assert occlusion_order([1, 0], [p, q]) == [1, 0] and occlusion_order([0, 1], [p, q]) == [0, 1]
