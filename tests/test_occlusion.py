"""cartoonseg.occlusion: which of two instances is in front (the junction cue on drawn figures), and the one home
of the elliptic structuring element its cues and the other morphology share."""

import ast
from pathlib import Path

import cv2
import numpy as np

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
