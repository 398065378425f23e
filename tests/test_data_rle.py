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
