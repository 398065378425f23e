"""Transforms, colour harmonisation, COCO person layouts and fixtures of the dataset synthesis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cartoonseg.data import augment
from cartoonseg.data.coco_layouts import PersonBoxSampler, extract_person_groups, load_person_groups
from cartoonseg.data.fixtures import draw_background, draw_character
from cartoonseg.data.foregrounds import autocrop_box


def test_foreground_transforms_keep_the_character_whole():
    fg = augment.crop_to_alpha(draw_character(np.random.default_rng(0), 160))
    area = (fg[..., 3] > 127).sum()
    for i in range(20):
        rng = np.random.default_rng(i)
        out = augment.fg_transform_distort(fg, rng)
        assert out.dtype == np.uint8 and out.shape[2] == 4
        # warps never cut (expanded canvases, transparent borders): the opaque area is roughly kept
        assert 0.6 * area < (out[..., 3] > 127).sum() < 1.6 * area
        # and the output is cropped to its alpha
        assert out[0, :, 3].any() and out[-1, :, 3].any() and out[:, 0, 3].any() and out[:, -1, 3].any()
        small = augment.fg_transform_train(fg, rng, tgt=256)
        assert max(small.shape[:2]) <= 0.75 * 256 * 1.5
    rot = augment.rotate_expand(fg, 90)
    assert rot.shape[0] == pytest.approx(fg.shape[1], abs=3) and rot.shape[1] == pytest.approx(fg.shape[0], abs=3)


def test_background_crop_is_square_and_deterministic():
    bg = draw_background(np.random.default_rng(1), 500, 300)
    a = augment.background_crop(bg, np.random.default_rng(2), 256)
    b = augment.background_crop(bg, np.random.default_rng(2), 256)
    assert a.shape == (256, 256, 3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="RGB"):
        augment.background_crop(bg[..., 0], np.random.default_rng(0), 64)


def test_background_crop_refuses_a_strip_whose_upscale_is_over_the_pixel_limit(monkeypatch):
    """A 1x10000 strip upscaled so its short side reaches 1.2 x 512 was an 11 GB array before the crop: now a
    ValueError naming the sizes and the limit, before any allocation. Normal backgrounds are unchanged."""
    from cartoonseg.io import MAX_PIXELS

    bg = draw_background(np.random.default_rng(1), 500, 300)
    ref = augment.background_crop(bg, np.random.default_rng(2), 256)
    # a lowered limit keeps the old code's allocation small (it must raise, not allocate)
    monkeypatch.setattr(augment, "MAX_PIXELS", 1_000_000, raising=False)
    strip = np.zeros((2, 400, 3), np.uint8)  # 2x400 -> 46080x230 for 192 px
    with pytest.raises(ValueError, match=r"400x2 px would be resized to 46080x230 px .*1000000-pixel limit"):
        augment.background_crop(strip, np.random.default_rng(0), 192)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=rf"10000x1 px .*over the {MAX_PIXELS}-pixel limit"):
        augment.background_crop(np.zeros((1, 10000, 3), np.uint8), np.random.default_rng(0), 512)
    np.testing.assert_array_equal(augment.background_crop(bg, np.random.default_rng(2), 256), ref)


def test_histogram_matching_template_rule():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # rich: 256 levels
    fg = np.zeros((20, 20, 4), np.uint8)
    fg[..., :3] = rng.integers(100, 110, (20, 20, 3))  # 10 levels
    fg[..., 3] = 255
    new_bg, (new_fg,) = augment.harmonise_histograms(bg, [fg])
    np.testing.assert_array_equal(new_bg, bg)  # background is the template
    assert new_fg[..., 0].std() > 3 * fg[..., 0].std()  # foreground spread to the background's histogram
    np.testing.assert_array_equal(new_fg[..., 3], fg[..., 3])
    # both poor (<= 128 levels): nothing changes
    poor = (bg // 4) * 4
    poor_bg, (same,) = augment.harmonise_histograms(poor[..., :3] // 3, [fg])
    np.testing.assert_array_equal(same, fg)
    lut = augment.histogram_match_lut(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    np.testing.assert_array_equal(lut, np.arange(256))


def test_quantisation_uses_at_most_k_colours():
    img = draw_background(np.random.default_rng(3), 96, 96)
    idmap = np.zeros((96, 96), np.int32)
    idmap[20:60, 20:60] = 1
    q = augment.quantize_colours(img, idmap, np.random.default_rng(0), ks=(12,))
    assert len(np.unique(q.reshape(-1, 3), axis=0)) <= 12
    assert np.abs(q.astype(int) - img).mean() < 20
    np.testing.assert_array_equal(q, augment.quantize_colours(img, idmap, np.random.default_rng(0), ks=(12,)))


def test_autocrop_rule_of_the_original():
    a = np.zeros((100, 100), np.uint8)
    a[30:60, 40:70] = 255
    assert autocrop_box(a) is not None
    b = np.zeros((40, 40), np.uint8)
    b[5:35, 5:35] = 255  # only 10 px of margin in total: no crop
    assert autocrop_box(b) is None


def test_person_groups_and_sampler(tmp_path):
    coco = {"images": [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 100, "height": 100},
                       {"id": 3, "width": 100, "height": 100}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 20, 60], "iscrowd": 0},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 20, 40, 40], "iscrowd": 0},
                {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 0},
                {"id": 5, "image_id": 2, "category_id": 1, "bbox": [10, 10, 50, 50], "iscrowd": 1},
                {"id": 6, "image_id": 3, "category_id": 1, "bbox": [5, 5, 10, 30], "iscrowd": 0},
                {"id": 7, "image_id": 3, "category_id": 1, "bbox": [50, 40, 20, 40], "iscrowd": 0}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(coco))
    from train.coco_person_boxes import main

    out = tmp_path / "boxes.json"
    assert main([str(path), "--out", str(out)]) == 0
    groups = json.loads(out.read_text())
    assert [g["image_id"] for g in groups] == [1, 3]  # image 2 has one non-crowd person only
    # normalised by max(W, H) = 200 and translated to min x/y = 0
    assert groups[0]["bboxes"] == [[0.0, 0.0, 0.1, 0.3], [0.4, 0.05, 0.2, 0.2]]
    assert extract_person_groups(coco, min_persons=1)[1]["image_id"] == 2
    # the output policy: never over the input (not even with --overwrite), never over a foreign file without it
    before = path.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main([str(path), "--out", str(path), *extra]) == 2  # one error line, no usage text
    assert path.read_bytes() == before
    (tmp_path / "notes.json").write_text("{}")
    assert main([str(path), "--out", str(tmp_path / "notes.json")]) == 2
    assert main([str(path), "--out", str(tmp_path / "notes.json"), "--overwrite"]) == 0
    assert main([str(path), "--out", str(out)]) == 0  # our own earlier output: replaced
    # the original's format (bare box arrays) loads too
    (tmp_path / "orig.json").write_text(json.dumps([[[0.1, 0.2, 0.1, 0.3], [0.3, 0.2, 0.1, 0.2]]]))
    assert load_person_groups(tmp_path / "orig.json")[0][0].tolist() == [0.0, 0.0, 0.1, 0.3]
    sampler = PersonBoxSampler(load_person_groups(out))
    rng = np.random.default_rng(0)
    for _ in range(200):
        boxes = sampler.sample(rng, 640)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        assert len(boxes) >= 1 and (boxes >= 0).all() and (boxes <= 640).all()
        assert (np.maximum(w, h) < 0.85 * 640).all() and (np.minimum(w, h) > 0.02 * 640).all()
    with pytest.raises(ValueError, match="person"):
        extract_person_groups({**coco, "categories": [{"id": 2, "name": "car"}]})
    # valid JSON but malformed records: a ValueError naming what is wrong (was a KeyError/TypeError traceback)
    no_width = {**coco, "images": [{"id": 1, "height": 100}]}
    bad_box = {**coco, "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 2]}]}
    for broken, words in ((no_width, "'images'"), (bad_box, "bbox"), ({**coco, "categories": [3]}, "categories")):
        with pytest.raises(ValueError, match=words):
            extract_person_groups(broken)
    (tmp_path / "broken.json").write_text(json.dumps(no_width))
    assert main([str(tmp_path / "broken.json"), "--out", str(tmp_path / "b.json")]) == 2


def test_make_fixtures_cli(tmp_path):
    from train.make_fixtures import main

    assert main(["--out", str(tmp_path), "--num-fg", "2", "--num-bg", "1", "--seed", "7",
                 "--fg-height", "60", "80", "--bg-size", "100", "80"]) == 0
    assert len(list((tmp_path / "fg").glob("*.png"))) == 2 and len(list((tmp_path / "bg").glob("*.jpg"))) == 1
    lines = (tmp_path / "fg" / "meta.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "transparent_background" in json.loads(lines[0])["tag_string"]


def test_background_files_of_every_kind_read_as_their_picture(tmp_path):
    """16-bit grey backgrounds are scaled to 8 bits (PIL's convert("RGB") clipped them at 255: a white picture);
    grey, palette and RGBA files come out as their RGB picture (alpha dropped)."""
    from PIL import Image

    from cartoonseg.data.foregrounds import load_background

    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    bg = load_background(tmp_path / "grey16.png")
    assert bg.shape == (48, 64, 3) and bg.flags.writeable
    np.testing.assert_allclose(bg[..., 0], ramp / 257.0, atol=1)
    assert (bg[..., 0] == bg[..., 2]).all()
    grey = (ramp >> 8).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    np.testing.assert_array_equal(load_background(tmp_path / "grey8.png")[..., 1], grey)
    rgba = np.dstack([np.full((48, 64, 3), (10, 120, 200), np.uint8), np.zeros((48, 64), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_background(tmp_path / "rgba.png"), rgba[..., :3])
    Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    np.testing.assert_array_equal(load_background(tmp_path / "pal.png"), rgba[..., :3])


def test_bad_person_box_files_are_one_error_before_synthesis(tmp_path, capsys):
    """A person-box file with a record lacking 'bboxes', non-numeric or NaN boxes, or only boxes that can never pass
    the size filter: one ValueError naming the file, raised before anything is written (was a KeyError traceback,
    and a RuntimeError traceback in the middle of the run when the person-box layout was first drawn)."""
    from cartoonseg.data.fixtures import make_fixtures
    from train.synthesize import main

    cases = {"nokey": [{"bbox": [[0, 0, 0.1, 0.3]]}], "text": [[[0, 0, "a", 0.3]]], "nan": [[[0, 0, "NaN", 0.3]]],
             "three": [[[0, 0, 0.1]]], "flat": [[[0, 0, 0.1, -0.2]]]}
    for name, data in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data).replace('"NaN"', "NaN"))
        with pytest.raises(ValueError, match=f"{name}.json: item 0"):
            load_person_groups(tmp_path / f"{name}.json")
    (tmp_path / "huge.json").write_text(json.dumps([[[0, 0, 1.0, 1.0]]]))  # whole-canvas boxes: always filtered out
    with pytest.raises(ValueError, match="usable box"):
        PersonBoxSampler(load_person_groups(tmp_path / "huge.json")).sample(np.random.default_rng(0), 128)
    make_fixtures(tmp_path / "raw", num_fg=2, num_bg=1, seed=0, fg_height=(60, 80), bg_size=(160, 160))
    for name in ("nokey", "huge"):
        out = tmp_path / f"out_{name}"
        status = main(["--fg", str(tmp_path / "raw" / "fg"), "--bg", str(tmp_path / "raw" / "bg"), "--out", str(out),
                       "--num", "12", "--size", "128", "--no-progress", "--person-boxes", str(tmp_path / f"{name}.json")])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()
