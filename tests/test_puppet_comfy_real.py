"""The shipped puppet workflow end to end in a REAL ComfyUI server (marker ``comfy``; one server for the module).

``workflows/puppet_animation.json`` (LoadImage -> model loader -> Segment -> Background Mask + Inpaint PatchMatch
-> Puppet Rig -> Puppet Animate with a preset -> SaveAnimatedWEBP) is loaded by the real page (headless Chromium,
the harness's classic frontend), converted to an API prompt by ``app.graphToPrompt`` and executed twice:

1. as shipped, with tiny random detector/refiner weights in the released layouts (whatever blobs they find are
   rigged and waved; the clip has the requested length and starts with the picture);
2. with the characters taken from the test picture's alpha channel instead (core LoadImage's MASK through
   ``CartoonSegMaskToInstances``, split into connected parts), so two drawn characters are rigged (automatic
   skeletons), waved and composited over the PatchMatch plate in the real server. The WEBP is saved lossless and
   checked (within 1: SaveAnimatedWEBP truncates ``255 * x``): frame count and size, frame 0 equals the picture, later frames move the characters, and pixels far
   from them never change.

Environment as in ``test_comfy_real.py`` (``.ci/setup_comfy.sh``); missing pieces skip locally and fail under CI.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from _comfy_real import REPO, assert_page_ok, load_harness, make_workspace, running_server, ui_check

pytestmark = pytest.mark.comfy

IMG_H, IMG_W = 96, 160
FRAMES = 6
WORKFLOW = REPO / "workflows" / "puppet_animation.json"


def _picture():
    """Sky and ground with two drawn stick figures; alpha 0 (LoadImage MASK 1) exactly on the figures."""
    import cv2
    from PIL import Image

    rgb = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    rgb[:] = (150, 200, 240)
    rgb[60:] = (120, 180, 100)
    rgb[::6, :] = (140, 190, 230)  # texture for PatchMatch
    alpha = np.full((IMG_H, IMG_W), 255, np.uint8)
    for cx, colour in ((40, (230, 110, 130)), (118, (240, 190, 80))):
        m = np.zeros((IMG_H, IMG_W), np.uint8)
        cv2.ellipse(m, (cx, 36), (7, 12), 0, 0, 360, 1, -1)
        cv2.circle(m, (cx, 18), 7, 1, -1)
        cv2.line(m, (cx - 5, 30), (cx - 17, 44), 1, 3)
        cv2.line(m, (cx + 5, 30), (cx + 17, 44), 1, 3)
        cv2.line(m, (cx - 3, 46), (cx - 5, 64), 1, 4)
        cv2.line(m, (cx + 3, 46), (cx + 5, 64), 1, 4)
        rgb[m > 0] = colour
        alpha[m > 0] = 0
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb, alpha == 0


@pytest.fixture(scope="module")
def harness():
    return load_harness("cartoonseg_puppet_run_prompt")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    image, _, _ = _picture()
    return make_workspace(tmp_path_factory.mktemp("puppet_real"), "cartoonseg_puppet_test", image,
                          "cartoonseg_puppet_test.png")


@pytest.fixture(scope="module")
def server(harness, workspace):
    with running_server(harness, workspace) as srv:
        yield srv


@pytest.fixture(scope="module")
def prompt(server, tmp_path_factory):
    """The shipped workflow converted by the real page (checked for load errors on the way)."""
    out = tmp_path_factory.mktemp("puppet_ui")
    summary = ui_check(server, WORKFLOW, out, export_api=True)
    assert_page_ok(summary, WORKFLOW)
    return json.loads((out / "puppet_animation_api.json").read_text())


def _by_type(prompt: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        out.setdefault(node["class_type"], []).append(node_id)
    return out


def _run(harness, server, prompt: dict) -> list[Path]:
    t0 = time.time()
    result = harness.run_prompt(server, prompt, timeout=600)
    status = (result.get("status") or {}).get("status_str")
    assert result["accepted"], f"prompt rejected: {result.get('error')} {result.get('node_errors')}"
    assert status == "success" and not result["execution_error"], (
        f"execution failed: {json.dumps(result['execution_error'], indent=1)[:4000]}\n{server.log_tail(40)}")
    print(f"\npuppet workflow executed in {time.time() - t0:.1f}s")
    return [Path(server.workdir) / "output" / item.get("subfolder", "") / item["filename"]
            for out in result["outputs"].values() for item in out.get("images", []) if item["filename"].endswith(".webp")]


def _frames(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as webp:
        assert webp.size == (IMG_W, IMG_H)
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(webp)])


def _settings(prompt: dict, workspace) -> dict[str, dict]:
    by_type = _by_type(prompt)
    for needed in ("LoadImage", "CartoonSegModelLoader", "CartoonSegSegment", "CartoonSegBackgroundMask",
                   "CartoonSegInpaintPatchMatch", "CartoonSegPuppetRig", "CartoonSegPuppetAnimate", "SaveAnimatedWEBP"):
        assert len(by_type.get(needed, [])) == 1, needed
    one = {k: prompt[v[0]]["inputs"] for k, v in by_type.items() if len(v) == 1}
    one["LoadImage"]["image"] = workspace["image"].name
    one["CartoonSegModelLoader"].update(auto_download=False)
    one["CartoonSegSegment"].update(score_threshold=0.0, max_instances=2, det_size=256, refine_size=128,
                                    mask_threshold=0.7)
    one["CartoonSegPuppetAnimate"].update(frames=FRAMES)
    one["SaveAnimatedWEBP"].update(lossless=True)
    return one


def test_shipped_workflow_runs_end_to_end(harness, server, workspace, prompt):
    by_type = _by_type(prompt)
    one = {k: prompt[v[0]]["inputs"] for k, v in by_type.items() if len(v) == 1}
    # the shipped defaults survived the page's conversion
    assert one["CartoonSegPuppetAnimate"]["preset"] == "wave" and one["CartoonSegPuppetAnimate"]["frames"] == 0
    assert one["SaveAnimatedWEBP"]["fps"] == [by_type["CartoonSegPuppetAnimate"][0], 2]  # fps from the animate node
    assert one["CartoonSegPuppetAnimate"]["plate"] == [by_type["CartoonSegInpaintPatchMatch"][0], 0]
    test_prompt = json.loads(json.dumps(prompt))
    _settings(test_prompt, workspace)
    files = _run(harness, server, test_prompt)
    assert len(files) == 1
    frames = _frames(files[0])
    _, rgb, _ = _picture()
    # frame 0 is the rest pose: the picture (SaveAnimatedWEBP truncates 255 * x, so values may be one lower)
    assert len(frames) == FRAMES and np.abs(frames[0].astype(np.int16) - rgb).max() <= 1


def test_workflow_animates_characters_from_a_mask(harness, server, workspace, prompt):
    test_prompt = json.loads(json.dumps(prompt))
    one = _settings(test_prompt, workspace)
    by_type = _by_type(test_prompt)
    load = by_type["LoadImage"][0]
    test_prompt["900"] = {"class_type": "CartoonSegMaskToInstances", "inputs": {
        "masks": [load, 1], "masks_are": "instances of one image", "mask_threshold": 0.5, "split_components": True,
        "min_area": 16, "image": [load, 0]}}
    one["CartoonSegPuppetRig"]["instances"] = ["900", 0]
    one["CartoonSegBackgroundMask"]["instances"] = ["900", 0]
    files = _run(harness, server, test_prompt)
    assert len(files) == 1
    frames = _frames(files[0]).astype(np.int16)
    _, rgb, figures = _picture()
    assert len(frames) == FRAMES
    assert np.abs(frames[0] - rgb).max() <= 1  # the rest pose is the picture
    assert max(np.abs(f - rgb).max() for f in frames[1:]) > 60  # the characters wave
    import cv2

    near = cv2.dilate(figures.astype(np.uint8), np.ones((33, 33), np.uint8)) > 0  # arm reach + plate ring
    assert (~near).mean() > 0.25
    assert all(np.abs(f[~near] - rgb[~near]).max() <= 1 for f in frames)
