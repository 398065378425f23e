"""Hostile and careless inputs (issue 22 items 6, 7, 9, 10, 11; the output policy has tests/test_outputs.py).

Each class has one policy in the code; every test here fails without it:

* 6 bounded widget parsing and a mask memory budget (``cartoonseg.structures.MAX_MASK_ELEMENTS``);
* 7 range-checked configs/options and refused non-finite weights;
* 9 one ``error:`` line for CLI failures (``--device``), readable node errors for degenerate inputs;
* 10 training resume with changed settings refused (``--allow-changes``), corrupt RLE never trains box-only;
* 11 loader nodes resolve names only inside ComfyUI's model folders.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _comfy_stub import write_tiny_released_weights

import cartoonseg
from cartoonseg import Instances
from cartoonseg.checkpoint import CheckpointError, save_weights
from cartoonseg.config import DETECTOR_PRESETS, DetectorConfig, RefinerConfig

PACK = "cartoonseg_pack_hostile"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_tiny_released_weights(tmp_path_factory.mktemp("models"))


def node_module(pack, name: str):
    return sys.modules[f"{pack.__name__}.nodes.{name}"]


def instances(h=10, w=12, boxes=((1.0, 1.0, 5.0, 5.0),)) -> Instances:
    b = torch.tensor(boxes, dtype=torch.float32)
    return Instances(boxes=b, scores=torch.ones(len(b)), masks=torch.zeros(len(b), h, w))


# ------------------------------------------------------------------------- 6. bounded parsing, memory budget
def test_selection_text_is_bounded(pack, nodes):
    parse = node_module(pack, "instances").parse_indices
    assert parse("0, 2, 4-6, -1") == [0, 2, 4, 5, 6, -1] and parse("all") is None
    for text in ("0-2000000000", "5000000", "0-99999," * 3, "1" * 5000, "0," * 6000):
        with pytest.raises(ValueError, match="out of range|characters|parse"):
            parse(text)
    split = nodes["CartoonSegInstanceSplit"]()
    with pytest.raises(ValueError, match="out of range"):
        split.split([instances()], "index", "0-2000000000", "position", -1, 4, 64, "image", 0, "binary")
    out = split.split([instances()], "index", "0-99999", "id", -1, 4, 64, "image", 0, "binary")
    assert out[-1] == 1  # ids are matched through a set, not a 100k-entry scan per instance


def test_mask_budget_is_checked_before_allocating(monkeypatch):
    torch.manual_seed(0)
    seg = cartoonseg.Segmenter(cartoonseg.build_detector("tiny"), cartoonseg.build_refiner("tiny"), det_size=64,
                               refine_size=64, score_thr=0.0, max_instances=3, fuse=False, channels_last=False)
    # the case, unpatched: 60 box prompts on a 6000² image would need 8.6 GB of masks
    big = np.zeros((6000, 6000, 3), np.uint8)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 60)
    with pytest.raises(ValueError, match="memory budget"):
        seg.refine(big, boxes)
    # with a tiny budget every allocation site refuses: refine prompts, detections, node MASK outputs
    monkeypatch.setattr(cartoonseg.structures, "MAX_MASK_ELEMENTS", 1000)
    image = np.zeros((40, 56, 3), np.uint8)
    with pytest.raises(ValueError, match="memory budget"):
        seg.refine(image, boxes[:2])
    with pytest.raises(ValueError, match="memory budget"):
        seg(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))


def test_node_mask_outputs_respect_the_budget(pack, monkeypatch):
    seg_nodes = node_module(pack, "segment")
    monkeypatch.setattr(cartoonseg.structures, "MAX_MASK_ELEMENTS", 100)
    with pytest.raises(ValueError, match="memory budget"):
        seg_nodes.stack_masks([instances()] * 2, "binary", 10, 12)
    with pytest.raises(ValueError, match="memory budget"):
        seg_nodes.resize_masks(torch.zeros(3, 4, 4), 10, 12)


# ------------------------------------------------------------------------------------ 7. range checks
@pytest.mark.parametrize("field,value", [
    ("det_size", 64000), ("det_size", 100), ("std", (0.0, 1.0, 1.0)), ("pad_value", math.nan),
    ("score_thr", math.nan), ("iou_thr", 2.0), ("bn_eps", -1e-5), ("bn_eps", math.inf), ("widen_factor", 4.0),
    ("deepen_factor", 0.0), ("num_classes", True), ("num_classes", 2.5), ("neck_out_channels", 10**9),
    ("mean", (math.nan, 0.0, 0.0)), ("strides", (32, 16, 8)), ("max_per_img", 0), ("mask_thr_binary", -0.1),
])
def test_detector_config_range_checks(field, value):
    with pytest.raises(ValueError, match=field):
        DETECTOR_PRESETS["tiny"].replace(**{field: value})


def test_refiner_config_and_segmenter_option_checks():
    for bad in ({"in_ch": 10**9}, {"width": math.nan}, {"refine_size": 10**6}, {"mask_thr": math.inf}):
        with pytest.raises(ValueError):
            RefinerConfig(**bad)
    det = cartoonseg.build_detector("tiny")
    for bad in ({"det_size": 64000}, {"score_thr": math.nan}, {"mask_thr": math.nan}, {"refine_size": 10**6},
                {"max_instances": 10**9}):
        with pytest.raises(ValueError):
            cartoonseg.Segmenter(det, **bad)
    assert DetectorConfig.from_dict(DETECTOR_PRESETS["l"].to_dict()) == DETECTOR_PRESETS["l"]  # presets still pass


def test_non_finite_or_impossible_weights_are_refused(tmp_path):
    torch.manual_seed(0)
    det = cartoonseg.build_detector("tiny")
    with torch.no_grad():
        next(det.parameters()).view(-1)[0] = math.nan
    save_weights(det, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        cartoonseg.load_detector(tmp_path / "nan.safetensors")
    ref = cartoonseg.build_refiner("tiny")
    var = next(b for n, b in ref.named_buffers() if n.endswith("running_var"))
    var.fill_(-1.0)
    save_weights(ref, tmp_path / "var.safetensors")
    with pytest.raises(CheckpointError, match="negative variance"):
        cartoonseg.load_refiner(tmp_path / "var.safetensors")


# --------------------------------------------------------------------------------- 9. one clear error
@pytest.mark.parametrize("device,words", [("banana", "not a device"), ("cuda:99", "CUDA"), ("mps", "MPS"),
                                          ("meta", "only cpu")])
def test_cli_device_errors_are_one_line(tmp_path, capsys, device, words):
    from cartoonseg.__main__ import main

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    if device == "mps" and hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code = main(["segment", str(image), "--out", str(tmp_path / "o"), "--device", device, "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "o").exists()  # refused before anything was loaded or written


def test_cli_device_auto_and_mask_threshold_without_refiner(tmp_path, capsys, models_dir):
    """--device auto is a device for every command (CUDA when present, else the CPU); --mask-thr given with
    --refiner none thresholds the coarse masks (otherwise the detector's own 0.5)."""
    from PIL import Image

    from cartoonseg.__main__ import main

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    det = str(models_dir / "cartoonseg" / "rtmdetl_e60.ckpt")
    common = [str(image), "--detector", det, "--refiner", "none", "--det-size", "64", "--score-thr", "0",
              "--max-instances", "1", "--device", "auto", "-q"]
    thresholds = []
    for extra, name in (([], "default"), (["--mask-thr", "0.9"], "given")):
        assert main(["segment", *common, "--out", str(tmp_path / name), *extra]) == 0, capsys.readouterr().err
        thresholds.append(json.loads((tmp_path / name / "a" / "instances.json").read_text())["mask_thr"])
    assert thresholds == [0.5, 0.9]


def test_cli_cuda_without_cuda_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from cartoonseg.depth.cli import main

    code = main(["depth", str(tmp_path / "a.png"), "--out", str(tmp_path / "d.png"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA is not available" in err and err.count("\n") == 1


def test_nodes_give_readable_errors_for_degenerate_inputs(nodes):
    with pytest.raises(ValueError, match="empty"):
        nodes["CartoonSegMaskToInstances"]().convert(torch.zeros(1, 0, 0), "instances of one image", 0.5, False, 1)
    split = nodes["CartoonSegInstanceSplit"]()
    with pytest.raises(ValueError, match="mixes frame sizes"):
        split.split([instances(10, 12), instances(20, 8)], "index", "all", "position", -1, 4, 64, "image", 0,
                    "binary")
    with pytest.raises(ValueError, match="infinite boxes"):
        split.split([instances(boxes=((1.0, 1.0, math.inf, 5.0),))], "index", "all", "position", -1, 4, 64,
                    "image", 0, "binary")
    with pytest.raises(ValueError, match="infinite boxes"):
        nodes["CartoonSegToSEGS"]().to_segs([instances(boxes=((math.nan, 1.0, 2.0, 5.0),))], 0, 1.5, 1, "",
                                             "binary")


def test_a_width_4_mask_is_not_read_as_boxes():
    torch.manual_seed(0)
    seg = cartoonseg.Segmenter(None, cartoonseg.build_refiner("tiny"), refine_size=32, fuse=False,
                               channels_last=False)
    with pytest.raises(ValueError, match="ambiguous"):
        seg.refine(np.zeros((6, 4, 3), np.uint8), torch.zeros(6, 4))
    assert len(seg.refine(np.zeros((6, 4, 3), np.uint8), torch.ones(1, 6, 4))) == 1  # [1,H,W] is a mask


# ----------------------------------------------------------------------------- 10. training inputs
def test_corrupt_rle_is_an_error_not_a_box(tmp_path):
    from cartoonseg.rle import segmentation_to_mask
    from cartoonseg.training.coco import instance_masks, load_coco
    from cartoonseg.training.toy import make_toy_coco

    assert segmentation_to_mask(None, 4, 4) is None and segmentation_to_mask([], 4, 4) is None  # box-only data
    for bad in ({"size": [4, 4], "counts": "!!!"}, {"size": [4, 4], "counts": [3, 3]}, {"counts": [16]},
                {"size": [4, 5], "counts": [20]}, {"size": [10**9, 10**9], "counts": [10**18]}, "polygon?"):
        with pytest.raises(ValueError, match="corrupt|unsupported"):
            segmentation_to_mask(bad, 4, 4)
    ann_path = make_toy_coco(tmp_path, num_images=2, size=32, seed=0)
    data = json.loads(ann_path.read_text())
    data["annotations"][0]["segmentation"]["size"] = [7, 7]
    ann_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="corrupt segmentation"):
        load_coco(ann_path)
    data["annotations"][0]["segmentation"] = {"size": [32, 32], "counts": "0" * 5}  # structurally fine, undecodable
    ann_path.write_text(json.dumps(data))
    coco = load_coco(ann_path)
    image = next(im for im in coco.images if any(a.ann_id == data["annotations"][0]["id"] for a in im.annotations))
    with pytest.raises(ValueError, match=f"annotation {data['annotations'][0]['id']}"):
        instance_masks(image)


def _tiny_run(out: Path, *, run: dict, allow_changes: bool = False, max_iters: int = 1, **loop):
    """One real training loop (engine.run_loop: checkpoint, resume) on a 2-parameter model, so it costs nothing."""
    from cartoonseg.training.distributed import setup
    from cartoonseg.training.engine import LoopConfig, run_loop

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    data = [torch.ones(1)] * 4
    cfg = LoopConfig(out_dir=str(out), name="toy", epochs=2, batch_size=loop.pop("batch_size", 2),
                     lr=loop.pop("lr", 1e-2), weight_decay=0.0, num_workers=0, log_interval=1, max_iters=max_iters,
                     allow_changes=allow_changes, **loop)
    loss = lambda wrapped, raw, batch, device: {"loss": wrapped(batch.to(device)).pow(2).mean()}  # noqa: E731
    return run_loop(setup("cpu"), model, data, torch.stack, loss, cfg, run_config=run)


def test_resume_with_changed_settings_is_refused(tmp_path):
    run = {"train_ann": "data/a.json", "preset": "tiny", "img_size": 64, "device": "cpu", "num_workers": 0}
    assert _tiny_run(tmp_path / "run", run=run).global_step == 1
    for changed, words in (({"batch_size": 1}, "loop.batch_size: 2 -> 1"), ({"lr": 0.5}, "loop.lr"),
                           ({"run": {**run, "train_ann": "data/b.json"}}, "run.train_ann: 'data/a.json' -> 'data/b"),
                           ({"run": {**run, "img_size": 96}}, "run.img_size"),
                           ({"run": {**run, "preset": "s"}}, "run.preset")):
        kwargs = {"run": run, **changed}
        with pytest.raises(ValueError, match=re.escape(words) + ".*--allow-changes"):
            _tiny_run(tmp_path / "run", max_iters=2, **kwargs)
    # where and how it runs may change (device, workers, logging, max_iters); --allow-changes continues anyway
    assert _tiny_run(tmp_path / "run", run={**run, "device": "cuda", "num_workers": 8}, max_iters=2,
                     ckpt_interval=1).global_step == 2
    assert _tiny_run(tmp_path / "run", run=run, lr=0.5, max_iters=3, allow_changes=True).global_step == 3
    # a folder holding other files is never a training run
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a cartoonseg training run"):
        _tiny_run(tmp_path / "data", run=run)


def test_training_scripts_pass_allow_changes():
    import argparse

    from train._cli import add_data_args, add_run_args, common_config

    ap = argparse.ArgumentParser()
    add_data_args(ap, "out")
    add_run_args(ap, max_iters_help="", resume_help="")
    args = ap.parse_args(["--data", __file__, "--out", "o", "--allow-changes"])
    assert common_config(args)["allow_changes"] is True


# ------------------------------------------------------------------------------ 11. loader node paths
def test_loaders_read_only_inside_the_model_folders(nodes, models_dir, tmp_path):
    outside = tmp_path / "elsewhere.ckpt"
    outside.write_bytes((models_dir / "cartoonseg" / "rtmdetl_e60.ckpt").read_bytes())
    loader = nodes["CartoonSegModelLoader"]()
    for name in (str(outside), "../elsewhere.ckpt", "cartoonseg/../../x.ckpt", "..\\x.ckpt", "C:/x.ckpt"):
        with pytest.raises(ValueError, match="not a name inside the model folders"):
            loader.load(name, "none", "cpu", "fp32", False, False)
    with pytest.raises(ValueError, match="not found in the model folders"):
        loader.load("missing.ckpt", "none", "cpu", "fp32", False, False)
    (model,) = loader.load("rtmdetl_e60.ckpt", "none", "cpu", "fp32", False, False)
    assert Path(model.detector_path).parent == models_dir / "cartoonseg"
    for bad in (str(tmp_path), "../../etc", "a/b/c"):
        with pytest.raises(ValueError, match="not a name inside the model folders|folder name or a Hugging Face"):
            nodes["CartoonSegTaggerLoader"]().load(bad, "cpu", "fp32", False)
    with pytest.raises(ValueError, match="not a name inside the model folders"):
        nodes["CartoonSegDepthLoader"]().load(str(tmp_path))
    with pytest.raises(ValueError, match="neither a folder"):
        nodes["CartoonSegDepthLoader"]().load("some/folder")


# ------------------------------------------------------------------------------------- 8. input files
def _image(path: Path, seed: int = 0, size=(40, 56)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_never_opened(tmp_path):
    import os
    import threading

    from cartoonseg.io import read_image

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    result = {}

    def attempt():
        try:
            read_image(fifo)
        except ValueError as exc:
            result["error"] = str(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(30)  # opening a FIFO for reading blocks until a writer comes: without the check this never returns
    assert "FIFO" in result.get("error", ""), "read_image blocked on a FIFO"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_segment_skips_unreadable_inputs_and_fails_at_the_end(tmp_path, models_dir, capsys):
    import os

    from cartoonseg.__main__ import main

    pics = tmp_path / "pics"
    _image(pics / "good.png")
    os.mkfifo(pics / "pipe.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    cli = ["--detector", str(models_dir / "cartoonseg" / "rtmdetl_e60.ckpt"), "--refiner", "none", "--exact",
           "--no-download", "--det-size", "64", "--score-thr", "0", "--max-instances", "1"]
    assert main(["segment", str(pics), "--out", str(tmp_path / "o1"), *cli]) == 0  # the FIFO in a folder: skipped
    err = capsys.readouterr().err
    assert "warning: skipping" in err and "pipe.png" in err and (tmp_path / "o1" / "good" / "overlay.png").is_file()
    code = main(["segment", str(tmp_path / "broken.png"), str(pics / "good.png"), "--out", str(tmp_path / "o2"), *cli])
    err = capsys.readouterr().err
    assert code == 2 and "warning: skipping" in err and "1 of 2 inputs could not be read" in err
    assert (tmp_path / "o2" / "good" / "instances.json").is_file()  # the readable one was still segmented


def test_exif_orientation_is_honoured(tmp_path):
    from PIL import Image, ImageOps

    from cartoonseg.data.foregrounds import load_background
    from cartoonseg.io import read_grey, read_image

    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:5, :10] = 255  # a white block in the stored top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "phone.png", exif=exif)
    with Image.open(tmp_path / "phone.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(tmp_path / "phone.png")
    assert got.shape == (30, 20, 3) and np.array_equal(got, expected) and got[:10, -5:].min() == 255
    assert read_grey(tmp_path / "phone.png").shape == (30, 20)
    assert load_background(tmp_path / "phone.png").shape == (30, 20, 3)


def test_lab_and_cmyk_files_come_out_in_rgb(tmp_path):
    from PIL import Image, ImageCms

    from cartoonseg.io import read_image

    rgb = np.array([[[200, 30, 40], [20, 180, 60]], [[30, 40, 220], [240, 240, 240]]], np.uint8)
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    ImageCms.applyTransform(Image.fromarray(rgb), to_lab).save(tmp_path / "lab.tif")
    # 8-bit a*/b* quantisation and the D50/D65 adaptation leave a few levels; a mode mix-up is off by ~100
    assert np.abs(read_image(tmp_path / "lab.tif").astype(int) - rgb).max() <= 12
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    assert np.abs(read_image(tmp_path / "cmyk.tif").astype(int) - rgb).max() <= 1


# ------------------------------------------------------------------- 4. bounded config reader (meta['cfg'])
@pytest.mark.parametrize("name,cfg", [
    ("squares", "a = 10\n" + "a = a * a\n" * 40),  # the 2 KB file that hung the loader forever
    ("doubling", "a = [0]\n" + "a = [a, a]\n" * 60),  # 2**60 values by reference, a few bytes of text
    ("nested", "a = " + "dict(x=" * 200 + "1" + ")" * 200),
    ("parentheses", "a = " + "[" * 5000 + "]" * 5000),
    ("long chain", "a = " + "+".join(["1"] * 200000)),
    ("huge int", "a = " + "9" * 5000),
    ("infinite", "a = 1e999"),
    ("too long", "a = 1\n" * 300000),
    ("not text", 12345),
])
def test_hostile_mmengine_configs_are_checkpoint_errors(name, cfg):
    import time

    from cartoonseg.checkpoint import parse_mmengine_config

    start = time.monotonic()
    with pytest.raises(CheckpointError):
        parse_mmengine_config(cfg)
    assert time.monotonic() - start < 30  # bounded: unpatched, "squares" never returns


@pytest.mark.parametrize("model", [5, {"backbone": [1]}, {"bbox_head": [1, 2]}, {"backbone": {"widen_factor": "x"}},
                                   {"bbox_head": {"num_classes": 1e300}}, {"neck": {"in_channels": 5}},
                                   {"data_preprocessor": {"std": [0, 0, 0]}}])
def test_wrong_config_types_are_checkpoint_errors(model):
    from cartoonseg.checkpoint import detector_config_from_mmengine

    try:
        detector_config_from_mmengine({"model": model})
    except CheckpointError:
        return
    assert model == {"backbone": [1]}  # a non-dict section reads as absent: defaults, then the shape check decides


def test_hostile_checkpoint_is_one_cli_error_line(tmp_path, capsys):
    from cartoonseg.__main__ import main

    torch.save({"meta": {"cfg": "a = 10\n" + "a = a * a\n" * 40}, "state_dict": {"backbone.x": torch.zeros(1)}},
               tmp_path / "hang.ckpt")
    _image(tmp_path / "a.png")
    code = main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--detector",
                 str(tmp_path / "hang.ckpt"), "--refiner", "none", "--no-download"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "meta['cfg']" in err and err.count("\n") == 1, err


# --------------------------------------------------- 5. architecture checked against the file before allocating
def test_a_declared_architecture_is_checked_before_it_is_allocated(tmp_path):
    import resource

    from safetensors.torch import save_file

    big = {**DETECTOR_PRESETS["l"].to_dict(), "widen_factor": 2.0}  # ~4x the L model: > 1 GB of fp32 weights
    save_file({"x": torch.zeros(1)}, str(tmp_path / "big.safetensors"),
              metadata={"cartoonseg": json.dumps({"kind": "detector", "config": big})})
    assert (tmp_path / "big.safetensors").stat().st_size < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="does not match RTMDetIns"):
        cartoonseg.load_detector(tmp_path / "big.safetensors")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # kB on Linux
    assert grown_mb < 500, f"the loader grew by {grown_mb:.0f} MB for a {big['widen_factor']}x header"
    for config, words in (({"kind": "refiner", "config": {"in_ch": 10**9}}, "in_ch"),
                          ({"kind": "detector", "config": {**big, "widen_factor": 4.0}}, "widen_factor"),
                          ({"kind": "refiner", "config": [1]}, "corrupt cartoonseg metadata")):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"),
                  metadata={"cartoonseg": json.dumps(config)})
        loader = cartoonseg.load_refiner if config["kind"] == "refiner" else cartoonseg.load_detector
        with pytest.raises(CheckpointError, match=words):
            loader(tmp_path / "bad.safetensors")


def test_expanded_tensors_are_refused(tmp_path):
    huge = torch.zeros(1).expand(10**6, 4, 3, 3)  # 144 MB declared, 4 bytes stored (the case asked 230 GB)
    torch.save({"state_dict": {"conv_in.weight": huge, "side1.weight": torch.zeros(1, 64, 3, 3)}},
               tmp_path / "e.ckpt")
    assert (tmp_path / "e.ckpt").stat().st_size < 10_000
    with pytest.raises(CheckpointError, match="expanded or overlapping view"):
        cartoonseg.load_refiner(tmp_path / "e.ckpt")
    torch.manual_seed(0)  # real files (aliased head convs included) still load
    det = cartoonseg.build_detector("tiny")
    save_weights(det, tmp_path / "d.safetensors")
    loaded = cartoonseg.load_detector(tmp_path / "d.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(det.state_dict().values(), loaded.state_dict().values()))
