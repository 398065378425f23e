"""Dataset synthesis (cartoonseg.data.synthesis / layouts, train.synthesize): layout statistics, occlusion
bookkeeping, COCO output read back with pycocotools, determinism and resume."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cartoonseg import rle
from cartoonseg.data.coco_layouts import extract_person_groups, write_person_groups
from cartoonseg.data.fixtures import make_fixtures
from cartoonseg.data.foregrounds import index_backgrounds, index_foregrounds
from cartoonseg.data.layouts import Placement, PoissonCount
from cartoonseg.data.synthesis import SynthesisConfig, Synthesizer, composite, synthesize_dataset

SIZE = 192
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _fake_coco(n_images=20, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        images.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(1, 6))):
            w = float(rng.uniform(30, 150))
            h = w * float(rng.uniform(1.3, 2.8))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, max(1, 480 - h))), w, h]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    make_fixtures(root, num_fg=8, num_bg=3, seed=4, fg_height=(90, 160), bg_size=(320, 256))
    groups = extract_person_groups(_fake_coco())
    write_person_groups(groups, root / "person_boxes.json")
    return root


def _synth(raw, **cfg_changes):
    from cartoonseg.data.coco_layouts import load_person_groups

    cfg = dataclasses.replace(SynthesisConfig(size=SIZE), **cfg_changes)
    return Synthesizer(index_foregrounds(raw / "fg"), index_backgrounds(raw / "bg"), cfg, seed=1,
                       person_groups=load_person_groups(raw / "person_boxes.json"))


def test_poisson_counts_follow_the_original_sampler():
    rng = np.random.default_rng(0)
    for lam, lo, hi, paper_mean in ((2.5, 1, 9, 2.87), (3.5, 2, 9, 4.06)):
        sampler = PoissonCount(lam, lo, hi, seed=0)
        draws = np.array([sampler.sample(rng) for _ in range(5000)])
        assert draws.min() >= lo and draws.max() <= hi
        assert abs(sampler.expected() - paper_mean) < 0.12
        assert abs(draws.mean() - sampler.expected()) < 0.1


def test_layout_statistics_and_boxes_inside_canvas(raw):
    synth = _synth(raw)
    counts = {"regular": [], "partition": [], "personbbox": []}
    for i in range(240):
        name, placements = synth.make_layout(np.random.default_rng([9, i]))
        counts[name].append(len(placements))
        inside = [p.box[2] > 0 and p.box[3] > 0 and p.box[0] < SIZE and p.box[1] < SIZE for p in placements]
        # a row wider than the canvas is centred (as in the original), so its ends may fall off the canvas;
        # they get no visible pixels and are dropped. Other layouts always overlap the canvas.
        assert all(inside) if name != "regular" else any(inside)
    share = {k: len(v) / 240 for k, v in counts.items()}
    assert abs(share["regular"] - 0.4) < 0.1 and abs(share["personbbox"] - 0.4) < 0.1
    assert abs(share["partition"] - 0.2) < 0.08
    for name, sampler in (("regular", synth.regular_count), ("partition", synth.partition_count)):
        c = np.asarray(counts[name])
        se = np.sqrt(sampler.lam) / np.sqrt(len(c))
        print(f"{name}: mean instance count {c.mean():.2f} (sampler mean {sampler.expected():.2f}, n={len(c)})")
        assert abs(c.mean() - sampler.expected()) < 4 * se
    assert min(counts["personbbox"]) >= 1
    for i in range(12):
        s = synth.sample(i)
        for a in s.annotations:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE and w > 0 and h > 0


def test_occlusion_bookkeeping_on_random_samples(raw):
    synth = _synth(raw, quantize_prob=0.0, hist_match_prob=0.0)
    for i in range(10):
        s = synth.sample(i)
        masks = np.stack([rle.decode(a["segmentation"]) for a in s.annotations]).astype(np.int32)
        assert masks.sum(0).max() <= 1  # disjoint
        # every labelled pixel of a kept foreground belongs to exactly the topmost foreground covering it
        top = np.zeros((SIZE, SIZE), np.int32)
        for k, p in enumerate(s.placements):
            x0, y0, x1, y1 = p.box
            cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(SIZE, x1), min(SIZE, y1)
            lab = p.rgba[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, 3] > 30
            top[cy0:cy1, cx0:cx1][lab] = k + 1
        ann_map = np.zeros_like(top)
        for a, m in zip(s.annotations, masks):
            ann_map[m > 0] = a["placement"] + 1
            assert a["area"] == int(m.sum())
        np.testing.assert_array_equal(ann_map, top)
        # the image is exactly the composite of the kept foregrounds (dropped ones leave no trace)
        np.testing.assert_array_equal(s.image, composite(s.background, s.placements)[0])
        for k, p in enumerate(s.placements):
            vis = (top == k + 1).sum()
            own = composite(s.background, [p])[2][0]
            if synth.cfg.occlusion_layouts and s.layout in synth.cfg.occlusion_layouts:
                assert vis >= 0.25 * own


def test_heavily_occluded_instance_is_dropped_by_recompositing(raw, monkeypatch):
    synth = _synth(raw, quantize_prob=0.0, hist_match_prob=0.0)
    back = np.zeros((100, 100, 4), np.uint8)
    back[...] = (255, 0, 255, 255)  # magenta square: must vanish completely
    front = np.zeros((100, 100, 4), np.uint8)
    front[...] = (0, 200, 0, 255)
    front[:, :15, 3] = 0  # leaves 15 % of the back square visible
    small = np.zeros((30, 30, 4), np.uint8)
    small[...] = (10, 10, 200, 255)
    placements = [Placement(0, back, 40, 40), Placement(1, front, 40, 40), Placement(2, small, 5, 5)]
    monkeypatch.setattr(synth, "make_layout", lambda rng: ("regular", [dataclasses.replace(p) for p in placements]))
    s = synth.sample(0)
    assert [a["fg_index"] for a in s.annotations] == [1, 2]
    assert s.dropped_positions == [0]
    expected = composite(s.background, placements[1:])[0]
    np.testing.assert_array_equal(s.image, expected)
    magenta = (s.image[..., 0] > 200) & (s.image[..., 1] < 60) & (s.image[..., 2] > 200)
    assert not magenta[40:140, 40:55].any()
    front_mask = rle.decode(s.annotations[0]["segmentation"])
    assert front_mask.sum() == 100 * 85 and s.annotations[0]["bbox"] == [55.0, 40.0, 85.0, 100.0]


def test_coco_json_with_pycocotools_and_cli(raw, tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    mask_api = pytest.importorskip("pycocotools.mask")
    from train.synthesize import main

    out = tmp_path / "ds"
    assert main(["--fg", str(raw / "fg"), "--bg", str(raw / "bg"), "--out", str(out), "--num", "6",
                 "--size", str(SIZE), "--seed", "3", "--person-boxes", str(raw / "person_boxes.json"),
                 "--no-progress"]) == 0
    coco = coco_api.COCO(str(out / "annotations" / "det_train.json"))
    assert len(coco.getImgIds()) == 6 and coco.getCatIds() == [0]
    assert coco.loadCats(0)[0]["name"] == "object"
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for img in coco.loadImgs(coco.getImgIds()):
        pic = cv2.imread(str(out / "train" / img["file_name"]))
        assert pic.shape == (SIZE, SIZE, 3) and img["file_name"] == f"{img['id']:012d}.jpg"
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert anns
        for a in anns:
            m = coco.annToMask(a)
            assert int(m.sum()) == a["area"] == int(mask_api.area(coco.annToRLE(a)))
            assert a["bbox"] == pytest.approx(mask_api.toBbox(coco.annToRLE(a)).tolist())
            np.testing.assert_array_equal(m, rle.decode(a["segmentation"]))
            assert "solo" in a["tag_string"].split() and a["tag_string_character"].startswith("fixture_character")


def test_foreground_category_ids_are_listed_in_categories(raw, tmp_path):
    """A category_id given in the foregrounds' meta.jsonl gets a categories entry, so the training reader and the
    evaluator take the dataset as it is."""
    import shutil

    from cartoonseg.training.coco import load_coco
    from train.synthesize import main

    fg = tmp_path / "fg"
    shutil.copytree(raw / "fg", fg)
    lines = [json.loads(line) for line in (fg / "meta.jsonl").read_text().splitlines() if line.strip()]
    (fg / "meta.jsonl").write_text("".join(json.dumps(dict(r, category_id=2 if k % 2 else 0)) + "\n"
                                           for k, r in enumerate(lines)))
    out = tmp_path / "ds"
    assert main(["--fg", str(fg), "--bg", str(raw / "bg"), "--out", str(out), "--num", "4", "--size", str(SIZE),
                 "--seed", "3", "--no-progress"]) == 0
    data = json.loads((out / "annotations" / "det_train.json").read_text())
    used = {a["category_id"] for a in data["annotations"]}
    assert 2 in used and used <= {c["id"] for c in data["categories"]}
    assert data["categories"][0] == {"id": 0, "name": "object", "supercategory": "object", "isthing": 1}
    assert load_coco(out / "annotations" / "det_train.json", out / "train").num_classes == len(data["categories"])


def _snapshot(out):
    data = json.loads((out / "annotations" / "det_train.json").read_text())
    data["info"].pop("config")
    images = {p.name: p.read_bytes() for p in sorted((out / "train").glob("*.jpg"))}
    return data, images


def test_determinism_across_workers_and_resume(raw, tmp_path):
    kwargs = dict(cfg=SynthesisConfig(size=SIZE), seed=5, person_boxes=raw / "person_boxes.json", progress=False)
    a = tmp_path / "a"
    synthesize_dataset(raw / "fg", raw / "bg", a, 6, workers=1, **kwargs)
    ref = _snapshot(a)
    # two workers in separate processes: byte-identical output
    b = tmp_path / "b"
    synthesize_dataset(raw / "fg", raw / "bg", b, 6, workers=2, **kwargs)
    assert _snapshot(b) == ref
    # resume: a run stopped after 3 images (then extended to 6) gives the same dataset
    c = tmp_path / "c"
    synthesize_dataset(raw / "fg", raw / "bg", c, 3, workers=1, **kwargs)
    r = synthesize_dataset(raw / "fg", raw / "bg", c, 6, workers=1, **kwargs)
    assert r["new"] == 3 and _snapshot(c) == ref
    # an interruption between writing an image and its record, plus a stray temp file: redone, nothing duplicated
    (c / ".synth_state" / "train" / "000000004.json").unlink()
    (c / "train" / "000000000002.jpg").unlink()
    (c / "train" / "000000000005.jpg.tmp123").write_bytes(b"partial")
    r = synthesize_dataset(raw / "fg", raw / "bg", c, 6, workers=1, **kwargs)
    assert r["new"] == 2 and _snapshot(c) == ref
    assert not list((c / "train").glob("*.tmp*"))
    # a different seed in the same folder is refused instead of mixing two runs
    with pytest.raises(ValueError, match="seed"):
        synthesize_dataset(raw / "fg", raw / "bg", c, 6, workers=1, **{**kwargs, "seed": 6})
    # so are foregrounds or backgrounds rewritten under their names (chroma_key rerun with other settings)
    for kind in ("fg", "bg"):
        copy = tmp_path / f"{kind}_rewritten"
        shutil.copytree(raw / kind, copy)
        first = sorted(p for p in copy.iterdir() if p.suffix in (".png", ".jpg"))[0]
        rgba = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(first), rgba[: rgba.shape[0] // 2 + 2])  # the same name, another picture
        inputs = {"fg": raw / "fg", "bg": raw / "bg", kind: copy}
        with pytest.raises(ValueError, match="foregrounds" if kind == "fg" else "backgrounds"):
            synthesize_dataset(inputs["fg"], inputs["bg"], c, 6, workers=1, **kwargs)


def test_bad_inputs_fail_clearly(raw, tmp_path):
    with pytest.raises(ValueError, match="canvas size"):
        SynthesisConfig(size=10)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="foregrounds"):
        synthesize_dataset(empty, raw / "bg", tmp_path / "o", 1, progress=False)
    rgb_only = tmp_path / "rgb"
    rgb_only.mkdir()
    cv2.imwrite(str(rgb_only / "x.png"), np.zeros((50, 50, 3), np.uint8))
    with pytest.warns(UserWarning, match="alpha"):
        assert index_foregrounds(rgb_only) == []


def _cli(capsys, main, argv):
    """Run a train script's main; a failure must be one ``error:`` line with status 2, never a traceback."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    if status != 0:
        assert status == 2 and "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return status, err


