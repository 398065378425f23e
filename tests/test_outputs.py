"""The output policy (cartoonseg/outputs.py, issue 22 items 1-3): never write over an input, never replace or write
into what cartoonseg did not write without ``--overwrite``, unique stable names, atomic writes, reruns replace their
own outputs completely, interrupted runs leave no half result and no orphans after the next run. Library-level
tests first, then the exact CLI scenarios of the issue (segment, convert)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _comfy_stub import write_tiny_released_weights
from PIL import Image

from cartoonseg import outputs
from cartoonseg.__main__ import main
from cartoonseg.io import write_image
from cartoonseg.outputs import MANIFEST, OutputError, OutputFolder, unique_names

ROOT = Path(__file__).resolve().parents[1]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if "cartoonseg-tmp" in p.name or "cartoonseg-old" in p.name]


# ------------------------------------------------------------------------------------------ 1. inputs
def test_an_input_is_never_written_over_not_even_with_overwrite(tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    src.write_bytes(b"user image")
    (tmp_path / "hard.png").hardlink_to(src)
    (tmp_path / "link.png").symlink_to(src)
    spellings = [src, tmp_path / "in" / ".." / "in" / "a.png", tmp_path / "hard.png", tmp_path / "link.png"]
    for dst in spellings:
        for overwrite in (False, True):
            with pytest.raises(OutputError, match="input"):
                outputs.write_bytes(dst, b"result", inputs=[src], overwrite=overwrite)
    assert src.read_bytes() == b"user image"
    # a result folder that holds an input is never replaced either
    with pytest.raises(OutputError, match="holds an input"):
        with outputs.result_dir(tmp_path / "in", inputs=[src], overwrite=True):
            pass
    assert src.read_bytes() == b"user image" and names(tmp_path / "in") == ["a.png"]


# ----------------------------------------------------------------------------------- 2. foreign files
def test_a_foreign_file_is_replaced_only_with_overwrite(tmp_path):
    dst = tmp_path / "depth.png"
    dst.write_bytes(b"the user's file")
    with pytest.raises(OutputError, match="did not write"):
        outputs.write_bytes(dst, b"ours")
    assert dst.read_bytes() == b"the user's file" and names(tmp_path) == ["depth.png"]
    outputs.write_bytes(dst, b"ours", overwrite=True)
    assert dst.read_bytes() == b"ours"
    outputs.write_bytes(dst, b"ours again")  # now it is ours: a rerun replaces it without --overwrite
    assert dst.read_bytes() == b"ours again" and names(tmp_path) == [MANIFEST, "depth.png"]


def test_an_edited_output_becomes_the_users(tmp_path):
    dst = tmp_path / "out.json"
    outputs.write_json(dst, {"v": 1})
    dst.write_text('{"v": 1, "my notes": "keep"}')
    with pytest.raises(OutputError, match="did not write"):
        outputs.write_json(dst, {"v": 2})
    assert "my notes" in dst.read_text()


def test_a_forged_or_corrupt_manifest_claims_nothing(tmp_path):
    user = tmp_path / "x.png"
    user.write_bytes(b"user")
    (tmp_path / MANIFEST).write_text(json.dumps({"files": {"x.png": {"stat": [1, 2]}}}))
    with pytest.raises(OutputError):
        outputs.write_bytes(user, b"ours")
    (tmp_path / MANIFEST).write_text("{" * 100000)
    with pytest.raises(OutputError):
        outputs.write_bytes(user, b"ours")
    assert user.read_bytes() == b"user"


def test_a_planted_symlink_is_never_written_through(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlay.png").symlink_to(secret)
    with pytest.raises(OutputError):
        outputs.write_bytes(out / "overlay.png", b"ours")
    outputs.write_bytes(out / "overlay.png", b"ours", overwrite=True)
    assert secret.read_text() == "keep" and not (out / "overlay.png").is_symlink()


def test_an_output_folder_must_be_new_empty_or_ours(tmp_path):
    user = tmp_path / "pics"
    user.mkdir()
    (user / "page.png").write_bytes(b"user")
    with pytest.raises(OutputError, match="did not write.*page.png"):
        OutputFolder(user)
    with OutputFolder(tmp_path / "new") as out:  # new: created and claimed
        out.write_bytes("a.txt", b"1")
    with OutputFolder(tmp_path / "new") as out:  # ours: reusable without --overwrite
        out.write_bytes("b.txt", b"2")
    (tmp_path / "empty").mkdir()
    OutputFolder(tmp_path / "empty").close()
    # --overwrite: the user's files stay (never deleted), only same-named outputs replace them
    with OutputFolder(user, overwrite=True) as out:
        with out.result_dir("page") as res:
            res.write_bytes("mask.png", b"m")
    assert (user / "page.png").read_bytes() == b"user" and names(user / "page") == [MANIFEST, "mask.png"]


# ------------------------------------------------------------------------------------------ 3. names
def test_unique_stable_names():
    inputs = ["a/x.png", "b/x.jpg", "c/x_1.png"]
    got = unique_names(inputs)
    assert len(set(got)) == 3 and got[2] == "x_1" and all(n.startswith("x-") for n in got[:2])
    assert unique_names(inputs) == got  # stable
    assert unique_names(["b/x.jpg", "a/x.png", "c/x_1.png"]) == [got[1], got[0], got[2]]  # order-independent names
    # case-insensitive file systems: X.png and x.png must not share a folder
    assert len({n.casefold() for n in unique_names(["a/X.png", "b/x.png"])}) == 2
    # the same file twice maps to one name; reserved names are avoided
    assert unique_names(["a/x.png", "a/../a/x.png"]) == ["x", "x"]
    assert unique_names(["a/overlay.png"], reserved=["overlay"])[0] != "overlay"
    # a generated name never equals another input's literal stem
    hashed = unique_names(["a/x.png", "b/x.png"])[0]
    assert len(set(unique_names(["a/x.png", "b/x.png", f"c/{hashed}.png"]))) == 3



def test_long_and_own_stems_get_names_that_fit():
    """A stem over MAX_STEM_BYTES is cut (at a character boundary) and hashed, so a command's suffixes still fit the
    255-byte limit; a stem that is this module's own manifest or temporary name gets another one."""
    long = "x" * 250
    got = unique_names([f"a/{long}.png", f"a/{long}.jpg", f"a/{'é' * 200}.png"])
    assert len(set(got)) == 3 and all(len(n.encode()) <= outputs.MAX_STEM_BYTES + 9 for n in got)
    assert got[2].startswith("é" * 70) and got[2].encode().decode() == got[2]  # no character cut in two
    own = unique_names([f"a/{MANIFEST}.png", "a/.cartoonseg-tmp-abcdef-1-abcdef-x.png"])
    assert all(n.startswith("_cartoonseg-") for n in own) and len(set(own)) == 2


