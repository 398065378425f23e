"""``python -m cartoonseg annotate``: inputs (folders, lists, COCO), the COCO output (valid for pycocotools, RLE
through cartoonseg.rle, unique ids), per-image files, the output policy, and the torchrun path: 2 processes on gloo,
SIGKILLed mid-run, restarted, give exactly the file a single process writes; finished shards are not recomputed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cartoonseg
from cartoonseg import rle
from cartoonseg.annotate import annotate, collect_inputs, merge, write_output
from cartoonseg.annotate.per_image import PerImageWriter
from _two_ranks import free_port, run_two_ranks, the_same_error_on_every_rank

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 12


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the subprocesses run with OMP_NUM_THREADS=1 too
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny random networks in the released layout and a folder of small images (one unreadable file aside)."""
    from _comfy_stub import write_tiny_released_weights

    root = tmp_path_factory.mktemp("annotate")
    folder = write_tiny_released_weights(root / "models") / "cartoonseg"
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        img = np.full((72 + 4 * (i % 3), 96, 3), 225, np.uint8)
        img[10:60, 8 + 3 * i:50 + 3 * i] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(images / f"img{i:02d}.png")
    return {"root": root, "images": images, "det": folder / "rtmdetl_e60.ckpt", "ref": folder / "refine_last.ckpt"}


