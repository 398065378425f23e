"""Danbooru foreground/background selection (cartoonseg.data.danbooru, train.filter_danbooru) on fake metadata."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image

from cartoonseg.data.danbooru import DanbooruFilter, filter_posts, iter_folder_posts, iter_metadata_posts
from cartoonseg.data.fixtures import draw_background, draw_character
from cartoonseg.data.foregrounds import index_foregrounds, load_foreground, read_tag_file


def _rgba_png(path, pad=30, seed=0):
    ch = draw_character(np.random.default_rng(seed), 200)
    ch = cv2.copyMakeBorder(ch, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0, 0))
    Image.fromarray(ch, "RGBA").save(path)
    return ch


def _bucket(root, post_id, ext):
    d = root / "original" / f"{post_id % 1000:04d}"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{post_id}.{ext}"


def test_metadata_selection_both_layouts(tmp_path):
    images = tmp_path / "danbooru"
    rng = np.random.default_rng(0)
    posts = []
    # 1001: good foreground, API layout (tag_string / tag_string_character)
    ch = _rgba_png(_bucket(images, 1001, "png"))
    posts.append({"id": "1001", "file_ext": "png", "tag_string": "1girl solo transparent_background hatsune_miku",
                  "tag_string_character": "hatsune_miku", "image_width": "180", "image_height": "180"})
    # 2002: Danbooru2021 dump layout (tags list with categories), good foreground
    _rgba_png(_bucket(images, 2002, "png"), seed=1)
    posts.append({"id": "2002", "file_ext": "png", "tags": [{"name": "solo", "category": "0"},
                  {"name": "transparent_background", "category": "0"}, {"name": "rem_(re:zero)", "category": "4"}]})
    # 3003: tagged transparent but fully opaque RGBA -> no real alpha
    Image.fromarray(np.dstack([rng.integers(0, 255, (100, 100, 3), dtype=np.uint8),
                               np.full((100, 100), 255, np.uint8)]), "RGBA").save(_bucket(images, 3003, "png"))
    posts.append({"id": "3003", "file_ext": "png", "tag_string": "solo transparent_background"})
    # 4004: RGB file -> rejected
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(_bucket(images, 4004, "png"))
    posts.append({"id": "4004", "file_ext": "png", "tag_string": "solo transparent_background"})
    # 5005: not solo -> ignored; 6006: missing file
    posts.append({"id": "5005", "file_ext": "png", "tag_string": "2girls transparent_background"})
    posts.append({"id": "6006", "file_ext": "png", "tag_string": "solo transparent_background"})
    # 7007: good background; 8008: background under the size floor; 9009: truncated background
    bg = draw_background(rng, 900, 700)
    Image.fromarray(bg).save(_bucket(images, 7007, "jpg"), quality=90)
    posts.append({"id": "7007", "file_ext": "jpg", "tag_string": "scenery no_humans sky", "image_width": 900,
                  "image_height": 700})
    Image.fromarray(bg[:300, :400]).save(_bucket(images, 8008, "jpg"))
    posts.append({"id": "8008", "file_ext": "jpg", "tag_string": "scenery no_humans"})
    good = _bucket(images, 7007, "jpg").read_bytes()
    _bucket(images, 9009, "jpg").write_bytes(good[: len(good) // 2])
    posts.append({"id": "9009", "file_ext": "jpg", "tag_string": "scenery no_humans", "image_width": 900,
                  "image_height": 700})
    meta = tmp_path / "posts.jsonl"
    meta.write_text("".join(json.dumps(p) + "\n" for p in posts))

    from train.filter_danbooru import main

    out = tmp_path / "out"
    assert main([str(meta), "--images", str(images), "--out", str(out)]) == 0
    fg_meta = [json.loads(line) for line in (out / "fg" / "meta.jsonl").read_text().splitlines()]
    assert [m["file"] for m in fg_meta] == ["1001.png", "2002.png"]
    assert fg_meta[0]["tag_string_character"] == "hatsune_miku" and "solo" in fg_meta[0]["tag_string"].split()
    assert fg_meta[1]["tag_string_character"] == "rem_(re:zero)"
    assert sorted(p.name for p in (out / "bg").glob("*.jpg")) == ["7007.jpg"]
    # auto-crop removed the 30 px transparent margin (original rule: crop when > 15 px larger)
    kept = load_foreground(out / "fg" / "1001.png", crop=False)
    assert kept.shape[0] < ch.shape[0] - 40
    # the synthesiser's index carries the tags
    infos = index_foregrounds(out / "fg")
    assert [i.tag_string_character for i in infos] == ["hatsune_miku", "rem_(re:zero)"]


def test_tag_folder_source(tmp_path):
    src = tmp_path / "tagged"
    src.mkdir()
    _rgba_png(src / "a.png")
    (src / "a.txt").write_text("solo, transparent background, long hair")
    Image.fromarray(draw_background(np.random.default_rng(1), 800, 650)).save(src / "b.jpg")
    (src / "b.txt").write_text("scenery no_humans")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(src / "untagged.png")
    posts = list(iter_folder_posts(src))
    assert [p.id for p in posts] == ["a", "b"]
    stats = filter_posts(posts, tmp_path / "out", DanbooruFilter())
    assert stats["fg"] == 1 and stats["bg"] == 1 and stats["seen"] == 2
    rules = DanbooruFilter(bg_min_short=700)
    assert filter_posts(iter_folder_posts(src), tmp_path / "out2", rules)["bg_rejected"] == 1


def _cli(capsys, argv):
    """Run train.filter_danbooru; returns (status, stderr, stdout) and checks that a failure is one ``error:``
    line."""
    from train.filter_danbooru import main

    status = main([str(a) for a in argv])
    cap = capsys.readouterr()
    if status != 0:
        assert "Traceback" not in cap.err and cap.err.startswith("error: ") and cap.err.count("\n") == 1, cap.err
    return status, cap.err, cap.out


def _tagged(folder, name, tags, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    _rgba_png(folder / f"{name}.png", seed=seed)
    (folder / f"{name}.txt").write_text(tags)
    return folder / f"{name}.png"


def test_output_policy_merges_metadata_and_keeps_earlier_outputs(tmp_path, capsys):
    from cartoonseg.data.fixtures import make_fixtures

    raw = tmp_path / "raw"
    make_fixtures(raw, 2, 1, seed=0, fg_height=(60, 80), bg_size=(120, 90))  # README step 0
    fixture_lines = (raw / "fg" / "meta.jsonl").read_text().splitlines()
    src = tmp_path / "tagged"
    _tagged(src, "p1", "solo transparent_background")
    assert _cli(capsys, [src, "--out", raw])[0] == 0  # README step 1b into the same raw/ folder
    lines = (raw / "fg" / "meta.jsonl").read_text().splitlines()
    assert lines[:2] == fixture_lines and [json.loads(x)["file"] for x in lines[2:]] == ["p1.png"]
    assert (raw / "fg" / "fg_00000.png").is_file() and (raw / "bg" / "bg_00000.jpg").is_file()
    # a rerun replaces its own file and line: nothing duplicated, nothing lost
    assert _cli(capsys, [src, "--out", raw])[0] == 0
    assert (raw / "fg" / "meta.jsonl").read_text().splitlines() == lines
    assert [i.tag_string for i in index_foregrounds(raw / "fg")][-1] == "solo transparent_background"
    # a file cartoonseg did not write in the output folder: refused up front, kept; --overwrite writes beside it
    (raw / "fg" / "mine.png").write_bytes(b"user data")
    status, err, _ = _cli(capsys, [src, "--out", raw])
    assert status == 2 and "mine.png" in err
    assert _cli(capsys, [src, "--out", raw, "--overwrite"])[0] == 0
    assert (raw / "fg" / "mine.png").read_bytes() == b"user data"


def test_output_overlapping_the_input_is_refused_and_nothing_is_written(tmp_path, capsys):
    fd2 = tmp_path / "fd2"
    p1 = _tagged(fd2 / "fg", "p1", "solo transparent_background")
    before = p1.read_bytes()
    status, err, _ = _cli(capsys, [fd2 / "fg", "--out", fd2])  # the input folder is the output's fg/
    assert status == 2 and "input" in err
    assert p1.read_bytes() == before and sorted(q.name for q in (fd2 / "fg").iterdir()) == ["p1.png", "p1.txt"]
    fd3 = tmp_path / "fd3"
    (fd3 / "bg").mkdir(parents=True)
    Image.fromarray(draw_background(np.random.default_rng(1), 800, 650)).save(fd3 / "bg" / "b.jpg")
    (fd3 / "bg" / "b.txt").write_text("scenery no_humans")
    status, err, _ = _cli(capsys, [fd3 / "bg", "--out", fd3])  # was shutil.SameFileError with a traceback
    assert status == 2 and "input" in err
    assert not (fd3 / "fg").exists()
    inner = tmp_path / "in"
    _tagged(inner, "p1", "solo transparent_background")
    assert _cli(capsys, [inner, "--out", inner / "out"])[0] == 2  # output inside the input folder


def test_clashing_folder_ids_get_distinct_names(tmp_path, capsys):
    src = tmp_path / "in"
    _tagged(src / "a", "b", "solo transparent_background", seed=1)
    _tagged(src, "a_b", "solo transparent_background", seed=2)
    posts = list(iter_folder_posts(src))
    assert len({p.id for p in posts}) == 2 and all(p.id.startswith("a_b-") for p in posts)
    assert [p.id for p in iter_folder_posts(src)] == [p.id for p in posts]  # stable
    out = tmp_path / "out"
    status, _, stdout = _cli(capsys, [src, "--out", out])
    assert status == 0 and json.loads(stdout)["fg"] == 2
    files = sorted(p.name for p in (out / "fg").glob("*.png"))
    meta = [json.loads(x)["file"] for x in (out / "fg" / "meta.jsonl").read_text().splitlines()]
    assert len(files) == 2 and sorted(meta) == files


@pytest.mark.parametrize("option", ["--bg-min-short", "--bg-min-long", "--max-fg", "--max-bg"])
def test_negative_counts_are_one_line_before_any_work(tmp_path, capsys, option):
    from train.filter_danbooru import main

    assert main([str(tmp_path / "no-such-metadata"), "--out", str(tmp_path / "o"), option, "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} must be >= 0") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="must be"):
        DanbooruFilter(**{option[2:].replace("-", "_"): -1})


def _good_post(images, post_id=1001):
    _rgba_png(_bucket(images, post_id, "png"))
    return json.dumps({"id": post_id, "file_ext": "png", "tag_string": "solo transparent_background"}) + "\n"


def test_a_wrong_images_folder_is_an_error_not_an_empty_success(tmp_path, capsys):
    images = tmp_path / "danbooru"
    meta = tmp_path / "posts.jsonl"
    meta.write_text(_good_post(images))
    out = tmp_path / "out"
    status, err, _ = _cli(capsys, [meta, "--images", tmp_path / "danboru", "--out", out])  # a typo: was status 0
    assert status == 2 and "image folder not found" in err and str(tmp_path / "danboru") in err
    assert not out.exists()
    status, err, _ = _cli(capsys, [meta, "--images", meta, "--out", out])
    assert status == 2 and "expected a folder" in err


@pytest.mark.parametrize("line, match", [
    ("42", "JSON int, not an object"),
    ('"id"', "JSON str, not an object"),  # was an AttributeError traceback
    ('{"id": null, "tag_string": "solo"}', "'id' must be"),  # was read as post "None"
    ('{"id": "", "tag_string": "solo"}', "'id' must be"),
    ('{"id": "../1001", "tag_string": "solo"}', "'id' must be"),
    ('{"id": 7, "tag_string": {"solo": 1}}', "line 2 .*tag string or a list"),
])
def test_malformed_metadata_lines_are_one_line_errors_naming_the_line(tmp_path, capsys, line, match):
    images = tmp_path / "danbooru"
    meta = tmp_path / "posts.jsonl"
    meta.write_text(_good_post(images) + line + "\n")
    status, err, _ = _cli(capsys, [meta, "--images", images, "--out", tmp_path / "out"])
    assert status == 2 and str(meta) in err
    assert re.search(match, err), err


def test_metadata_layouts_bom_tag_lists_and_odd_sizes(tmp_path, capsys):
    images = tmp_path / "danbooru"
    lines = [_good_post(images, 1001).strip()]
    _rgba_png(_bucket(images, 2002, "png"), seed=1)
    lines.append(json.dumps({"id": 2002, "tags": "solo transparent_background", "image_width": "12.0"}))  # a string
    _rgba_png(_bucket(images, 3003, "png"), seed=2)
    lines.append(json.dumps({"id": "3003", "tag_string": ["solo", "transparent_background"], "image_width": "n/a",
                             "tag_string_character": ["miku"]}))
    meta = tmp_path / "posts.jsonl"
    meta.write_bytes(("\n".join(lines) + "\n").encode("utf-8-sig"))  # saved with a byte-order mark
    posts = list(iter_metadata_posts(meta, images))
    assert [(p.id, p.width) for p in posts] == [("1001", 0), ("2002", 12), ("3003", 0)]
    assert posts[1].tags == ("solo", "transparent_background") and posts[2].characters == ("miku",)
    status, _, stdout = _cli(capsys, [meta, "--images", images, "--out", tmp_path / "out"])
    assert status == 0 and json.loads(stdout)["fg"] == 3


def test_tag_files_with_a_byte_order_mark_keep_their_first_tag(tmp_path):
    src = tmp_path / "tagged"
    _tagged(src, "a", "solo, transparent background")
    (src / "a.txt").write_bytes("\ufeffsolo, transparent background".encode("utf-8"))  # Windows Notepad
    assert read_tag_file(src / "a.txt") == ["solo", "transparent_background"]
    assert filter_posts(iter_folder_posts(src), tmp_path / "out")["fg"] == 1


def test_a_tag_folder_with_a_stray_json_file_is_still_a_tag_folder(tmp_path, capsys):
    src = tmp_path / "tagged"
    _tagged(src, "a", "solo transparent_background")
    (src / "notes.json").write_text("{}")
    status, _, stdout = _cli(capsys, [src, "--out", tmp_path / "out"])  # was "--images DIR is required"
    assert status == 0 and json.loads(stdout)["fg"] == 1
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    (meta_dir / "posts.json").write_text("{}\n")
    status, err, _ = _cli(capsys, [meta_dir, "--out", tmp_path / "out2"])
    assert status == 2 and "--images" in err
    plain = tmp_path / "plain"
    _tagged(plain, "b", "solo transparent_background")
    status, err, _ = _cli(capsys, [plain, "--images", meta_dir, "--out", tmp_path / "out3"])
    assert status == 2 and "no .json/.jsonl" in err


def test_reading_stops_once_both_limits_are_reached(tmp_path):
    src = tmp_path / "tagged"
    for i in range(3):
        _tagged(src, f"p{i}", "solo transparent_background", seed=i)
    read = []

    def posts():  # stands for millions of metadata lines
        for post in iter_folder_posts(src):
            read.append(post.id)
            yield post

    stats = filter_posts(posts(), tmp_path / "out", DanbooruFilter(max_fg=1, max_bg=0))
    assert stats["fg"] == 1 and read == ["p0"]  # was: every post read after the limits were reached
    read.clear()
    assert filter_posts(posts(), tmp_path / "out2", DanbooruFilter(max_fg=0, max_bg=0))["seen"] == 0 and read == []
    read.clear()
    assert filter_posts(posts(), tmp_path / "out3", DanbooruFilter(max_fg=1))["fg"] == 1 and len(read) == 3


def test_image_files_are_looked_up_only_for_posts_whose_tags_can_be_selected(tmp_path, monkeypatch):
    """A dump has millions of posts, mostly of other tags: each used to cost up to three look-ups on disk (network
    storage, minutes). With ``rules`` (as ``train.filter_danbooru`` passes them) only selectable posts are looked up;
    without, every post's path is its file as before."""
    import pathlib

    images = tmp_path / "danbooru"
    lines = [_good_post(images, 1001)]  # a foreground with its file
    lines.append(json.dumps({"id": 1002, "file_ext": "jpg", "tag_string": "scenery no_humans"}) + "\n")  # no file
    for i in range(40):  # posts no rule selects, with or without a file on disk
        pid = 5000 + i
        if i % 2:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(_bucket(images, pid, "png"))
        tags = ["1girl solo", "scenery", "transparent_background", "no_humans", ""][i % 5]
        lines.append(json.dumps({"id": pid, "file_ext": "png", "tag_string": tags}) + "\n")
    meta = tmp_path / "posts.jsonl"
    meta.write_text("".join(lines))
    posts = list(iter_metadata_posts(meta, images))
    assert [p.path for p in posts[:3]] == [_bucket(images, 1001, "png"), None, None]
    assert posts[3].path == _bucket(images, 5001, "png") and posts[4].path is None  # without rules: as before
    looked_up = []
    stat = pathlib.Path.stat

    def counting_stat(self, *args, **kwargs):
        if images in self.parents:
            looked_up.append(self.stem)
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", counting_stat)
    rules = DanbooruFilter()
    stats = filter_posts(iter_metadata_posts(meta, images, rules=rules), tmp_path / "out", rules)
    assert (stats["seen"], stats["fg"], stats["bg"], stats["missing"]) == (42, 1, 0, 1)
    assert set(looked_up) == {"1001", "1002"}, looked_up