def test_long_and_own_stems_can_be_written(tmp_path):
    srcs = [tmp_path / f"{'x' * 250}.png", tmp_path / f"{'x' * 250}.jpg", tmp_path / f"{MANIFEST}.png"]
    with OutputFolder(tmp_path / "o", inputs=srcs) as out:
        for name in unique_names(srcs):
            with out.result_dir(name) as res:
                res.write_bytes("overlay.png", b"x")
            out.write_json(f"{name}_style.json", {})
    assert len(list((tmp_path / "o").glob("*/overlay.png"))) == 3

# -------------------------------------------------------------------------------- 4./5. atomic + rerun
def test_result_folder_rerun_replaces_everything_and_failure_keeps_the_old(tmp_path):
    with OutputFolder(tmp_path / "o") as out:
        with out.result_dir("x") as res:
            for i in range(3):
                res.write_bytes(f"mask_{i:03d}.png", b"old")
    with OutputFolder(tmp_path / "o") as out:
        with out.result_dir("x") as res:
            res.write_bytes("mask_000.png", b"new")
    assert names(tmp_path / "o" / "x") == [MANIFEST, "mask_000.png"]
    with pytest.raises(RuntimeError, match="boom"):
        with OutputFolder(tmp_path / "o") as out:
            with out.result_dir("x") as res:
                res.write_bytes("mask_000.png", b"half")
                raise RuntimeError("boom")
    assert (tmp_path / "o" / "x" / "mask_000.png").read_bytes() == b"new" and no_temporaries(tmp_path)



