"""Property-based tests (hypothesis, issue 11) of the geometry helpers and the prompt builder: letterbox and its
inverse box mapping, box/mask conversions, COCO RLE round trip, NMS invariants, tag prompt merging."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cartoonseg import rle
from cartoonseg.models.rtmdet_ins import nms
from cartoonseg.segmenter import boxes_to_masks
from cartoonseg.structures import masks_to_boxes
from cartoonseg.tagger.prompts import PromptOptions, merge_prompt, select_tags, tag_key
from cartoonseg.transforms import letterbox

FAST = settings(max_examples=40, deadline=None, derandomize=True)


@FAST
@given(h=st.integers(1, 400), w=st.integers(1, 400), size=st.sampled_from([32, 64, 160]),
       fx=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)))
def test_letterbox_and_inverse_box_mapping(h, w, size, fx):
    canvas, g = letterbox(np.full((h, w, 3), 7, np.uint8), size)
    assert canvas.shape == (3, size, size) and g.ori_shape == (h, w) and g.img_shape == (size, size)
    rh, rw = g.resized_shape
    assert 1 <= rh <= size and 1 <= rw <= size and (rh == size or rw == size)
    assert (canvas[:, :rh, :rw] == 7).all() and (canvas[:, rh:, :] == 114).all() and (canvas[:, :, rw:] == 114).all()
    sx, sy = g.scale_factor
    box = torch.tensor([fx[0] * w, fx[1] * h, fx[2] * w, fx[3] * h], dtype=torch.float64)
    on_canvas = box * torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
    assert (on_canvas[0::2] <= rw + 1e-6).all() and (on_canvas[1::2] <= rh + 1e-6).all()
    back = on_canvas / torch.tensor([sx, sy, sx, sy], dtype=torch.float64)  # what postprocess does
    torch.testing.assert_close(back, box)


@st.composite
def int_boxes(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    n = draw(st.integers(0, 5))
    boxes = []
    for _ in range(n):
        x1, y1 = draw(st.integers(0, w - 1)), draw(st.integers(0, h - 1))
        boxes.append([x1, y1, draw(st.integers(x1 + 1, w)), draw(st.integers(y1 + 1, h))])
    return h, w, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


@FAST
@given(int_boxes())
def test_boxes_to_masks_to_boxes_round_trip(case):
    h, w, boxes = case
    masks = boxes_to_masks(boxes, h, w)
    assert masks.shape == (len(boxes), h, w)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    torch.testing.assert_close(masks.flatten(1).sum(1), areas)
    torch.testing.assert_close(masks_to_boxes(masks > 0.5), boxes)


@FAST
@given(h=st.integers(1, 30), w=st.integers(1, 30), seed=st.integers(0, 2**31 - 1), p=st.floats(0, 1))
def test_masks_to_boxes_is_tight(h, w, seed, p):
    m = torch.from_numpy(np.random.default_rng(seed).random((2, h, w)) < p)
    boxes = masks_to_boxes(m)
    for mask, (x1, y1, x2, y2) in zip(m, boxes.long().tolist()):
        if not mask.any():
            assert [x1, y1, x2, y2] == [0, 0, 0, 0]
            continue
        assert mask[y1:y2, x1:x2].sum() == mask.sum()
        assert mask[y1].any() and mask[y2 - 1].any() and mask[:, x1].any() and mask[:, x2 - 1].any()


@FAST
@given(h=st.integers(0, 40), w=st.integers(0, 40), seed=st.integers(0, 2**31 - 1), p=st.floats(0, 1))
def test_rle_round_trip(h, w, seed, p):
    m = np.random.default_rng(seed).random((h, w)) < p
    code = rle.encode(m)
    assert code["size"] == [h, w] and isinstance(code["counts"], str)
    np.testing.assert_array_equal(rle.decode(code), m)
    assert rle.area(code) == int(m.sum())


@st.composite
def scored_boxes(draw):
    n = draw(st.integers(0, 30))
    coords = draw(st.lists(st.tuples(*[st.floats(0, 100, allow_nan=False)] * 2, *[st.floats(1, 60)] * 2),
                           min_size=n, max_size=n))
    boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in coords], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), dtype=torch.float32)
    return boxes, scores


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


@FAST
@given(scored_boxes(), st.sampled_from([0.3, 0.5, 0.6, 0.9]))
def test_nms_invariants(case, thr):
    boxes, scores = case
    keep = nms(boxes, scores, thr)
    assert keep.dtype == torch.long and len(set(keep.tolist())) == len(keep)
    kept_scores = scores[keep]
    assert (kept_scores[:-1] >= kept_scores[1:]).all()  # descending
    if len(keep) > 1:
        iou = _iou(boxes[keep], boxes[keep])
        iou.fill_diagonal_(0)
        assert (iou <= thr + 1e-5).all()
    if len(boxes):
        assert int(keep[0]) in torch.nonzero(scores == scores.max()).flatten().tolist()  # the best always stays
    # idempotent: NMS of the kept boxes keeps them all, in the same order
    again = nms(boxes[keep], scores[keep], thr)
    assert again.tolist() == list(range(len(keep)))
    # every suppressed box overlaps a kept box with a score at least as high
    for i in sorted(set(range(len(boxes))) - set(keep.tolist())):
        ious = _iou(boxes[i : i + 1], boxes[keep])[0]
        assert ((ious > thr - 1e-5) & (scores[keep] >= scores[i])).any()


TAG = st.text(alphabet=st.sampled_from(list("ab_ ()^-:.\\,\n") + ["ä", "x"]), max_size=8)


@FAST
@given(tags=st.one_of(st.lists(TAG, max_size=12), st.dictionaries(TAG, st.floats(0, 1), max_size=12), TAG),
       chars=st.lists(TAG, max_size=3), exclude=st.lists(TAG, max_size=3), style=TAG,
       max_tags=st.integers(0, 5), under=st.booleans(), esc=st.booleans(),
       template=st.sampled_from(["{style}, {tags}", "{tags}", "masterpiece, {tags}, {style}", "{x} {tags}"]))
def test_prompt_builder_never_crashes_nor_duplicates(tags, chars, exclude, style, max_tags, under, esc, template):
    opts = PromptOptions(template=template, exclude=tuple(exclude), max_tags=max_tags, underscores_to_spaces=under,
                         escape_parentheses=esc)
    chosen = select_tags(tags, chars, opts)
    keys = [tag_key(t) for t in chosen]
    assert len(keys) == len(set(keys)) and all(keys)
    assert not {tag_key(t) for t in exclude} & set(keys)
    assert not {tag_key(t) for t in chars} & set(keys)
    if max_tags:
        assert len(chosen) <= max_tags
    text = merge_prompt(style, tags, chars, opts)
    assert isinstance(text, str) and not text.startswith(",") and not text.endswith(",")