def test_skip_bad_lines_skips_counts_and_reports_malformed_lines(tmp_path, capsys):
    """A dump with a few damaged lines (bad JSON, no id, a non-UTF-8 byte) stops at the first by default, naming it;
    with --skip-bad-lines those lines are skipped, the good posts around them selected, and the count reported
    (bad_lines in the summary, the first named on stderr)."""
    images = tmp_path / "danbooru"
    _rgba_png(_bucket(images, 2002, "png"), seed=1)
    good2 = json.dumps({"id": 2002, "file_ext": "png", "tag_string": "solo transparent_background"}) + "\n"
    meta = tmp_path / "posts.jsonl"
    meta.write_bytes((_good_post(images) + '{"id": 5, "tag_string": \n' + '{"tag_string": "solo"}\n').encode()
                     + b'{"id": 6, "tag_string": "solo \xff"}\n' + good2.encode())
    status, err, _ = _cli(capsys, [meta, "--images", images, "--out", tmp_path / "strict"])
    assert status == 2 and f"{meta} line 2 is not valid JSON" in err
    status, err, stdout = _cli(capsys, [meta, "--images", images, "--out", tmp_path / "out", "--skip-bad-lines"])
    stats = json.loads(stdout)
    assert status == 0 and stats["bad_lines"] == 3 and stats["fg"] == 2 and stats["seen"] == 2
    assert err.startswith("warning: skipped 3 malformed metadata line(s); the first: ") and f"{meta} line 2" in err
    seen = []
    posts = list(iter_metadata_posts(meta, images, on_bad_line=seen.append))
    assert [p.id for p in posts] == ["1001", "2002"]
    assert [m.split(" line ")[1][:1] for m in seen] == ["2", "3", "4"]
    assert "line 4 is not valid UTF-8" in seen[2]  # was a decoder error naming neither file nor line
    # an option without meaning for a tag folder is refused, not ignored
    status, err, _ = _cli(capsys, [tmp_path / "danbooru", "--out", tmp_path / "out2", "--skip-bad-lines"])
    assert status == 2 and "--skip-bad-lines" in err


def test_a_failure_before_the_first_write_leaves_no_new_folders(tmp_path, capsys):
    """The fg/bg folders are opened before the metadata is read; a bad first line used to leave OUT/fg and OUT/bg
    behind, empty (OutputFolder.abort, the failure path of ``with``, now removes what the call made)."""
    images = tmp_path / "danbooru"
    images.mkdir()
    meta = tmp_path / "posts.jsonl"
    meta.write_text("42\n")
    status, err, _ = _cli(capsys, [meta, "--images", images, "--out", tmp_path / "out"])
    assert status == 2 and str(meta) in err
    assert not (tmp_path / "out").exists()