def test_a_command_failing_before_its_first_write_leaves_no_folder_it_made(tmp_path):
    """A bad option found after the output folder was opened (e.g. a segmenter setting checked after the folder)
    used to leave an empty folder behind, and its missing parents; now only folders that existed or hold outputs
    stay."""
    with pytest.raises(RuntimeError, match="boom"):
        with OutputFolder(tmp_path / "new" / "deep" / "o"):
            raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        with OutputFolder(tmp_path / "kept" / "o"):
            raise RuntimeError("boom")
    assert names(tmp_path / "kept") == []  # the user's folder stays, the one made inside it goes
    with pytest.raises(RuntimeError, match="boom"):
        with OutputFolder(tmp_path / "half") as out:
            out.write_bytes("a.txt", b"a")
            raise RuntimeError("boom")
    assert names(tmp_path / "half") == [MANIFEST, "a.txt"]  # what was written stays, recorded as ours
    # through a command: segment with an unreadable weights file fails after opening its --out
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    assert main(["segment", str(image), "--out", str(tmp_path / "res"), "--detector", str(tmp_path / "bad.safetensors"),
                 "--refiner", "none"]) == 2
    assert not (tmp_path / "res").exists()


def test_a_folder_of_other_outputs_is_not_replaced_as_one_result(tmp_path):
    """A folder that holds other cartoonseg outputs (here segment-style per-image folders and a loose file) is not an
    earlier result folder: swapping a result in over it would delete them. Refused without overwrite (up front by
    check_folder(whole=True) too); with it the result is written into the folder and the others are kept."""
    res_dir = tmp_path / "res"
    with OutputFolder(res_dir) as out:
        for n in ("a", "b"):
            with out.result_dir(n) as r:
                r.write_bytes("mask_000.png", b"seg")
        out.write_bytes("summary.json", b"{}")
    outputs.check_folder(res_dir)  # fine as a folder to write results into
    with pytest.raises(OutputError, match="not an earlier result folder"):
        outputs.check_folder(res_dir, whole=True)
    with pytest.raises(OutputError, match="not an earlier result folder"):
        with outputs.result_dir(res_dir) as r:
            r.write_bytes("frame_000.png", b"kb")
    assert names(res_dir) == [MANIFEST, "a", "b", "summary.json"]
    with outputs.result_dir(res_dir, overwrite=True) as r:
        r.write_bytes("frame_000.png", b"kb")
    assert names(res_dir) == [MANIFEST, "a", "b", "frame_000.png", "summary.json"]
    assert (res_dir / "a" / "mask_000.png").read_bytes() == b"seg"
    # an earlier result folder (marked in its manifest, kept by later writes) is swapped whole, as before
    frames = tmp_path / "frames"
    with outputs.result_dir(frames) as r:
        r.write_bytes("frame_000.png", b"1")
        r.write_bytes("frame_001.png", b"1")
    outputs.write_bytes(frames / "note.txt", b"ours too")
    outputs.check_folder(frames, whole=True)
    with outputs.result_dir(frames) as r:
        r.write_bytes("frame_000.png", b"2")
    assert names(frames) == [MANIFEST, "frame_000.png"]


def test_kenburns_refuses_a_folder_of_segment_results(tmp_path, capsys):
    src = image(tmp_path / "img.png")
    depth = tmp_path / "depth.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))).save(depth)
    res_dir = tmp_path / "res"
    with OutputFolder(res_dir) as out:
        with out.result_dir("img") as r:
            r.write_bytes("mask_000.png", b"seg")
    code, err = run(["kenburns", src, "--depth", depth, "--size", "32", "--frames", "2", "--out", res_dir], capsys)
    assert code == 2 and "not an earlier result folder" in err
    assert "img" in names(res_dir) and (res_dir / "img" / "mask_000.png").read_bytes() == b"seg"

def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.output_file(tmp_path / "a.png") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError
    assert not (tmp_path / "a.png").exists() and no_temporaries(tmp_path)
    outputs.write(tmp_path / "a.png", write_image, np.zeros((4, 5, 3), np.uint8))  # temp keeps the suffix: PNG
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG" and im.size == (5, 4)


def test_grouped_outputs_drop_stale_members(tmp_path):
    with OutputFolder(tmp_path) as out:
        out.write_bytes("p_style.png", b"1", group="p")
        out.write_bytes("p_global.png", b"1", group="p")
        out.write_bytes("q_style.png", b"1", group="q")
    with OutputFolder(tmp_path) as out:
        out.write_bytes("p_style.png", b"2", group="p")
    assert names(tmp_path) == [MANIFEST, "p_style.png", "q_style.png"]