def test_make_fixtures_output_policy(tmp_path, capsys):
    from train.make_fixtures import main

    small = ["--num-fg", "2", "--num-bg", "1", "--fg-height", "60", "80", "--bg-size", "100", "80"]
    mf = tmp_path / "mf"
    (mf / "fg").mkdir(parents=True)
    (mf / "fg" / "fg_00000.png").write_bytes(b"user image")
    (mf / "fg" / "meta.jsonl").write_text('{"file": "fg_00000.png", "tag_string": "user"}\n')
    status, err = _cli(capsys, main, ["--out", mf, *small])
    assert status == 2 and "fg_00000.png" in err
    assert (mf / "fg" / "fg_00000.png").read_bytes() == b"user image"
    assert (mf / "fg" / "meta.jsonl").read_text() == '{"file": "fg_00000.png", "tag_string": "user"}\n'
    assert not (mf / "bg").exists()  # refused before anything was written
    # our own outputs: a rerun replaces them; lines of other files in meta.jsonl are kept, ours not repeated
    ok = tmp_path / "ok"
    assert _cli(capsys, main, ["--out", ok, *small])[0] == 0
    with open(ok / "fg" / "meta.jsonl", "rb") as fh:
        ours = fh.read()
    assert _cli(capsys, main, ["--out", ok, *small])[0] == 0
    assert (ok / "fg" / "meta.jsonl").read_bytes() == ours and len(ours.splitlines()) == 2
    # an output that cannot be created (a file on the way; read-only folders fail the same way): one error line
    (tmp_path / "file").write_text("x")
    assert _cli(capsys, main, ["--out", tmp_path / "file" / "sub", *small])[0] == 2


