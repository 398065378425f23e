"""Small library helpers at the boundary: Instances selection forms, crops of bool masks, half-precision resizes
and batch RLE decoding of corrupt input (found by review; each case failed or answered wrongly before)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cartoonseg import Instances, rle
from cartoonseg.ops import crop_instances
from cartoonseg.transforms import resize_image


def _three() -> Instances:
    return Instances(boxes=torch.zeros(3, 4), scores=torch.tensor([0.9, 0.2, 0.8]), masks=torch.zeros(3, 2, 2))


def test_instances_select_with_every_index_form():
    inst = _three()
    want = [0.9, 0.8]
    for index in (inst.scores > 0.5, inst.scores.numpy() > 0.5, (inst.scores > 0.5).tolist(), [0, 2],
                  np.array([0, 2]), torch.tensor([0, 2])):
        assert inst[index].scores.tolist() == pytest.approx(want), index
    for one in (2, -1, torch.tensor(2), np.int64(2), inst.scores.argmin() + 1):
        assert inst[one].scores.tolist() == pytest.approx([0.8])
    assert len(inst[[]]) == 0 and inst[1:].scores.tolist() == pytest.approx([0.2, 0.8])
    with pytest.raises(ValueError, match="bool index must have shape"):
        inst[[True, False]]
    for bad in (1.5, [0.5], "a"):
        with pytest.raises(TypeError):
            inst[bad]
    with pytest.raises(IndexError):
        inst[3]


def test_crops_of_bool_masks_and_half_precision_resizes():
    mask = torch.zeros(8, 10, dtype=torch.bool)
    mask[2:6, 3:7] = True
    for fill in ("white", "black", "image"):
        crops, masks = crop_instances(torch.rand(1, 8, 10, 3), [(0, torch.tensor([3.0, 2.0, 7.0, 6.0]), mask)], 0, 0,
                                      fill)
        assert crops.shape[0] == 1 and masks.dtype == torch.float32 and float(masks.min()) == 1.0
    crops, _ = crop_instances(None, [(0, torch.tensor([3.0, 2.0, 7.0, 6.0]), mask)], 1, 0, "white")
    assert tuple(crops.shape[1:3]) == (6, 6)  # IMAGE [K,h,w,3]: the box grown by 1 px of padding
    half = torch.rand(16, 16, 3).half()
    small = resize_image(half, (8, 8))
    assert small.dtype == torch.float16 and small.shape == (8, 8, 3)
    torch.testing.assert_close(small.float(), resize_image(half.float(), (8, 8)), atol=1e-3, rtol=0)


def test_decode_many_reports_an_empty_rle_anywhere_as_corrupt():
    good, empty = {"size": [2, 2], "counts": "04"}, {"size": [2, 2], "counts": ""}
    for batch in ([good, empty], [empty, good], [good, empty, good]):
        with pytest.raises(ValueError, match="counts sum to 0"):
            rle.decode_many(batch)
    masks = (np.random.default_rng(0).random((5, 7, 9)) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(rle.decode_many([rle.encode(m) for m in masks]), masks)


def test_overlay_colours_any_integer_id_quickly():
    """overlay() used to build a palette of max(id) + 1 colours: a negative id raised IndexError, and the large ids
    of a long tracked video cost seconds (and memory) per preview frame. Colours depend on the id alone."""
    import time

    from cartoonseg.visualize import overlay, palette

    image = np.full((10, 20, 3), 200, np.uint8)
    m = torch.zeros(2, 10, 20)
    m[0, 2:5, 3:8] = 1
    m[1, 6:9, 10:18] = 1
    inst = Instances.from_masks(m)
    reference = overlay(image, inst, draw_ids=False)  # ids 0, 1: pixel (3, 5) lies inside instance 0's outline
    assert np.array_equal(reference[3, 5], (image[3, 5] * 0.5 + palette(2)[0] * 0.5).astype(np.uint8))
    start = time.perf_counter()
    big = overlay(image, inst.replace(ids=torch.tensor([10**12, -3])))
    assert time.perf_counter() - start < 2.0
    assert big.shape == (10, 20, 3) and not np.array_equal(big, image)
    # the same ids in another order keep their colours
    assert np.array_equal(overlay(image, inst[[1, 0]].replace(ids=torch.tensor([1, 0])), draw_ids=False),
                          overlay(image, inst, draw_ids=False))


def test_cat_refuses_items_with_different_mask_thresholds():
    """Instances.cat kept the first item's mask_thr: refined (0.3) + coarse (0.5) instances silently changed the
    coarse ones' binary masks. Equal thresholds concatenate; different ones raise, naming them."""
    m = torch.full((1, 4, 4), 0.4)
    refined, coarse = Instances.from_masks(m, mask_thr=0.3), Instances.from_masks(m, mask_thr=0.5)
    both = Instances.cat([refined, refined.replace()])
    assert len(both) == 2 and both.mask_thr == 0.3 and bool(both.binary.all())
    with pytest.raises(ValueError, match=r"same mask_thr.*0\.3, 0\.5"):
        Instances.cat([refined, coarse])
    fixed = coarse.replace(masks=coarse.binary.float(), mask_thr=0.3)  # the remedy the message names
    assert not Instances.cat([refined, fixed]).binary[1].any()