_KILLED_WRITER = """
import os, signal, sys
from cartoonseg import outputs
target = sys.argv[1]
if sys.argv[2] == "file":
    with outputs.output_file(target) as tmp:
        tmp.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
with outputs.result_dir(target) as res:
    res.write_bytes("mask_000.png", b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_run_leaves_no_result_and_the_next_run_removes_its_orphans(tmp_path, kind):
    target = tmp_path / ("out.png" if kind == "file" else "frames")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target), kind], env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and not no_temporaries(tmp_path)  # the orphan is there, nothing under the final name
    outputs.write_bytes(tmp_path / "other.txt", b"next run")  # any later write into the folder cleans up
    assert no_temporaries(tmp_path) and not target.exists()


# ------------------------------------------------------------------------------- the CLI cases
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_tiny_released_weights(tmp_path_factory.mktemp("models")) / "cartoonseg"


@pytest.fixture(scope="module")
def cli(weights):
    """Detector only, exact path (no fusing): the policy does not depend on the networks, so keep the runs cheap."""
    return ["--detector", str(weights / "rtmdetl_e60.ckpt"), "--refiner", "none", "--exact",
            "--no-download", "--det-size", "64", "--score-thr", "0"]


def run(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_segment_never_writes_over_its_input(tmp_path, cli, capsys):
    src = image(tmp_path / "overlay" / "overlay.png")
    before = src.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = run(["segment", src, "--out", tmp_path, *cli, *extra], capsys)
        assert code == 2 and err.startswith("error:") and "overlay" in err, err
    assert src.read_bytes() == before


def test_segment_into_a_user_folder_needs_overwrite_and_keeps_user_files(tmp_path, cli, capsys):
    pics = tmp_path / "pics"
    src = image(pics / "page.png")
    (pics / "page").mkdir()
    (pics / "page" / "overlay.png").write_bytes(b"user's overlay")
    (pics / "page" / "notes.txt").write_bytes(b"user's notes")
    code, err = run(["segment", pics, "--out", pics, *cli], capsys)
    assert code == 2 and "--overwrite" in err, err
    assert (pics / "page" / "overlay.png").read_bytes() == b"user's overlay"
    before = src.read_bytes()
    assert run(["segment", pics, "--out", pics, *cli, "--overwrite"], capsys)[0] == 0
    assert src.read_bytes() == before and (pics / "page" / "notes.txt").read_bytes() == b"user's notes"
    assert json.loads((pics / "page" / "instances.json").read_text())["source"] == str(src)
    # what it wrote in place is recorded as ours: the user's notes stay foreign, our overlay/masks are claimed
    manifest = json.loads((pics / "page" / MANIFEST).read_text())["files"]
    assert "overlay.png" in manifest and "instances.json" in manifest and "notes.txt" not in manifest


def test_segment_rerun_leaves_no_stale_masks(tmp_path, cli, capsys):
    src = image(tmp_path / "a.png")
    out = tmp_path / "o"
    assert run(["segment", src, "--out", out, *cli, "--max-instances", "3"], capsys)[0] == 0
    assert len(list((out / "a").glob("mask_*.png"))) == 3
    assert run(["segment", src, "--out", out, *cli, "--max-instances", "1"], capsys)[0] == 0
    assert names(out / "a") == [MANIFEST, "instances.json", "mask_000.png", "overlay.png"]
    assert no_temporaries(out)


def test_segment_colliding_stems_get_distinct_folders(tmp_path, cli, capsys):
    srcs = [image(tmp_path / "a" / "x.png", 0), image(tmp_path / "b" / "x.jpg", 1), image(tmp_path / "c" / "x_1.png", 2)]
    out = tmp_path / "o"
    assert run(["segment", *srcs, "--out", out, *cli, "--max-instances", "1"], capsys)[0] == 0
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 3
    assert sorted(json.loads((f / "instances.json").read_text())["source"] for f in folders) == sorted(map(str, srcs))


def test_convert_refuses_its_source_and_non_safetensors_names(tmp_path, weights, capsys):
    src = tmp_path / "d.ckpt"
    src.write_bytes((weights / "rtmdetl_e60.ckpt").read_bytes())
    before = src.read_bytes()
    code, err = run(["convert", src, src], capsys)
    assert code == 2 and "input" in err and src.read_bytes() == before
    code, err = run(["convert", src, tmp_path / "y.pt"], capsys)
    assert code == 2 and ".safetensors" in err and not (tmp_path / "y.pt").exists()
    dst = tmp_path / "d.safetensors"
    assert run(["convert", src, dst], capsys)[0] == 0
    assert run(["convert", src, dst], capsys)[0] == 0  # our own output: a rerun replaces it
    import cartoonseg

    assert cartoonseg.load_detector(dst).config.widen_factor > 0
    user = tmp_path / "user.safetensors"
    user.write_bytes(b"not ours")
    code, err = run(["convert", src, user], capsys)
    assert code == 2 and "--overwrite" in err and user.read_bytes() == b"not ours"
    assert run(["convert", src, user, "--overwrite"], capsys)[0] == 0


# ------------------------------------------------------------------------------- the other writing commands
def test_inpaint_and_depth_pool_outputs_follow_the_policy(tmp_path, capsys):
    src = image(tmp_path / "img.png")
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((10, 10), 255, np.uint8), ((15, 15), (23, 23)))).save(mask)
    before = src.read_bytes(), mask.read_bytes()
    base = ["inpaint", src, mask, "--method", "telea"]
    for dst in (src, mask):
        code, err = run([*base, "--out", dst, "--overwrite"], capsys)
        assert code == 2 and "input" in err, err
    assert (src.read_bytes(), mask.read_bytes()) == before
    user = tmp_path / "user.png"
    user.write_bytes(b"user")
    code, err = run([*base, "--out", user], capsys)
    assert code == 2 and "--overwrite" in err and user.read_bytes() == b"user"
    assert run([*base, "--out", tmp_path / "filled.png"], capsys)[0] == 0
    assert run([*base, "--out", tmp_path / "filled.png"], capsys)[0] == 0  # a rerun replaces its own output
    # depth-pool: its two outputs must differ, and neither may be an input
    depth = tmp_path / "depth.png"
    Image.fromarray(np.full((40, 56), 128, np.uint8)).save(depth)
    pool = ["depth-pool", depth, "--masks", mask]
    code, err = run([*pool, "--out", tmp_path / "p.png", "--json", tmp_path / "p.png"], capsys)
    assert code == 2 and "same file" in err
    code, err = run([*pool, "--out", tmp_path / "p.png", "--json", mask], capsys)
    assert code == 2 and "input" in err and mask.read_bytes() == before[1]
    assert run([*pool, "--out", tmp_path / "p.png", "--json", tmp_path / "p.json"], capsys)[0] == 0
    assert json.loads((tmp_path / "p.json").read_text())["mode"] == "mean"
    assert no_temporaries(tmp_path)


def test_kenburns_frame_folder_is_one_result(tmp_path, capsys):
    src = image(tmp_path / "img.png")
    depth = tmp_path / "depth.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 56).astype(np.uint8), (40, 1))).save(depth)
    frames = tmp_path / "frames"
    base = ["kenburns", src, "--depth", depth, "--camera", "zoom-in", "--size", "32", "--out", frames]
    assert run([*base, "--frames", "4"], capsys)[0] == 0
    assert len(list(frames.glob("frame_*.png"))) == 4
    assert run([*base, "--frames", "2"], capsys)[0] == 0  # no frames of the longer clip are left behind
    assert len(list(frames.glob("frame_*.png"))) == 2 and len(list(frames.glob("disocclusion_*.png"))) == 2
    (frames / "keep.txt").write_text("user")
    code, err = run([*base, "--frames", "2"], capsys)
    assert code == 2 and "keep.txt" in err
    code, err = run(["kenburns", src, "--depth", depth, "--out", tmp_path, "--overwrite"], capsys)
    assert code == 2 and "input" in err and src.is_file()
    code, err = run(["kenburns", src, "--depth", depth, "--out", tmp_path / "clip.gif"], capsys)
    assert code == 2 and ".webp" in err


def test_training_exports_and_synthesis_never_take_over_user_files(tmp_path):
    from cartoonseg.data.synthesis import synthesize_dataset

    user = tmp_path / "raw"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no dataset synthesis run"):
        synthesize_dataset([], [], user, 0, progress=False)
    assert names(user) == ["notes.txt"]
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    from train.dump_predictions import main as dump_main

    # --out naming the ground truth: refused before any work
    assert dump_main(["--data", str(gt), "--detector", str(tmp_path / "d.ckpt"), "--out", str(gt)]) == 2
    assert gt.read_text() == "{}"


def test_a_kill_between_manifest_and_rename_leaves_our_earlier_output_ours(tmp_path, monkeypatch):
    """The manifest names the new file before the rename; until the rename the earlier output it replaces stays
    vouched for, so an interrupted rerun can be run again without --overwrite."""
    with OutputFolder(tmp_path / "out") as out:
        out.write_text("r.txt", "first run")
    real = os.replace

    def killed(src, dst):
        if Path(dst).name == "r.txt":
            raise KeyboardInterrupt  # the process dies here
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(tmp_path / "out") as out:
            out.write_text("r.txt", "second run, longer")
    monkeypatch.undo()
    assert (tmp_path / "out" / "r.txt").read_text() == "first run"
    outputs.check_file(tmp_path / "out" / "r.txt")  # still ours: no --overwrite needed
    with OutputFolder(tmp_path / "out") as out:
        out.write_text("r.txt", "third run")
    assert (tmp_path / "out" / "r.txt").read_text() == "third run"
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert "prev" not in manifest["files"]["r.txt"]


def test_a_symlinked_spelling_of_one_file_is_that_file(tmp_path):
    """Two spellings of one file (through a symlinked folder) get one result name and count as the same output."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.png").write_bytes(b"x")
    (tmp_path / "in2").symlink_to(tmp_path / "in", target_is_directory=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "p.png").write_bytes(b"y")
    names = unique_names([tmp_path / "in" / "p.png", tmp_path / "in2" / "p.png", tmp_path / "other" / "p.png"])
    assert names[0] == names[1] != names[2]
    assert unique_names([tmp_path / "in" / "p.png", tmp_path / "in2" / "p.png"]) == ["p", "p"]
    with pytest.raises(OutputError, match="same file"):
        outputs.check_distinct(tmp_path / "in" / "out.png", tmp_path / "in2" / "out.png")


