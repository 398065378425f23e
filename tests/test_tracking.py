"""Tests of cartoonseg.tracking (IoU / mask-overlap tracker keeping instance ids stable across frames)."""

from __future__ import annotations

import pytest
import torch

from cartoonseg.structures import Instances
from cartoonseg.tracking import InstanceTracker, TrackerConfig, box_iou, mask_iou, match_greedy, track_instances

H, W = 40, 60


def rect(x1, y1, x2, y2):
    m = torch.zeros(H, W)
    m[y1:y2, x1:x2] = 1.0
    return m


def frame(*rects):
    if not rects:
        return Instances.empty(H, W)
    return Instances.from_masks(torch.stack([rect(*r) for r in rects]))


def test_mask_iou_values():
    a = torch.stack([rect(0, 0, 10, 10), rect(20, 20, 30, 30), torch.zeros(H, W)])
    b = torch.stack([rect(0, 0, 10, 5), rect(50, 0, 60, 10)])
    iou = mask_iou(a, b)
    assert iou.shape == (3, 2)
    assert iou[0, 0].item() == pytest.approx(0.5)
    assert iou[0, 1].item() == 0.0
    assert iou[1].abs().sum().item() == 0.0
    assert iou[2].abs().sum().item() == 0.0  # empty vs anything: 0, no NaN
    with pytest.raises(ValueError, match="mask sizes differ"):
        mask_iou(a, torch.zeros(1, H + 1, W))


def test_box_iou_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 10]])
    iou = box_iou(a, b)
    assert iou[0, 0].item() == pytest.approx(50 / 150)
    assert iou[0, 1].item() == pytest.approx(1.0)
    assert iou[1].abs().sum().item() == 0.0


def test_one_pairwise_box_iou_for_tracker_segmenter_and_training():
    """The tracker and the training's label assignment each had a pairwise box IoU (tracking.box_iou,
    training.losses.box_iou_pairwise); there is one now, in cartoonseg.boxes, under both old names."""
    from cartoonseg import boxes, tracking
    from cartoonseg.training import assigner, losses

    assert tracking.box_iou is boxes.box_iou and losses.box_iou_pairwise is boxes.box_iou
    assert assigner.box_iou is boxes.box_iou
    a = torch.tensor([[0, 0, 10, 10], [3, 3, 3, 8]])  # integer boxes; the second is degenerate
    b = torch.tensor([[5, 0, 15, 10], [3, 3, 3, 8]])
    iou = boxes.box_iou(a, b)
    assert iou.dtype == torch.float32 and torch.isfinite(iou).all()
    assert iou[0, 0].item() == pytest.approx(50 / 150) and iou[1].abs().sum().item() == 0.0
    assert boxes.box_iou(a.double(), b.double()).dtype == torch.float64


def test_match_greedy_is_one_to_one_and_prefers_high_iou():
    iou = torch.tensor([[0.9, 0.8], [0.85, 0.1]])
    assert match_greedy(iou, 0.3) == [(0, 0)]  # row 1's best column is taken, 0.1 < threshold
    assert match_greedy(iou, 0.05) == [(0, 0), (1, 1)]
    assert match_greedy(torch.zeros(0, 3), 0.3) == []


def test_ids_follow_moving_objects_and_reordering():
    # two characters moving right by 2 px per frame; the detector reports them in swapped order on frame 1
    f0 = frame((0, 0, 10, 20), (30, 10, 45, 30))
    f1 = frame((32, 10, 47, 30), (2, 0, 12, 20))
    f2 = frame((4, 0, 14, 20), (34, 10, 49, 30), (50, 30, 60, 40))  # a new one appears
    out = track_instances([f0, f1, f2])
    assert out[0].ids.tolist() == [0, 1]
    assert out[1].ids.tolist() == [1, 0]
    assert out[2].ids.tolist() == [0, 1, 2]
    # masks/boxes untouched
    assert torch.equal(out[1].masks, f1.masks)


