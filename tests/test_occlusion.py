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