def _inputs(raw, tmp_path):
    import shutil

    fg, bg = tmp_path / "fg", tmp_path / "bg"
    shutil.copytree(raw / "fg", fg)
    shutil.copytree(raw / "bg", bg)
    return fg, bg, ["--fg", fg, "--bg", bg, "--num", "1", "--size", str(SIZE), "--no-progress"]


def test_synthesize_refuses_an_out_overlapping_its_inputs(raw, tmp_path, capsys):
    from train.synthesize import main

    fg, bg, args = _inputs(raw, tmp_path)
    for out in (bg / "ds", fg, tmp_path):  # inside an input, equal to one, containing them
        status, err = _cli(capsys, main, [*args, "--out", out])
        assert status == 2 and "input" in err
    assert not (bg / "ds").exists() and not (fg / ".synth_state").exists()
    # an output that cannot be created: one error line
    (tmp_path / "file").write_text("x")
    assert _cli(capsys, main, [*args, "--out", tmp_path / "file" / "sub"])[0] == 2


def test_synthesize_overwrite_removes_only_its_own_temporaries(raw, tmp_path, capsys):
    from train.synthesize import main

    fg, bg, args = _inputs(raw, tmp_path)
    # --overwrite into a folder holding the user's files: ours are written, theirs kept (also *.tmp* names)
    out = tmp_path / "ds"
    (out / "train").mkdir(parents=True)
    (out / "train" / "notes.tmp.txt").write_text("mine")
    (out / "train" / "000000000007.jpg.tmp99").write_bytes(b"stale temporary of ours")
    assert _cli(capsys, main, [*args, "--out", out, "--overwrite"])[0] == 0
    assert (out / "train" / "notes.tmp.txt").read_text() == "mine"
    assert not (out / "train" / "000000000007.jpg.tmp99").exists()
    assert (out / "train" / "000000000000.jpg").is_file()