_CHILD = r"""
import sys, time
from pathlib import Path
from cartoonseg.outputs import OutputFolder
folder, sync, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
out = OutputFolder(folder, check_foreign=False)
(sync / ("ready-" + names[0])).touch()
while not (sync / ("go-" + names[0])).exists():
    time.sleep(0.01)
for name in names:
    out.write_bytes(name, name.encode())
out.close()
"""


def _children(folder: Path, sync: Path, groups: list[list[str]]) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return [subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(sync), *names_], env=env)
            for names_ in groups]


def _wait_for(path: Path, procs: list[subprocess.Popen]) -> None:
    import time

    for _ in range(6000):
        if path.exists():
            return
        assert all(p.poll() is None for p in procs), "a writer died before it was ready"
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_two_commands_writing_one_folder_at_once_keep_each_others_manifest_entries(tmp_path):
    """Two processes open one folder, then write different files into it one after the other: the second manifest
    write used to replace the first one's entries with its own (read at open), so a rerun of the first refused to
    overwrite its own file. Real processes, a fixed interleaving; then four writers racing freely."""
    out, sync = tmp_path / "out", tmp_path / "sync"
    out.mkdir()
    sync.mkdir()
    procs = _children(out, sync, [["a.png"], ["b.png"]])
    for name in ("a.png", "b.png"):
        _wait_for(sync / f"ready-{name}", procs)
    (sync / "go-a.png").touch()
    assert procs[0].wait(timeout=120) == 0
    (sync / "go-b.png").touch()
    assert procs[1].wait(timeout=120) == 0
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(manifest) == ["a.png", "b.png"]
    outputs.check_file(out / "a.png")  # the first command's rerun may replace its own file
    outputs.write_bytes(out / "a.png", b"again")
    assert names(out) == [MANIFEST, "a.png", "b.png"]  # the lock is gone again

    free = tmp_path / "free"
    free.mkdir()
    groups = [[f"w{w}_{i}.txt" for i in range(12)] for w in range(4)]
    procs = _children(free, sync, groups)
    for g in groups:
        _wait_for(sync / f"ready-{g[0]}", procs)
    for g in groups:
        (sync / f"go-{g[0]}").touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    manifest = json.loads((free / MANIFEST).read_text())["files"]
    assert sorted(manifest) == sorted(n for g in groups for n in g)
    assert not outputs._foreign(free)