@pytest.mark.parametrize("metric", ["mask", "box"])
def test_lost_track_bridged_within_max_age(metric):
    a = (0, 0, 10, 20)
    b = (30, 10, 45, 30)
    frames = [frame(a, b), frame(b), frame(b), frame(a, b)]
    out = track_instances(frames, TrackerConfig(metric=metric, max_age=2))
    assert [f.ids.tolist() for f in out] == [[0, 1], [1], [1], [0, 1]]
    # with max_age=1 the track of `a` is forgotten after two missed frames: it comes back as a new id
    out = track_instances(frames, TrackerConfig(metric=metric, max_age=1))
    assert out[3].ids.tolist() == [2, 1]


def test_empty_frames_and_threshold():
    frames = [frame(), frame((0, 0, 10, 10)), frame(), frame((0, 0, 10, 10))]
    out = track_instances(frames, iou_threshold=0.5, max_age=5)
    assert [f.ids.tolist() for f in out] == [[], [0], [], [0]]
    # a shift that leaves IoU below the threshold starts a new track
    out = track_instances([frame((0, 0, 10, 10)), frame((6, 0, 16, 10))], iou_threshold=0.5)
    assert [f.ids.tolist() for f in out] == [[0], [1]]


def test_tracker_state_and_errors():
    tr = InstanceTracker(first_id=7)
    assert tr.update(frame((0, 0, 5, 5))).ids.tolist() == [7]
    assert tr.num_tracks == 1 and tr.next_id == 8
    with pytest.raises(ValueError, match="frame size changed"):
        tr.update(Instances.empty(H + 1, W))
    with pytest.raises(TypeError, match="cartoonseg.Instances"):
        tr.update(torch.zeros(1, H, W))
    tr.reset()
    assert tr.update(frame((0, 0, 5, 5))).ids.tolist() == [7]
    for bad in ({"iou_threshold": 0.0}, {"max_age": -1}, {"metric": "flow"}, {"first_id": -2}):
        with pytest.raises(ValueError):
            TrackerConfig(**bad)


def test_deterministic_on_random_clip():
    g = torch.Generator().manual_seed(0)
    frames = []
    for _ in range(6):
        n = int(torch.randint(0, 5, (1,), generator=g))
        masks = (torch.rand(n, H, W, generator=g) > 0.7).float()
        frames.append(Instances.from_masks(masks) if n else Instances.empty(H, W))
    a = [f.ids.tolist() for f in track_instances(frames)]
    b = [f.ids.tolist() for f in track_instances(frames)]
    assert a == b
    for ids in a:
        assert len(set(ids)) == len(ids)  # ids unique within a frame


def test_empty_masks_fall_back_to_box_iou():
    boxes = torch.tensor([[0.0, 0, 10, 10], [30, 0, 40, 10]])
    empty = Instances(boxes=boxes, scores=torch.ones(2), masks=torch.zeros(2, H, W))
    shifted = Instances(boxes=boxes[[1, 0]] + 1, scores=torch.ones(2), masks=torch.zeros(2, H, W))
    out = track_instances([empty, shifted])
    assert [f.ids.tolist() for f in out] == [[0, 1], [1, 0]]


def test_track_instances_reports_progress_and_stops_on_interrupt():
    """A long full-HD clip takes minutes to track: every frame reports progress and checks for cancel first."""
    frames = [frame((0, 0, 10, 20)), frame((2, 0, 12, 20)), frame(), frame((4, 0, 14, 20))]
    seen = []
    out = track_instances(frames, progress=lambda done, total: seen.append((done, total)), max_age=2)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and [f.ids.tolist() for f in out] == [[0], [0], [], [0]]

    class Stop(Exception):
        pass

    checks = []

    def interrupt():
        checks.append(1)
        if len(checks) == 3:
            raise Stop

    seen.clear()
    with pytest.raises(Stop):
        track_instances(frames, interrupt=interrupt, progress=lambda done, total: seen.append(done))
    assert seen == [1, 2]  # stopped before the third frame
