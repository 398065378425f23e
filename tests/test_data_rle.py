"""COCO RLE in numpy (cartoonseg.rle) against pycocotools' format."""

from __future__ import annotations

import numpy as np
import pytest

from cartoonseg import rle

mask_api = pytest.importorskip("pycocotools.mask")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), np.uint8)
    yield np.ones((6, 3), np.uint8)
    yield np.zeros((1, 1), np.uint8)
    yield np.ones((1, 1), np.uint8)
    for _ in range(60):
        h, w = rng.integers(1, 50, 2)
        yield (rng.random((h, w)) < rng.random()).astype(np.uint8)
    big = np.zeros((640, 640), np.uint8)
    big[100:500, 37:600] = 1
    big[200:210, :] = 0
    yield big


def test_encode_matches_pycocotools_bytes_and_decodes_back():
    for m in _masks():
        ref = mask_api.encode(np.asfortranarray(m))
        ours = rle.encode(m)
        assert ours["size"] == list(ref["size"])
        assert ours["counts"] == ref["counts"].decode("ascii")
        np.testing.assert_array_equal(rle.decode(ours), m)
        np.testing.assert_array_equal(mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()}), m)
        assert rle.area(ours) == int(mask_api.area(ref)) == int(m.sum())
        assert rle.to_bbox(ours) == pytest.approx(mask_api.toBbox(ref).tolist())


def test_uncompressed_counts_and_string_roundtrip():
    m = np.zeros((4, 5), np.uint8)
    m[1:3, 2:4] = 1
    counts = rle.mask_counts(m)
    assert sum(counts) == 20
    np.testing.assert_array_equal(rle.decode({"size": [4, 5], "counts": counts}), m)
    # pycocotools' frPyObjects turns an uncompressed RLE into the same compressed string
    ref = mask_api.frPyObjects({"size": [4, 5], "counts": counts}, 4, 5)
    assert ref["counts"].decode() == rle.counts_to_string(counts)
    big = [0, 70000, 3, 12345678, 1]
    assert rle.string_to_counts(rle.counts_to_string(big)) == big


def test_bad_rle_is_rejected_clearly():
    with pytest.raises(ValueError, match="sum"):
        rle.decode({"size": [3, 3], "counts": [1, 2]})
    with pytest.raises(TypeError):
        rle.decode([1, 2, 3])
    with pytest.raises(ValueError, match="2-D"):
        rle.encode(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        rle.string_to_counts("0" + chr(0x20 + 48))  # a "more groups follow" flag with nothing after it


def test_polygons_rasterise_pixel_for_pixel_as_pycocotools():
    """COCO polygon ground truth is rasterised as pycocotools does (frPyObjects + merge, what COCOeval and mmdet
    use): OpenCV's fillPoly made a 10x10 square 11x11 and filled overlapping parts differently, which moved segm AP
    on polygon ground truth by several points. Random polygons, off-image vertices, fractional coordinates and
    several overlapping parts per object."""
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    cases = [([[2, 2, 30, 5, 8, 30]], 40, 40), ([[10, 10, 20, 10, 20, 20, 10, 20]], 40, 40),
             ([[5, 5, 25, 5, 25, 25, 5, 25], [15, 15, 35, 15, 35, 35, 15, 35]], 40, 40)]
    for _ in range(200):
        h, w, k = int(rng.integers(5, 60)), int(rng.integers(5, 60)), int(rng.integers(3, 9))
        parts = [np.stack([rng.uniform(-5, w + 5, k), rng.uniform(-5, h + 5, k)], 1).round(int(rng.integers(0, 3)))
                 .ravel().tolist() for _ in range(int(rng.integers(1, 3)))]
        cases.append((parts, h, w))
    for seg, h, w in cases:
        want = mask_util.decode(mask_util.merge(mask_util.frPyObjects(seg, h, w)))
        assert np.array_equal(rle.polygons_to_mask(seg, h, w), want), (seg, h, w)
    assert rle.polygons_to_mask([[10, 10, 20, 10, 20, 20, 10, 20]], 40, 40).sum() == 100  # was 121
