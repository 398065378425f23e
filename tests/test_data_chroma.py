"""Chroma-key extraction (cartoonseg.data.chroma, train.chroma_key) on synthetic key-screen frames with known alpha."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cartoonseg.data import chroma
from cartoonseg.data.fixtures import KEY_COLOURS, draw_character, make_chroma_frame


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("key", ["green", "blue"])
def test_keying_matches_known_alpha(key):
    ious, maes = [], []
    for seed in range(4):
        frame, truth = make_chroma_frame(np.random.default_rng([seed, 11]), key=key, num_characters=1 + seed % 3)
        instances, alpha, colour = chroma.key_frame(frame)
        true_hue = cv2.cvtColor(np.float32([[KEY_COLOURS[key]]]) / 255, cv2.COLOR_RGB2HSV)[0, 0, 0]
        assert abs(colour.hue - true_hue) < 4.0
        assert len(instances) == 1 + seed % 3
        ious.append(_iou(alpha > 0.5, truth > 0.5))
        maes.append(float(np.abs(alpha - truth).mean()))
    print(f"{key}-screen keying: IoU {np.mean(ious):.4f} (min {np.min(ious):.4f}), alpha MAE {np.mean(maes):.4f}")
    assert min(ious) > 0.97
    assert np.mean(maes) < 0.01


def test_key_estimation_is_border_weighted_and_despill_removes_spill():
    rng = np.random.default_rng(3)
    frame, _ = make_chroma_frame(rng, key="green")
    key = chroma.estimate_key(frame)
    assert int(np.argmax(key.rgb)) == 1 and key.share > 0.8
    spill = np.full((4, 4, 3), (200, 230, 180), np.uint8)  # a light pixel with a green cast
    out = chroma.despill(spill, key)
    assert (out[..., 1] <= np.maximum(out[..., 0], out[..., 2])).all()
    assert (out[..., [0, 2]] == spill[..., [0, 2]]).all()
    with pytest.raises(ValueError, match="saturated"):
        chroma.estimate_key(np.full((32, 32, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        chroma.key_frame(np.zeros((32, 32), np.uint8))


def test_cleanup_removes_speckle_and_pin_holes_but_keeps_real_holes():
    alpha = np.zeros((200, 200), np.float32)
    cv2.circle(alpha, (100, 100), 60, 1.0, -1)
    cv2.circle(alpha, (100, 100), 20, 0.0, -1)  # a real hole (ring)
    alpha[90:92, 150:152] = 0.0  # a pin hole
    alpha[10:12, 10:12] = 1.0  # speckle
    out = chroma.clean_alpha(alpha, chroma.KeyConfig(max_hole=0.001))  # holes under 40 px are pin holes
    assert out[100, 100] < 0.5 and out[91, 151] > 0.5 and out[11, 11] == 0.0


def test_filled_pin_holes_are_opaque_and_take_the_colour_around_them():
    h, w = 240, 320
    frame = np.broadcast_to(np.array(KEY_COLOURS["green"], np.uint8), (h, w, 3)).copy()
    cv2.circle(frame, (160, 120), 60, (200, 80, 60), -1)
    frame[120, 160] = frame[150:152, 130:132] = KEY_COLOURS["green"]  # key-coloured noise inside the character
    (inst,), alpha, _ = chroma.key_frame(frame)
    x, y, _, _ = inst.bbox_xywh
    for py, px in ((120, 160), (151, 131)):
        assert alpha[py, px] == 1.0  # was 0.501: a half-transparent hole in the foreground
        assert np.abs(inst.rgba[py - y, px - x].astype(int) - (200, 80, 60, 255)).max() <= 2  # was (0, 64, 64, 128)


def test_rejection_rules_and_instance_split():
    rng = np.random.default_rng(5)
    h, w = 240, 320
    green = np.array(KEY_COLOURS["green"], np.uint8)
    frame = np.broadcast_to(green, (h, w, 3)).copy()
    tiny = draw_character(rng, 30, avoid_hue=142)  # < 2 % of the frame
    a = tiny[..., 3:4] / 255.0
    region = frame[10:40, 10 : 10 + tiny.shape[1]]
    region[:] = (a * tiny[..., :3] + (1 - a) * region).astype(np.uint8)
    instances, _, _ = chroma.key_frame(frame)
    assert instances == []
    # a foreground covering three borders is rejected; allowed when the rule is relaxed
    frame2 = np.broadcast_to(green, (h, w, 3)).copy()
    frame2[:, :200] = (200, 60, 60)
    assert chroma.key_frame(frame2)[0] == []
    relaxed = chroma.KeyConfig(max_border_touches=3)
    assert len(chroma.key_frame(frame2, relaxed)[0]) == 1
    # two separate characters -> two instances, or one with split=False
    frame3, _ = make_chroma_frame(np.random.default_rng(8), num_characters=2)
    assert len(chroma.key_frame(frame3)[0]) == 2
    assert len(chroma.key_frame(frame3, chroma.KeyConfig(split=False))[0]) == 1


def _write_video(path, frames, fps=4.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_extraction_dedups_and_writes_rgba_with_metadata(tmp_path):
    from train.chroma_key import main

    a, alpha_a = make_chroma_frame(np.random.default_rng(21), key="green")
    b, alpha_b = make_chroma_frame(np.random.default_rng(22), key="green")
    # 12 frames at 4 fps: 6 copies of A then 6 of B; sampled at 2 fps -> 6 frames, 2 distinct
    video = tmp_path / "clip.avi"
    _write_video(video, [a] * 6 + [b] * 6)
    out = tmp_path / "fg"
    assert main([str(video), "--out", str(out), "--fps", "2"]) == 0
    records = [json.loads(line) for line in (out / "meta.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 6]
    for rec, truth in zip(records, (alpha_a, alpha_b)):
        img = cv2.imread(str(out / rec["file"]), cv2.IMREAD_UNCHANGED)
        assert img.shape[2] == 4
        x, y, w, h = rec["bbox_xywh"]
        full = np.zeros_like(truth)
        full[y : y + h, x : x + w] = img[..., 3] / 255.0
        iou = _iou(full > 0.5, truth > 0.5)
        print(f"MJPEG video keying IoU {iou:.4f}")
        assert iou > 0.95


def test_frame_folder_source(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        f, _ = make_chroma_frame(np.random.default_rng([i, 5]), key="blue")
        cv2.imwrite(str(frames / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (frames / "broken.png").write_bytes(b"not an image")
    recs = chroma.extract_from_source(frames, tmp_path / "out", dedup_threshold=0.0)
    assert len(recs) == 3 and all(r["key_hue"] > 180 for r in recs)
    with pytest.raises(FileNotFoundError):
        list(chroma.iter_frames(tmp_path / "missing.mp4"))


def _frames(folder, seeds, key="blue"):
    folder.mkdir(parents=True)
    for i, seed in enumerate(seeds):
        f, _ = make_chroma_frame(np.random.default_rng([seed, 5]), key=key)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def _cli(capsys, argv):
    from train.chroma_key import main

    status = main([str(a) for a in argv])
    cap = capsys.readouterr()
    if status != 0:
        assert "Traceback" not in cap.err and cap.err.startswith("error: ") and cap.err.count("\n") == 1, cap.err
    return status, cap.err


def test_sources_with_one_name_get_distinct_files_and_reruns_add_no_lines(tmp_path, capsys):
    _frames(tmp_path / "a" / "shot", [1, 2])
    _frames(tmp_path / "b" / "shot", [3])
    out = tmp_path / "fg"
    assert _cli(capsys, [tmp_path / "a" / "shot", tmp_path / "b" / "shot", "--out", out, "--dedup", "0"])[0] == 0
    files = sorted(p.name for p in out.glob("*.png"))
    meta = (out / "meta.jsonl").read_text().splitlines()
    assert len(files) == 3 == len(meta) and sorted(json.loads(x)["file"] for x in meta) == files
    assert _cli(capsys, [tmp_path / "a" / "shot", tmp_path / "b" / "shot", "--out", out, "--dedup", "0"])[0] == 0
    assert (out / "meta.jsonl").read_text().splitlines() == meta  # rerun: same files, no duplicate lines
    assert sorted(p.name for p in out.glob("*.png")) == files


def test_output_policy_keeps_foreign_files_and_inputs(tmp_path, capsys):
    frames = tmp_path / "frames"
    _frames(frames, [1])
    before = sorted(p.name for p in frames.iterdir())
    status, err = _cli(capsys, [frames, "--out", frames])  # the output is the input folder
    assert status == 2 and "input" in err and sorted(p.name for p in frames.iterdir()) == before
    assert _cli(capsys, [frames, "--out", tmp_path])[0] == 2  # the output contains the input
    out = tmp_path / "fg"
    out.mkdir()
    (out / "meta.jsonl").write_text('{"file": "mine.png", "tag_string": "mine"}\n')
    status, err = _cli(capsys, [frames, "--out", out])  # a folder holding files cartoonseg did not write
    assert status == 2 and "meta.jsonl" in err
    assert _cli(capsys, [frames, "--out", out, "--overwrite", "--dedup", "0"])[0] == 0
    lines = (out / "meta.jsonl").read_text().splitlines()
    assert lines[0] == '{"file": "mine.png", "tag_string": "mine"}' and len(lines) == 2  # merged, not truncated


def test_a_file_that_is_no_video_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    status, err = _cli(capsys, [bad, "--out", tmp_path / "fg"])
    assert status == 2 and "cannot read" in err and str(bad) in err


def test_the_current_folder_as_source_is_named_after_the_folder(tmp_path, capsys, monkeypatch):
    _frames(tmp_path / "take1", [1])
    monkeypatch.chdir(tmp_path / "take1")
    out = tmp_path / "fg"
    assert _cli(capsys, [".", "--out", out])[0] == 0
    assert [p.name for p in out.glob("*.png")] == ["take1_f000000_i0.png"]  # was "_f000000_i0.png"
    assert [r["file"] for r in chroma.extract_from_source(".", tmp_path / "fg2")] == ["take1_f000000_i0.png"]


def test_extract_failing_before_the_first_write_leaves_no_new_folder(tmp_path):
    """An unreadable source fails after the output folder was opened; the new (empty) folder used to stay."""
    from cartoonseg.data.chroma import extract_from_source

    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises((ValueError, OSError, RuntimeError)):
        extract_from_source(bad, tmp_path / "out" / "keyed")
    assert not (tmp_path / "out").exists()