def test_synthesize_with_an_unreadable_fingerprint_names_it_and_overwrite_starts_over(raw, tmp_path, capsys):
    """A fingerprint.json emptied (a crash, a full disk) or edited used to stop every rerun with "error: Expecting
    value: line 1 column 1 (char 0)" (no file named), --overwrite included (a JSON list: a traceback), so the folder
    could never be used again. Now the error names the file and --overwrite starts the run over."""
    from train.synthesize import main

    fg, bg, args = _inputs(raw, tmp_path)
    out = tmp_path / "ds"
    assert _cli(capsys, main, [*args, "--out", out])[0] == 0
    fp = out / ".synth_state" / "train" / "fingerprint.json"
    good = fp.read_text()
    for bad in ("", "[1]", "{"):
        fp.write_text(bad)
        status, err = _cli(capsys, main, [*args, "--out", out])
        assert status == 2 and str(fp) in err and "--overwrite" in err, err
        assert fp.read_text() == bad  # nothing changed by the refusal
        assert _cli(capsys, main, [*args, "--out", out, "--overwrite"])[0] == 0
        assert fp.read_text() == good and (out / "train" / "000000000000.jpg").is_file()

def test_indexes_leave_out_hidden_files_and_folders(tmp_path):
    """An interrupted writer's temporaries (.cartoonseg-tmp-*), macOS ._* companions and hidden state folders are
    never taken for foregrounds or backgrounds."""
    from PIL import Image

    from cartoonseg.data.foregrounds import index_backgrounds, index_foregrounds

    rgba = np.zeros((8, 8, 4), np.uint8)
    for rel in ("a.png", "sub/b.png", ".cartoonseg-tmp-abcdef-1-abcdef-c.png", "._a.png", ".state/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba).save(tmp_path / rel)
    assert [Path(f.path).relative_to(tmp_path).as_posix() for f in index_foregrounds(tmp_path)] == ["a.png",
                                                                                                 "sub/b.png"]
    assert [Path(p).relative_to(tmp_path).as_posix() for p in index_backgrounds(tmp_path)] == ["a.png", "sub/b.png"]


def test_unusable_inputs_are_refused_before_writing_also_with_workers(raw, tmp_path):
    """No usable foreground (only RGB files) or no background: one error line and status 2 before anything is written.
    With --workers 2 the check used to run only in the pool initializer, whose failing workers the pool replaced
    forever (a hang printing a traceback per worker)."""
    import subprocess
    import sys
    import warnings

    rgb_only, empty = tmp_path / "rgb", tmp_path / "empty"
    rgb_only.mkdir()
    empty.mkdir()
    cv2.imwrite(str(rgb_only / "x.png"), np.zeros((50, 50, 3), np.uint8))
    for fg, bg, what in ((rgb_only, raw / "bg", "foregrounds"), (raw / "fg", empty, "backgrounds")):
        out = tmp_path / f"out_{what}"
        with pytest.raises(ValueError, match=what), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the skipped RGB file
            synthesize_dataset(fg, bg, out, 2, cfg=SynthesisConfig(size=SIZE), progress=False)
        assert not out.exists()
        cmd = [sys.executable, "-W", "ignore", "-m", "train.synthesize", "--fg", str(fg), "--bg", str(bg), "--out",
               str(out), "--num", "2", "--size", str(SIZE), "--workers", "2", "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and what in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()


def test_a_background_too_elongated_to_upscale_is_an_unusable_draw(raw, tmp_path, monkeypatch):
    """A background whose upscaled copy would be over the pixel limit is treated as an unreadable one: the sampler
    draws again (samples still come from the other backgrounds) and, with only such files, fails naming the file
    and the limit instead of allocating gigabytes."""
    from cartoonseg.data import augment

    monkeypatch.setattr(augment, "MAX_PIXELS", 1_000_000, raising=False)  # old code: small allocation, no error
    strips = tmp_path / "strips"
    strips.mkdir()
    cv2.imwrite(str(strips / "strip.png"), np.full((2, 400, 3), 128, np.uint8))
    cfg = SynthesisConfig(size=SIZE, max_attempts=3)
    only = Synthesizer(index_foregrounds(raw / "fg"), index_backgrounds(strips), cfg, seed=1)
    with pytest.raises(ValueError, match=r"no usable image.*strip\.png.*400x2 px.*1000000-pixel limit"):
        only.sample(0)
    mixed = Synthesizer(index_foregrounds(raw / "fg"), index_backgrounds(raw / "bg") + index_backgrounds(strips),
                        dataclasses.replace(cfg, max_attempts=20), seed=1)
    for i in range(4):
        assert mixed.sample(i).image.shape == (SIZE, SIZE, 3)


def test_a_foreground_mostly_off_the_canvas_is_dropped(raw, monkeypatch):
    """The 25 % rule counts the whole foreground's label pixels (as the original), so a character hanging 80 % off
    the canvas is dropped even though its on-canvas sliver is unoccluded (it was kept as a sliver instance)."""
    synth = _synth(raw, quantize_prob=0.0, hist_match_prob=0.0)
    edge = np.zeros((60, 100, 4), np.uint8)
    edge[...] = (255, 0, 255, 255)
    middle = np.zeros((40, 40, 4), np.uint8)
    middle[...] = (0, 200, 0, 255)
    half = np.zeros((40, 40, 4), np.uint8)
    half[...] = (10, 10, 200, 255)
    placements = [Placement(0, edge, SIZE - 20, 10), Placement(1, middle, 80, 80), Placement(2, half, -20, 120)]
    monkeypatch.setattr(synth, "make_layout", lambda rng: ("regular", [dataclasses.replace(p) for p in placements]))
    s = synth.sample(0)
    assert [a["fg_index"] for a in s.annotations] == [1, 2]  # 20 % on the canvas: dropped; 50 %: kept
    assert s.dropped_positions == [0]
    np.testing.assert_array_equal(s.image, composite(s.background, placements[1:])[0])
    assert s.annotations[1]["bbox"] == [0.0, 120.0, 20.0, 40.0] and s.annotations[1]["area"] == 20 * 40


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "I;16"])
def test_colour_key_transparency_is_read_as_alpha(tmp_path, mode):
    """A foreground whose transparency is a colour key (PNG tRNS on an RGB, grey, palette or 16-bit grey image; PIL's
    info["transparency"]) is indexed and read as RGBA: keyed pixels alpha 0, the others 255. RGB and grey keys
    were skipped as "no alpha channel"."""
    import warnings

    from PIL import Image

    from cartoonseg.data.foregrounds import load_foreground

    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[...] = (0, 255, 0)
    rgb[10:30, 5:25] = (200, 50, 50)
    inside = np.zeros((40, 50), bool)
    inside[10:30, 5:25] = True
    grey = np.where(inside, 200, 0).astype(np.uint8)
    if mode == "RGB":
        im, key = Image.fromarray(rgb, "RGB"), (0, 255, 0)
    elif mode == "L":
        im, key = Image.fromarray(grey, "L"), 0
    elif mode == "I;16":
        im, key = Image.fromarray((grey.astype(np.uint16) * 257)).convert("I;16"), 0
    else:
        im = Image.fromarray(rgb, "RGB").quantize(4)
        key = im.getpixel((0, 0))
    im.save(tmp_path / "keyed.png", transparency=key)
    with Image.open(tmp_path / "keyed.png") as check:
        assert "transparency" in check.info and check.mode != "RGBA"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipped" warning
        found = index_foregrounds(tmp_path)
    assert [Path(f.path).name for f in found] == ["keyed.png"]
    full = load_foreground(tmp_path / "keyed.png", crop=False)
    assert full.shape == (40, 50, 4)
    np.testing.assert_array_equal(full[..., 3], np.where(inside, 255, 0))
    cropped = load_foreground(tmp_path / "keyed.png")  # the content box after the 5x5 blur: 2 px of margin
    np.testing.assert_array_equal(cropped[..., 3], np.pad(np.full((20, 20), 255, np.uint8), 2))
    if mode == "RGB":
        assert (cropped[2:-2, 2:-2, :3] == (200, 50, 50)).all()


