"""Interop of the pack's outputs with core ComfyUI and popular packs (issue 20 #5, #7), with the stubbed ComfyUI:

* Impact Pack SEGS: ``bbox`` and ``crop_region`` come from the refined masks, so a detailer sees every refined pixel
  (a refiner often grows a mask beyond the detector's box: with the detector box, ``crop_factor`` 3 kept 108 of
  27,648 pixels of such an instance);
* Select Instances crops and boxes hold the whole refined mask;
* Convert Boxes: BBOX as xyxy per frame (kijai SAM2 / Florence2) or xywh (KJNodes), core BOUNDING_BOX dicts, box
  MASKs and centre points, with exact values for known rectangles.

The real-ComfyUI test (``test_comfy_real.py``) runs Convert Boxes' MASK into core mask nodes in both generations.
"""

from __future__ import annotations

import json

import pytest
import torch

from cartoonseg import Instances

PACK = "cartoonseg_pack_interop_test"
H, W = 120, 200


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def grown_instance() -> Instances:
    """One instance whose refined mask (rows 20..99, columns 30..169) reaches far beyond its detector box (a small
    box at its centre), as after the refiner grew a coarse detection."""
    mask = torch.zeros(1, H, W)
    mask[0, 20:100, 30:170] = 1.0
    return Instances(boxes=torch.tensor([[90.0, 55.0, 110.0, 65.0]]), scores=torch.tensor([0.9]), masks=mask)


def test_segs_boxes_and_crop_regions_follow_the_refined_masks(nodes):
    inst = grown_instance()
    image = torch.rand(1, H, W, 3)
    ((h, w), segs) = nodes["CartoonSegToSEGS"]().to_segs([inst], 0, 1.5, 4, "inst_", "binary", image=image)[0]
    assert (h, w) == (H, W) and len(segs) == 1
    seg = segs[0]
    assert tuple(seg.bbox) == (30, 20, 170, 100)  # the mask's box, not the detector's (90, 55, 110, 65)
    x1, y1, x2, y2 = seg.crop_region
    assert x1 <= 30 and y1 <= 20 and x2 >= 170 and y2 >= 100
    assert float(seg.cropped_mask.sum()) == float(inst.masks.sum())  # every refined pixel is inside the crop
    assert tuple(seg.cropped_image.shape) == (1, y2 - y1, x2 - x1, 3)
    # an instance whose mask is empty keeps its detector box
    empty = Instances(boxes=torch.tensor([[10.0, 10.0, 60.0, 60.0]]), scores=torch.tensor([0.5]),
                      masks=torch.zeros(1, H, W))
    (_, segs) = nodes["CartoonSegToSEGS"]().to_segs([empty], 0, 1.0, 4, "inst_", "binary")[0]
    assert tuple(segs[0].bbox) == (10, 10, 60, 60)


def test_select_instances_crops_hold_the_whole_refined_mask(nodes):
    inst = grown_instance()
    out = nodes["CartoonSegInstanceSplit"]().split([inst], "index", "all", "position", -1, 0, 0, "black", 0,
                                                   "binary", image=torch.rand(1, H, W, 3))
    crops, crop_masks, bboxes = out[1], out[2], out[5]
    assert tuple(crops.shape) == (1, 80, 140, 3) and float(crop_masks.sum()) == float(inst.masks.sum())
    assert bboxes == [[{"x": 30, "y": 20, "width": 140, "height": 80, "score": 0.9, "label": "inst_0", "id": 0}]]


def test_convert_boxes_for_other_packs_and_core_mask_nodes(nodes, pack):
    a = torch.zeros(2, H, W)
    a[0, 10:40, 20:60] = 1.0
    a[1, 50:110, 100:190] = 1.0
    b = torch.zeros(1, H, W)
    b[0, 0:30, 0:20] = 1.0
    frames = [Instances.from_masks(a, scores=torch.tensor([0.8, 0.6])), Instances.from_masks(b)]
    node = nodes["CartoonSegConvertBoxes"]()
    bbox, bounding_box, masks, centres, count = node.convert(frames, "xyxy", -1)
    assert bbox == [[[20, 10, 60, 40], [100, 50, 190, 110]], [[0, 0, 20, 30]]] and count == 3
    assert [[(d["x"], d["y"], d["width"], d["height"]) for d in f] for f in bounding_box] == [
        [(20, 10, 40, 30), (100, 50, 90, 60)], [(0, 0, 20, 30)]]
    assert masks.shape == (3, H, W) and torch.equal(masks[:2], a) and torch.equal(masks[2], b[0])
    assert json.loads(centres) == [{"x": 40, "y": 25}, {"x": 145, "y": 80}, {"x": 10, "y": 15}]
    xywh, _, _, _, n = node.convert(frames, "xywh", 0)
    assert xywh == [[20, 10, 40, 30], [100, 50, 90, 60]] and n == 2
    # no instance: an all-zero [1,H,W] mask (as every MASK output of the pack), empty box lists
    bbox, bounding_box, masks, centres, count = node.convert([Instances.empty(H, W)], "xyxy", -1)
    assert bbox == [[]] and bounding_box == [[]] and masks.shape == (1, H, W) and not masks.any() and count == 0
    with pytest.raises(ValueError, match="frame 5 out of range"):
        node.convert(frames, "xyxy", 5)
    # the refine node reads its own BOUNDING_BOX back
    parse = pack.nodes.segment.parse_bboxes
    assert [t.tolist() for t in parse(node.convert(frames, "xyxy", -1)[1], 2)] == [
        [[20.0, 10.0, 60.0, 40.0], [100.0, 50.0, 190.0, 110.0]], [[0.0, 0.0, 20.0, 30.0]]]