def test_a_stale_manifest_lock_is_broken_and_never_counts_as_foreign(tmp_path):
    """A lock left by a killed writer (dead pid of this host) is broken at once; while present it is not foreign."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / outputs._LOCK
    lock.write_text(f"{outputs._HOST}-{dead.pid}-0123abcd")
    assert not outputs._foreign(tmp_path)
    outputs.check_folder(tmp_path)
    outputs.write_bytes(tmp_path / "x.txt", b"x")
    assert names(tmp_path) == [MANIFEST, "x.txt"]
    lock.write_text("someone-else")
    old = os.path.getmtime(lock) - 2 * outputs._LOCK_STALE_S
    os.utime(lock, (old, old))  # another host's lock, left long ago
    outputs.write_bytes(tmp_path / "y.txt", b"y")
    assert names(tmp_path) == [MANIFEST, "x.txt", "y.txt"]


def test_a_full_disk_is_one_error_line_naming_the_file_and_nothing_is_lost(tmp_path, weights):
    """A file-size limit (``ulimit -f``, the same errno path as a full disk) used to end ``convert`` with a
    safetensors traceback ("File too large (os error 27)"), and plain writers with "[Errno 28] No space left on
    device" naming no file. Now: one ``error:`` line naming the file and saying that nothing was lost."""
    resource = pytest.importorskip("resource")
    src = weights / "rtmdetl_e60.ckpt"
    dst = tmp_path / "w" / "d.safetensors"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def convert(out: Path, limit: int | None) -> subprocess.CompletedProcess:
        def cap():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run([sys.executable, "-m", "cartoonseg", "convert", str(src), str(out)], env=env,
                              capture_output=True, text=True, timeout=300, preexec_fn=cap if limit else None)

    assert convert(dst, None).returncode == 0
    before = dst.read_bytes()
    (dst.parent / "notes.txt").write_text("the user's")
    r = convert(dst, 1 << 20)  # the output is larger than 1 MiB; the manifest is far smaller
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert str(dst) in lines[0] and "nothing was lost" in lines[0] and "earlier content" in lines[0]
    assert dst.read_bytes() == before and (dst.parent / "notes.txt").read_text() == "the user's"
    assert no_temporaries(dst.parent)
    outputs.check_file(dst)  # still ours: the rerun with space replaces it
    fresh = tmp_path / "new" / "d.safetensors"
    r = convert(fresh, 1 << 20)
    assert r.returncode == 2 and str(fresh) in r.stderr and "was not created" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()  # no new empty folder either

    code = ("import sys; from cartoonseg import outputs\n"
            "try:\n    outputs.write_bytes(sys.argv[1], bytes(1 << 21))\n"
            "except OSError as e:\n    print(e)\n")
    plain = tmp_path / "w" / "big.bin"
    r = subprocess.run([sys.executable, "-c", code, str(plain)], env=env, capture_output=True, text=True,
                       timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)))
    assert str(plain) in r.stdout and "nothing was lost" in r.stdout and not plain.exists(), r.stdout + r.stderr