def test_fg_file_is_the_path_relative_to_the_foreground_folder(raw, tmp_path):
    """Two foregrounds with the same name in different subfolders are told apart in the annotations (fg_file was the
    basename); records of an older run, resumed, get the relative path where their basename is unique."""
    from PIL import Image

    fg = tmp_path / "fg"
    for rel, colour in (("a/char.png", (255, 0, 0, 255)), ("b/char.png", (0, 0, 255, 255)),
                        ("c/solo.png", (0, 255, 0, 255))):
        (fg / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((60, 40, 4), colour, np.uint8)).save(fg / rel)
    assert [f.file for f in index_foregrounds(fg)] == ["a/char.png", "b/char.png", "c/solo.png"]
    out = tmp_path / "out"
    cfg = SynthesisConfig(size=128, hist_match_prob=0.0, quantize_prob=0.0)
    r = synthesize_dataset(fg, raw / "bg", out, 6, cfg=cfg, seed=3, progress=False)
    coco = json.loads(Path(r["annotations"]).read_text())
    anns = coco["annotations"]
    assert {a["fg_file"] for a in anns} == {"a/char.png", "b/char.png", "c/solo.png"}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    for a in anns:  # each name is the foreground whose colour the image shows under its mask
        image = cv2.cvtColor(cv2.imread(str(out / "train" / files[a["image_id"]])), cv2.COLOR_BGR2RGB)
        colour = image[rle.decode(a["segmentation"]).astype(bool)].mean(0)
        assert a["fg_file"] == ("a/char.png", "c/solo.png", "b/char.png")[int(np.argmax(colour))], colour
    # an older run's resume records (basenames): upgraded where unambiguous, kept as written otherwise
    for rec_path in (out / ".synth_state" / "train").glob("0*.json"):
        rec = json.loads(rec_path.read_text())
        for a in rec["annotations"]:
            a["fg_file"] = Path(a["fg_file"]).name
        rec_path.write_text(json.dumps(rec))
    r = synthesize_dataset(fg, raw / "bg", out, 6, cfg=cfg, seed=3, progress=False)
    assert r["new"] == 0
    resumed = json.loads(Path(r["annotations"]).read_text())["annotations"]
    assert {a["fg_file"] for a in resumed} == {"char.png", "c/solo.png"}
    assert [a["fg_file"] == "c/solo.png" for a in resumed] == [a["fg_file"] == "c/solo.png" for a in anns]