def _args(data, out, *extra):
    return ["annotate", str(data["images"]), "--out", str(out), "--detector", str(data["det"]), "--refiner",
            str(data["ref"]), "--score-thr", "0", "--max-instances", "3", "--det-size", "128", "--refine-size", "64",
            "--quiet", *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _torchrun(args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cartoonseg",
            *args]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (torchrun starts its workers in new sessions, so a process-group kill misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _canonical(path: Path) -> str:
    coco = json.loads(path.read_text())
    coco["images"].sort(key=lambda im: im["id"])
    coco["annotations"].sort(key=lambda a: a["id"])
    return json.dumps(coco, sort_keys=True)


@pytest.mark.skipif(not (hasattr(signal, "SIGKILL") and Path("/proc").is_dir()), reason="needs POSIX SIGKILL, /proc")
def test_torchrun_two_processes_killed_and_resumed_equal_a_single_process_run(data, tmp_path):
    single = tmp_path / "single.json"
    proc = subprocess.run([sys.executable, "-m", "cartoonseg", *_args(data, single, "--shard-size", "2")],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out, work = tmp_path / "multi.json", tmp_path / "work"
    args = _args(data, out, "--shard-size", "1", "--work-dir", str(work), "--keep-shards")
    run = subprocess.Popen(_torchrun(args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while len(list(work.glob("shard-*.json"))) < 2:
            assert run.poll() is None, "torchrun ended before it could be killed: " + run.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no shard written in time"
            time.sleep(0.01)
    finally:
        for pid in _descendants(run.pid) + [run.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run.wait(timeout=60)
        run.stderr.close()
    time.sleep(0.2)
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("shard-*.json")}
    assert 2 <= len(finished) < N_IMAGES, f"kill came too late to test a resume ({len(finished)} shards)"
    assert not out.exists()

    proc = subprocess.run(_torchrun(args), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the shards finished before the kill were read back, not recomputed (same file, same write time)
    for name, stat in finished.items():
        p = work / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stat, f"{name} was rewritten"
    assert len(list(work.glob("shard-*.json"))) == N_IMAGES and not list(work.glob("*.tmp-*"))
    # the merge equals the single-process run byte for byte once sorted (the writer even keeps the order)
    assert _canonical(out) == _canonical(single)
    assert out.read_bytes() == single.read_bytes()

    # a valid COCO file: pycocotools indexes it, every id unique, masks decode to their areas
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    anns = coco.dataset["annotations"]
    assert len(coco.getImgIds()) == N_IMAGES and len(anns) == N_IMAGES * 3
    assert len({a["id"] for a in anns}) == len(anns) and len({im["id"] for im in coco.dataset["images"]}) == N_IMAGES
    for a in anns[:6]:
        assert np.array_equal(coco.annToMask(a), rle.decode(a["segmentation"]))
        assert a["area"] == rle.area(a["segmentation"]) and a["category_id"] == 0
    # a rerun with the final file present and shards kept: nothing to compute, same bytes
    before = out.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "cartoonseg", *args], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and out.read_bytes() == before


# ---------------------------------------------------------------------------------------------- in-process library
@pytest.fixture(scope="module")
def segmenter(data):
    det = cartoonseg.load_detector(data["det"])
    ref = cartoonseg.load_refiner(data["ref"])
    return cartoonseg.Segmenter(det, ref, score_thr=0.0, max_instances=2, det_size=128, refine_size=64)


def test_inputs_from_folders_lists_and_coco(data, tmp_path):
    images = data["images"]
    lst = tmp_path / "list.txt"
    lst.write_text(f"# two images\n{images / 'img03.png'}\n\n../{tmp_path.name}/extra/x.png\n")
    (tmp_path / "extra").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "extra" / "x.png")
    coco = tmp_path / "val.json"
    coco.write_text(json.dumps({"images": [{"id": 40, "file_name": "img05.png"}, {"id": 7, "file_name": "img01.png"}]}))
    items = collect_inputs([str(coco), str(lst)], image_root=images)
    assert [(i.file_name, i.image_id) for i in items[:2]] == [("img05.png", 40), ("img01.png", 7)]
    assert [i.image_id for i in items[2:]] == [41, 42]  # numbered after the largest COCO id, in input order
    assert items[2].path == str((images / "img03.png").resolve())
    assert items[3].path == str((tmp_path / "extra" / "x.png").resolve())  # relative to the list file
    folder = collect_inputs([str(images), str(images / "img00.png")])  # a file given twice is kept once
    assert [i.file_name for i in folder] == [f"img{i:02d}.png" for i in range(N_IMAGES)]
    assert [i.image_id for i in folder] == list(range(1, N_IMAGES + 1))
    with pytest.raises(ValueError, match="input not found"):
        collect_inputs([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="not found.*--image-root"):
        collect_inputs([str(coco)])  # file names are relative to the images folder, not the COCO file's


def test_library_run_per_image_files_unreadable_images_and_output_policy(data, segmenter, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("a.png", "b.png"):
        (images / name).write_bytes((data["images"] / "img00.png").read_bytes())
    (images / "broken.png").write_bytes(b"not a png")
    items = collect_inputs([str(images)])
    out = tmp_path / "ann.json"
    per = tmp_path / "per"
    coco = annotate(segmenter, items, out, shard_size=2, per_image=PerImageWriter(per, items), progress=False,
                    log=lambda m: None)
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    assert coco["info"]["skipped"][0]["file_name"] == "broken.png"
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4]
    assert json.loads(out.read_text()) == coco and not (tmp_path / "ann.json.parts").exists()
    record = json.loads((per / "a" / "instances.json").read_text())
    assert len(record["instances"]) == 2 and (per / "a" / "overlay.png").is_file()
    assert sorted(p.name for p in per.iterdir() if not p.name.startswith(".")) == ["a", "b"]
    assert not [p for p in tmp_path.rglob(".cartoonseg-tmp-*")]  # no temporaries left
    # the output policy (cartoonseg.outputs): never an input, never a file another program wrote (unless --overwrite)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"info": {"description": "hand-made"}}')
    with pytest.raises(ValueError, match="did not write"):
        write_output(foreign, coco)
    write_output(foreign, coco, overwrite=True)
    write_output(out, coco)  # our own file: replaced
    with pytest.raises(ValueError, match="it is an input"):
        write_output(images / "a.png", coco, inputs=[str(images / "a.png")], overwrite=True)
    # checked before any image is segmented: a foreign COCO file or a foreign per-image folder stops the run at once
    calls = []

    def counting(rgb):
        calls.append(1)
        return segmenter(rgb)

    (tmp_path / "mine.json").write_text("{}")
    with pytest.raises(ValueError, match="did not write"):
        annotate(counting, items, tmp_path / "mine.json", progress=False, log=lambda m: None)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="did not write"):
        annotate(counting, items, tmp_path / "new.json", per_image=PerImageWriter(user, items), progress=False,
                 log=lambda m: None)
    assert calls == [] and (user / "notes.txt").read_text() == "keep me"
    # a rerun into our own files replaces each image's folder whole: one instance now, no stale second mask
    assert (per / "a" / "mask_001.png").is_file()
    annotate(lambda rgb: segmenter(rgb)[:1], items, out, shard_size=2, per_image=PerImageWriter(per, items),
             progress=False, log=lambda m: None)
    assert not (per / "a" / "mask_001.png").exists() and (per / "a" / "mask_000.png").is_file()


def test_merge_numbers_annotations_in_image_order():
    from cartoonseg.annotate import ImageItem

    items = [ImageItem("/x/a.png", "a.png", 5), ImageItem("/x/b.png", "b.png", 2)]
    ann = {"category_id": 0, "bbox": [0, 0, 1, 1], "area": 1, "score": 0.5, "iscrowd": 0,
           "segmentation": rle.encode(np.ones((1, 1), np.uint8))}
    coco = merge(items, [{"height": 1, "width": 1, "annotations": [ann, ann]}, {"height": 1, "width": 1,
                                                                            "annotations": [ann]}])
    assert [(a["id"], a["image_id"]) for a in coco["annotations"]] == [(1, 5), (2, 5), (3, 2)]
    assert coco["categories"] == [{"id": 0, "name": "object", "supercategory": "object", "isthing": 1}]


def test_cli_errors_are_one_line(data, tmp_path, capsys):
    from cartoonseg.__main__ import main

    assert main(["annotate", str(tmp_path / "missing"), "--out", str(tmp_path / "o.json"), "--detector",
                 str(data["det"]), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: input not found")


def test_per_image_names_stay_inside_and_never_nest_or_collide():
    """``file_name`` comes from the user's COCO file: ``..`` and absolute names stay under DIR; an image and a folder
    of the same name (``cat.png``, ``cat/001.png``) and names differing in case get separate folders."""
    from cartoonseg.annotate import ImageItem
    from cartoonseg.annotate.per_image import result_names

    items = [ImageItem("/d/cat/001.png", "cat/001.png", 1), ImageItem("/d/cat.png", "cat.png", 2),
             ImageItem("/up/x.png", "../imgs/x.png", 3), ImageItem("/abs/y.png", "/abs/y.png", 4),
             ImageItem("/d/A.png", "A.png", 5), ImageItem("/d/a.jpg", "a.jpg", 6),
             ImageItem("/w/z.png", "C:\\data\\z.png", 7), ImageItem("/d/q.png", "..", 8)]
    names = result_names(items)
    assert names["/d/cat/001.png"] == "cat/001" and names["/d/cat.png"] == "cat.png"
    assert names["/up/x.png"] == "imgs/x" and names["/abs/y.png"] == "abs/y" and names["/w/z.png"] == "data/z"
    assert names["/d/A.png"] == "A.png" and names["/d/a.jpg"] == "a.jpg"  # one folder on macOS/Windows otherwise
    assert names["/d/q.png"] == "q"
    # the same name after the suffix too: the image's path decides, stably
    twins = [ImageItem("/one/p.png", "p.png", 1), ImageItem("/two/p.png", "p.png", 2)]
    a, b = result_names(twins).values()
    assert a != b and a.startswith("p.png-") and b.startswith("p.png-") and result_names(twins) == result_names(twins)


def test_per_image_folder_may_not_hold_the_coco_file_or_its_work_folder(data, segmenter, tmp_path):
    items = collect_inputs([str(data["images"] / "img00.png")])
    res = tmp_path / "res"
    calls = []

    def counting(rgb):
        calls.append(1)
        return segmenter(rgb)

    for out, work in ((res / "ann.json", None), (tmp_path / "ann.json", res / "parts")):
        writer = PerImageWriter(res, items, outside=[out, work or out.with_name(out.name + ".parts")])
        with pytest.raises(ValueError, match="inside the per-image folder"):
            annotate(counting, items, out, work_dir=work, per_image=writer, progress=False, log=lambda m: None)
    assert calls == [] and not res.exists()


def test_cli_defaults_follow_the_refiner_and_the_same_coco_file_twice_is_read_once(data, tmp_path):
    from cartoonseg.__main__ import main

    coco = tmp_path / "val.json"
    coco.write_text(json.dumps({"images": [{"id": 3, "file_name": "img02.png"}]}))
    items = collect_inputs([str(coco), str(coco)], image_root=data["images"])
    assert [(i.file_name, i.image_id) for i in items] == [("img02.png", 3)]
    import dataclasses

    ref = cartoonseg.load_refiner(data["ref"])  # a refiner trained at another size and threshold than the released one
    ref.config = dataclasses.replace(ref.config, mask_thr=0.6, refine_size=64)
    cartoonseg.save_weights(ref, tmp_path / "ref64.safetensors")
    out, per = tmp_path / "o.json", tmp_path / "per"
    args = ["annotate", str(data["images"] / "img00.png"), "--out", str(out), "--detector", str(data["det"]),
            "--refiner", str(tmp_path / "ref64.safetensors"), "--det-size", "128", "--score-thr", "0",
            "--max-instances", "1", "--per-image", str(per), "--quiet", "--precision", "auto"]
    assert main(args) == 0
    settings = json.loads(out.read_text())["info"]["settings"]
    assert (settings["mask_thr"], settings["refine_size"]) == (0.6, 64)
    # the precision that ran (auto is bf16 or fp32 by CPU), so a resume on another kind of CPU is refused
    assert settings["precision"] == cartoonseg.device.resolve_precision("auto", "cpu")
    assert json.loads((per / "img00" / "instances.json").read_text())["mask_thr"] == 0.6  # as segment writes it


def test_a_per_image_folder_inside_a_recursive_input_is_not_read_back(data, tmp_path):
    """--recursive over a folder that holds the run's own --per-image folder: the masks and overlays written there
    are outputs, never inputs, so the rerun sees the same images (it used to take them as inputs and refuse)."""
    import shutil

    from cartoonseg.__main__ import main

    rec = tmp_path / "rec"
    shutil.copytree(data["images"], rec / "sub")
    out, per = tmp_path / "o.json", rec / "per"
    args = ["annotate", str(rec), "--recursive", "--out", str(out), "--per-image", str(per), "--detector",
            str(data["det"]), "--refiner", "none", "--score-thr", "0", "--max-instances", "1", "--det-size", "128",
            "--quiet"]
    assert main(args) == 0
    first = json.loads(out.read_text())["images"]
    assert list(per.rglob("*.png"))  # the run wrote images inside its own input folder
    assert main(args) == 0
    assert [im["file_name"] for im in json.loads(out.read_text())["images"]] == [im["file_name"] for im in first]
    walked = collect_inputs([str(rec)], recursive=True, exclude=[per])
    assert [i.path for i in walked] == [i.path for i in collect_inputs([str(rec / "sub")])]



def test_an_input_folder_that_is_the_runs_own_output_is_named(data, tmp_path, capsys):
    """--per-image (or --work-dir) naming the input folder itself, or a folder above it: every image was left out as
    the run's own output and the command said only "no input images". The error now names the clash; the user's
    images are untouched and nothing is written."""
    import shutil

    from cartoonseg.__main__ import main

    images = tmp_path / "images"
    shutil.copytree(data["images"], images)
    before = sorted(p.name for p in images.iterdir())
    common = ["--out", str(tmp_path / "o.json"), "--detector", str(data["det"]), "--refiner", "none", "--quiet"]
    for option, folder in (("--per-image", images), ("--work-dir", images), ("--per-image", tmp_path)):
        assert main(["annotate", str(images), option, str(folder), *common]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: input folder {images} is (or lies in)") and err.count("\n") == 1, err
    assert sorted(p.name for p in images.iterdir()) == before and not (tmp_path / "o.json").exists()

def test_work_folder_keeps_the_users_files_and_may_not_hold_the_output(data, segmenter, tmp_path):
    """Cleaning up after the merge deletes only the run's own files; a COCO file inside the work folder (even named
    like one of the run's files) is refused before any image is segmented, never written and then deleted."""
    items = collect_inputs([str(data["images"] / "img00.png"), str(data["images"] / "img01.png")])
    work = tmp_path / "wd"
    work.mkdir()
    user = {"manifest.jsonl": "k\n", "manifest.json.bak": "k\n", "shard-notes.json": "k\n"}
    for name, text in user.items():
        (work / name).write_text(text)
    calls = []

    def counting(rgb):
        calls.append(1)
        return segmenter(rgb)

    for out in (work / "shard-all.json", work / "manifest.json", work / "sub" / "ann.json"):
        with pytest.raises(ValueError, match="inside the work folder"):
            annotate(counting, items, out, work_dir=work, progress=False, overwrite=True, log=lambda m: None)
    assert calls == []
    out = tmp_path / "ann.json"
    coco = annotate(counting, items, out, work_dir=work, shard_size=1, progress=False, log=lambda m: None)
    assert len(coco["images"]) == 2 and json.loads(out.read_text()) == coco
    assert {p.name: p.read_text() for p in work.iterdir()} == user


def test_cli_with_no_readable_image_is_an_error(data, tmp_path, capsys):
    """Unreadable images are listed and skipped (not fatal) while others were annotated; when none could be read the
    run is an error (status 2, one line), as for segment, tag and style."""
    from cartoonseg.__main__ import main

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    args = ["annotate", "--detector", str(data["det"]), "--refiner", "none", "--det-size", "128", "--quiet"]
    assert main([*args, str(bad), str(data["images"] / "img00.png"), "--out", str(tmp_path / "some.json")]) == 0
    assert len(json.loads((tmp_path / "some.json").read_text())["info"]["skipped"]) == 1
    capsys.readouterr()
    assert main([*args, str(bad), "--out", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: none of the 1 input image(s) could be read") and err.count("\n") == 1, err


def test_cli_threads_out_of_range_is_one_line(data, tmp_path, capsys):
    from cartoonseg.__main__ import main

    for bad in ("-1", "0"):
        code = main(["annotate", str(data["images"] / "img00.png"), "--out", str(tmp_path / "a.json"), "--detector",
                     str(data["det"]), "--refiner", "none", "--threads", bad, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: --threads must lie in [1, 1024]") and err.count("\n") == 1, err


def test_a_resume_with_a_retrained_detector_of_the_same_name_and_size_is_refused(data, tmp_path, capsys):
    """The work folder's fingerprint identifies the weights by content: a retrained checkpoint of the same network
    has the same name and byte size, and a resume with it silently mixed shards of two models into one file."""
    from _checkpoint_writers import save_mmengine_detector_checkpoint

    from cartoonseg.__main__ import main

    det = tmp_path / "models" / data["det"].name
    det.parent.mkdir()
    det.write_bytes(data["det"].read_bytes())
    torch.manual_seed(1)
    other = tmp_path / "retrained" / data["det"].name  # torch.save records the file's stem in the archive
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), other)
    assert other.stat().st_size == det.stat().st_size and other.read_bytes() != det.read_bytes()
    work = tmp_path / "work"
    args = ["annotate", str(data["images"] / "img00.png"), str(data["images"] / "img01.png"), "--out",
            str(tmp_path / "a.json"), "--detector", str(det), "--refiner", "none", "--det-size", "128",
            "--score-thr", "0", "--max-instances", "1", "--shard-size", "1", "--work-dir", str(work), "--keep-shards",
            "--quiet"]
    assert main(args) == 0
    (work / "shard-000001.json").unlink()  # as if killed during the second shard
    det.write_bytes(other.read_bytes())  # the model was retrained in between
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds the shards of a different run" in err and err.count("\n") == 1, err
    assert not (work / "shard-000001.json").exists()


def test_a_resume_into_another_per_image_folder_is_refused(tmp_path):
    """Finished shards are not recomputed, so a resume with another --per-image folder left that folder without
    the folders of every image of a finished shard, silently; now the work folder of the first run is refused."""
    from cartoonseg.structures import Instances

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(images / f"i{i}.png")
    items = collect_inputs([str(images)])

    def segment(rgb):
        masks = torch.zeros(1, *rgb.shape[:2])
        masks[0, 2:12, 3:15] = 1.0
        return Instances.from_masks(masks)

    out, work = tmp_path / "a.json", tmp_path / "work"
    kw = dict(work_dir=work, shard_size=1, keep_shards=True, progress=False, log=lambda m: None)
    annotate(segment, items, out, per_image=PerImageWriter(tmp_path / "A", items), **kw)
    (work / "shard-000002.json").unlink()  # as if killed during the last shard
    with pytest.raises(ValueError, match="holds the shards of a different run"):
        annotate(segment, items, out, per_image=PerImageWriter(tmp_path / "B", items), **kw)
    # the same folder, even named another way, resumes and completes it
    annotate(segment, items, out, per_image=PerImageWriter(Path(os.path.relpath(tmp_path / "A")), items), **kw)
    assert sorted(p.name for p in (tmp_path / "A").iterdir() if not p.name.startswith(".")) == ["i0", "i1", "i2"]


def test_a_resume_with_another_tagger_of_the_same_folder_name_is_refused(data, tmp_path, capsys):
    """The tagger is identified by its files' content, not its folder's name: a resume with other tagger weights
    under the same name mixed two taggers' tags in one file."""
    from test_tagger import make_tagger_dir

    from cartoonseg.__main__ import main

    tagger = make_tagger_dir(tmp_path / "a" / "wd-tagger", seed=0)
    other = make_tagger_dir(tmp_path / "b" / "wd-tagger", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tagger / "model.safetensors").read_bytes()
    work = tmp_path / "work"
    args = ["annotate", str(data["images"] / "img00.png"), str(data["images"] / "img01.png"), "--out",
            str(tmp_path / "a.json"), "--detector", str(data["det"]), "--refiner", "none", "--det-size", "128",
            "--score-thr", "0", "--max-instances", "1", "--shard-size", "1", "--work-dir", str(work), "--keep-shards",
            "--quiet", "--tagger", str(tagger)]
    assert main(args) == 0
    (work / "shard-000001.json").unlink()  # as if killed during the second shard
    capsys.readouterr()
    assert main(args[:-1] + [str(other)]) == 2  # same folder name, other weights
    err = capsys.readouterr().err
    assert "holds the shards of a different run" in err and err.count("\n") == 1, err
    assert main(args) == 0  # the same tagger resumes


@pytest.mark.parametrize("option, value, message", [("--max-instances", "0", "max_instances"),
                                                    ("--score-thr", "5", "score_thr"),
                                                    ("--det-size", "100", "det_size")])
def test_bad_segmenter_settings_fail_before_the_weights_are_read(tmp_path, capsys, option, value, message):
    """A bad setting used to be found only after the weights were resolved (a download, for a repo id) and read."""
    from cartoonseg.__main__ import main

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    missing = tmp_path / "no-such-weights.safetensors"
    assert main(["annotate", str(image), "--out", str(tmp_path / "a.json"), "--detector", str(missing),
                 "--refiner", "none", "--no-download", "--quiet", option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and "no-such-weights" not in err and err.count("\n") == 1, err


def test_cli_checks_the_images_before_loading_the_weights(data, tmp_path, capsys, spy_calls):
    """With no readable input (a lone truncated or animated file) the error came only after the weights were
    resolved (maybe downloaded) and loaded; now first, with nothing loaded or written. A readable image among
    unreadable ones still runs (the others listed under info.skipped)."""
    from cartoonseg import hub
    from cartoonseg.__main__ import main

    resolved = spy_calls(hub, "resolve_weights")
    good = data["images"] / "img00.png"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-300])
    anim = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((20, 20, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=100)
    args = ["annotate", "--detector", str(data["det"]), "--refiner", "none", "--det-size", "128", "--quiet"]
    for inputs, words in (([truncated], ("truncated",)), ([truncated, anim], ("2 input image(s)", "truncated"))):
        out = tmp_path / "none.json"
        assert main([*args, *map(str, inputs), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: none of the") and err.count("\n") == 1 and all(w in err for w in words), err
        assert resolved == [] and not out.exists() and not (tmp_path / "none.json.parts").exists()
    assert main([*args, str(anim), str(good), "--out", str(tmp_path / "some.json")]) == 0
    assert len(resolved) == 1 and len(json.loads((tmp_path / "some.json").read_text())["info"]["skipped"]) == 1


RANK0_FAILS = """
import os, sys, time
from pathlib import Path
from cartoonseg.__main__ import main
rc = main(sys.argv[2:])
Path(sys.argv[1], "rank" + os.environ["RANK"] + ".rc").write_text(str(rc))
if os.environ["RANK"] == "0":  # stay alive (a library caller, a slow exit): a rank left waiting would hang, not crash
    deadline = time.monotonic() + 30
    while not Path(sys.argv[1], "rank1.rc").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def test_every_rank_fails_with_rank_0s_error_when_rank_0_cannot_collect_the_inputs(tmp_path):
    """Only rank 0 collects the inputs; when that failed (an input that does not exist), rank 1 waited in the
    broadcast of the item list until rank 0's process went away (forever while it lived; the gloo time-out is an
    hour), then died with a traceback about a closed connection. Now rank 0 broadcasts its error and every rank
    ends at once with rank 0's one-line error. A real 2-process gloo group on CPU (torchrun's environment; no
    torchrun, whose agent would kill rank 1 as soon as rank 0 exits and hide the wait)."""

    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(RANK0_FAILS)
    missing = tmp_path / "no-such-folder"
    args = ["annotate", str(missing), "--out", str(tmp_path / "out.json"), "--detector", "none-needed", "--quiet"]
    procs, errs = run_two_ranks([str(driver), str(tmp_path), *args], env=_env(), port=port, timeout=240)
    for r, err in enumerate(errs):
        rc = tmp_path / f"rank{r}.rc"
        assert rc.is_file() and rc.read_text() == "2", err
        assert err == f"error: input not found: {missing}\n", err
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.json.parts").exists()


PER_RANK = """
import json, os, sys
from pathlib import Path
from cartoonseg.__main__ import main
rank = int(os.environ["RANK"])
rc = main(sys.argv[3:] + json.loads(sys.argv[2])[rank])  # this rank's own options (its node's files)
Path(sys.argv[1], f"rank{rank}.rc").write_text(str(rc))
"""


@pytest.mark.parametrize("what", ["missing", "damaged"])
def test_weights_a_rank_cannot_read_end_every_rank_at_once_naming_it(data, tmp_path, what):
    """Every rank resolves and loads the weights itself (per-node storage: a copy can be missing or damaged on one
    node only). Rank 1 failing there used to end rank 1 alone while rank 0 went on segmenting and then waited for
    rank 1's shards forever (file polling, no time-out). Now these steps go through ``sharding.every_rank``: both
    ranks of a real 2-process gloo group end within seconds with the same one ``error: rank 1: ...`` line, and
    nothing is written."""
    import shutil

    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(PER_RANK)
    node1 = tmp_path / "node1"
    node1.mkdir()
    copy = node1 / data["det"].name
    if what == "damaged":
        shutil.copy(data["det"], copy)
        copy.write_bytes(copy.read_bytes()[:200])  # cut short on rank 1's node
    own = [["--detector", str(data["det"])], ["--detector", str(copy)]]
    out = tmp_path / "out.json"
    args = ["annotate", str(data["images"]), "--out", str(out), "--refiner", "none", "--det-size", "128", "--quiet"]
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), json.dumps(own), *args], env=_env(), port=port,
                                timeout=120)
    assert time.monotonic() - start < 60
    # gloo's C++ threads can abort the interpreter's teardown after the command returned (pytorch#179291)
    assert str(copy) in the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: ")
    assert not out.exists() and not (tmp_path / "out.json.parts").exists()


NO_CUDA_PER_RANK = """
import json, os, sys
from pathlib import Path
import torch
torch.cuda.is_available = lambda: False  # a node without CUDA, on any machine
torch.cuda.device_count = lambda: 0
from cartoonseg.__main__ import main
rank = int(os.environ["RANK"])
rc = main(sys.argv[3:] + json.loads(sys.argv[2])[rank])  # this rank's own options
Path(sys.argv[1], f"rank{rank}.rc").write_text(str(rc))
"""


def test_a_device_one_rank_lacks_ends_every_rank_at_once_naming_it(data, tmp_path):
    """``--device cuda`` on a node without CUDA was refused by the command's up-front check, before the process group
    started: that rank exited alone and the others sat in ``init_process_group`` until its time-out (an hour).
    Under torchrun only the spelling is checked up front now; each rank's device is checked with the weights
    (``every_rank``): both ranks of a real 2-process gloo group end within seconds with the same ``error: rank 1:
    ...`` line, and nothing is written."""
    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(NO_CUDA_PER_RANK)
    out = tmp_path / "out.json"
    own = [["--device", "cpu"], ["--device", "cuda"]]
    args = ["annotate", str(data["images"]), "--out", str(out), "--detector", str(data["det"]), "--refiner", "none",
            "--det-size", "128", "--quiet"]
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), json.dumps(own), *args], env=_env(), port=port,
                                timeout=60)
    assert time.monotonic() - start < 50
    line = the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: --device cuda: CUDA is not available here")
    assert line.endswith("use --device cpu"), line
    assert not out.exists() and not (tmp_path / "out.json.parts").exists()