@pytest.mark.parametrize("why", ["permission", "refused"])
def test_a_safetensors_error_is_one_error_line_naming_the_file(tmp_path, weights, capsys, monkeypatch, why):
    """safetensors reports failures as its own SafetensorError (not OSError): a read-only folder ("Permission denied
    (os error 13)") or a tensor it refuses ended ``convert`` with a traceback. Now one ``error:`` line naming the
    file, the earlier file kept, no temporary left (the half-written one included)."""
    import safetensors.torch
    from safetensors import SafetensorError

    src = weights / "rtmdetl_e60.ckpt"
    dst = tmp_path / "w" / "d.safetensors"
    assert run(["convert", src, dst], capsys)[0] == 0
    before = dst.read_bytes()
    message = ('Error while serializing: I/O error: Permission denied (os error 13) at path "x"' if why == "permission"
               else "Error while serializing: the tensor is refused")

    def failing(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")  # a write that stops half-way
        raise SafetensorError(message)

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    code, err = run(["convert", src, dst], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(dst) in lines[0], err
    assert ("Permission denied" in lines[0] and "earlier content" in lines[0]) if why == "permission" else (
        "safetensors refused" in lines[0])
    assert dst.read_bytes() == before and no_temporaries(dst.parent)
    fresh = tmp_path / "new" / "d.safetensors"
    code, err = run(["convert", src, fresh], capsys)
    assert code == 2 and str(fresh) in err and not fresh.exists() and not (tmp_path / "new").exists(), err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_convert_into_a_read_only_folder_is_one_error_line(tmp_path, weights):
    src = weights / "rtmdetl_e60.ckpt"
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's")
    folder.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        r = subprocess.run([sys.executable, "-m", "cartoonseg", "convert", str(src), str(folder / "d.safetensors")],
                           env=env, capture_output=True, text=True, timeout=300)
    finally:
        folder.chmod(0o755)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    assert str(folder) in lines[0], r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


class _FakeWinAPI:
    """kernel32 as :class:`cartoonseg.outputs._WinProcessAPI` wraps it: ``procs`` maps pid -> exit code (259 =
    running); ``denied`` pids exist but cannot be opened."""

    def __init__(self, procs: dict[int, int], denied=()):
        self.procs, self.denied, self.open_handles = procs, set(denied), set()

    def open(self, pid):
        if pid in self.denied:
            return None, 5  # ERROR_ACCESS_DENIED
        if pid not in self.procs:
            return None, 87  # ERROR_INVALID_PARAMETER: no process has this pid
        self.open_handles.add(pid)
        return pid, 0

    def exit_code(self, handle):
        return self.procs[handle]

    def close(self, handle):
        self.open_handles.remove(handle)


def test_windows_recognises_a_dead_writer_by_its_pid_not_only_by_age(tmp_path, monkeypatch):
    """On Windows a lock (or temporary) left by a killed writer of this host used to be broken only by age (a minute
    for locks, a day for temporaries; os.kill(pid, 0) would terminate the process there). Now kernel32's OpenProcess
    / GetExitCodeProcess tell: no such process or exited = dead; running, access denied or any doubt = alive."""
    monkeypatch.setattr(outputs, "_OS", "nt", raising=False)
    monkeypatch.setattr(outputs, "_LOCK_WAIT_S", 0.3)
    # pids that POSIX's check finds alive (init, our parent) are the dead ones here, and pids no process has are
    # the live ones: only the Windows path can tell them apart as asked
    gone, exited, running, other_user = 1, os.getppid(), 4000003, 4000004
    api = _FakeWinAPI({exited: 0, running: 259}, denied={other_user})
    monkeypatch.setattr(outputs, "_win_process_api", lambda: api, raising=False)
    lock = tmp_path / outputs._LOCK
    for n, pid in enumerate((gone, exited)):
        lock.write_text(f"{outputs._HOST}-{pid}-0123abcd")
        tmp = tmp_path / f".cartoonseg-tmp-{outputs._HOST}-{pid}-abcdef-x{n}.png"
        tmp.write_bytes(b"half")
        outputs.write_bytes(tmp_path / f"f{n}.txt", b"x")  # the lock is broken at once, the temporary removed
        assert not lock.exists() and not tmp.exists()
    for pid in (running, other_user):
        lock.write_text(f"{outputs._HOST}-{pid}-0123abcd")
        with pytest.raises(outputs.OutputError, match="has been locked by another cartoonseg command"):
            outputs.write_bytes(tmp_path / "g.txt", b"x")
        assert lock.read_text() == f"{outputs._HOST}-{pid}-0123abcd"  # a live writer's lock is kept
    assert not api.open_handles  # every handle opened is closed
    assert names(tmp_path) == sorted([outputs._LOCK, MANIFEST, "f0.txt", "f1.txt"])
    # where kernel32 cannot be reached (not Windows), every pid counts as alive: only the age rules apply
    monkeypatch.setattr(outputs, "_win_process_api", lambda: None)
    assert outputs._pid_alive(gone)
    monkeypatch.undo()
    assert outputs._win_process_api() is None or os.name == "nt"