def test_resume_fingerprint_names_inputs_by_relative_path(raw, tmp_path):
    """A foreground moved to another sub-folder (sorted order and size unchanged) is another input set: its
    annotations would name a file that is gone (fg_file). The fingerprint used basenames and resumed such a run. A run
    started by an older version (basename fingerprint, no "names" key) still resumes, with a warning where inputs lie
    in sub-folders; its fingerprint is then upgraded."""
    import warnings

    from PIL import Image

    from cartoonseg.data import synthesis

    fg = tmp_path / "fg"
    for rel, colour in (("a/x.png", (255, 0, 0, 255)), ("c/y.png", (0, 0, 255, 255))):
        (fg / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((60, 40, 4), colour, np.uint8)).save(fg / rel)
    out = tmp_path / "out"
    kwargs = dict(cfg=SynthesisConfig(size=96, hist_match_prob=0.0, quantize_prob=0.0), seed=3, progress=False)
    synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)
    (fg / "b").mkdir()
    (fg / "a" / "x.png").rename(fg / "b" / "x.png")  # a/x.png -> b/x.png: still first, same size
    with pytest.raises(ValueError, match=r"different \['foregrounds'\]"):
        synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)

    # an older version's run in sub-folders: resumed on its own (basename) check, with a warning, then upgraded
    fp_path = out / ".synth_state" / "train" / "fingerprint.json"
    fgs, bgs = index_foregrounds(fg), index_backgrounds(raw / "bg")
    legacy = synthesis._fingerprint(kwargs["cfg"], 3, 0, fgs, bgs, raw / "bg", None, version=1)
    assert "names" not in legacy
    fp_path.write_text(json.dumps(legacy))
    with pytest.warns(UserWarning, match="older cartoonseg"):
        r = synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)
    assert r["new"] == 0 and json.loads(fp_path.read_text())["names"] == "relative"
    # ... and with a real difference it is still refused, naming only that difference
    fp_path.write_text(json.dumps(legacy))
    with pytest.raises(ValueError, match=r"different \['seed'\]"):
        synthesize_dataset(fg, raw / "bg", out, 2, **{**kwargs, "seed": 4})

    # top-level inputs: the basename check is as strong as the path check; resumed without a word
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in fgs:
        shutil.copy(p.path, flat / Path(p.path).name)
    out2 = tmp_path / "out2"
    synthesize_dataset(flat, raw / "bg", out2, 2, **kwargs)
    fp2 = out2 / ".synth_state" / "train" / "fingerprint.json"
    fp2.write_text(json.dumps(synthesis._fingerprint(kwargs["cfg"], 3, 0, index_foregrounds(flat), bgs, raw / "bg",
                                                     None, version=1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert synthesize_dataset(flat, raw / "bg", out2, 2, **kwargs)["new"] == 0


def test_resume_fingerprint_tells_apart_same_sized_foregrounds_swapped_between_sub_folders(raw, tmp_path):
    """Two foregrounds of one name and one byte size that swap sub-folders kept every (path, size) pair, so the
    run resumed and mixed samples of the old and the new pictures under the same fg_file. The fingerprint now also
    hashes each input's first and last 4 KiB (not its time stamp: a copied folder still resumes). A run started
    by the previous version (relative names, no content hash) resumes on its own check and is upgraded."""
    import warnings

    from PIL import Image

    from cartoonseg.data import synthesis

    fg = tmp_path / "fg"
    for rel, colour in (("a/x.png", (255, 0, 0, 255)), ("b/x.png", (0, 0, 255, 255))):
        (fg / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((60, 40, 4), colour, np.uint8)).save(fg / rel)
    a, b = fg / "a" / "x.png", fg / "b" / "x.png"
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    out = tmp_path / "out"
    kwargs = dict(cfg=SynthesisConfig(size=96, hist_match_prob=0.0, quantize_prob=0.0), seed=3, progress=False)
    synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)
    copy = tmp_path / "copy"
    shutil.copytree(fg, copy, copy_function=shutil.copyfile)  # new time stamps, same contents
    assert synthesize_dataset(copy, raw / "bg", out, 2, **kwargs)["new"] == 0
    a.rename(tmp_path / "swap.png")
    b.rename(a)
    (tmp_path / "swap.png").rename(b)
    with pytest.raises(ValueError, match=r"different \['foregrounds'\]"):
        synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)

    # the previous version's fingerprint (no "content"): resumed on that check without a warning, then upgraded
    fp_path = out / ".synth_state" / "train" / "fingerprint.json"
    fgs, bgs = index_foregrounds(fg), index_backgrounds(raw / "bg")
    previous = synthesis._fingerprint(kwargs["cfg"], 3, 0, fgs, bgs, raw / "bg", None, version=2)
    assert previous["names"] == "relative" and "content" not in previous
    fp_path.write_text(json.dumps(previous))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert synthesize_dataset(fg, raw / "bg", out, 2, **kwargs)["new"] == 0
    assert "content" in json.loads(fp_path.read_text())


def test_power_loss_leftovers_are_redone_and_the_run_state_is_flushed(raw, tmp_path, monkeypatch):
    """The fingerprint and the annotations are fsynced (file and folder) so a power loss cannot leave the one file a
    resume must read empty; images and records are not (cost), and a resume redoes a sample whose record or image a
    crash left empty (it used to count them done and write an annotation with an empty image, or fail reading it)."""
    from cartoonseg.data import synthesis

    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        with contextlib.suppress(OSError):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    kwargs = dict(cfg=SynthesisConfig(size=SIZE), seed=5, person_boxes=raw / "person_boxes.json", progress=False)
    ref = tmp_path / "ref"
    synthesize_dataset(raw / "fg", raw / "bg", ref, 3, workers=1, **kwargs)
    c = tmp_path / "c"
    monkeypatch.setattr(synthesis.os, "fsync", spy)
    synthesize_dataset(raw / "fg", raw / "bg", c, 3, workers=1, **kwargs)
    monkeypatch.undo()
    if Path("/proc/self/fd").is_dir():  # Linux: which files were flushed
        names = {Path(p).name for p in synced}
        assert any(n.startswith("fingerprint.json") for n in names) and "train" in names  # the file, then its folder
        assert any(n.startswith("det_train.json") for n in names) and "annotations" in names
        assert not any(n.endswith(".jpg") or n.startswith("00000") for n in names), names
    (c / ".synth_state" / "train" / "000000001.json").write_bytes(b"")  # renamed, never flushed
    (c / "train" / "000000000002.jpg").write_bytes(b"")
    r = synthesize_dataset(raw / "fg", raw / "bg", c, 3, workers=1, **kwargs)
    assert r["new"] == 2 and _snapshot(c) == _snapshot(ref)
