"""The shipped Ken Burns workflow end to end in a REAL ComfyUI server (marker ``comfy``).

``workflows/kenburns.json`` (the variant without diffusion) is loaded by the real page (headless Chromium, classic
frontend of the harness in ``../shared/tools/comfy_harness``), converted to an API prompt by ``app.graphToPrompt``
and executed with tiny random weights written here: detector and refiner in the released file layouts, and a tiny
Depth Anything V2 in the transformers folder layout under ``models/cartoonseg/depth``. The animated WEBP that
``SaveAnimatedWEBP`` writes must have the clip's frame count (with ping-pong) and the image size. Random weights
find no character here, so the instance layers are exercised by ``test_kenburns.py``, not by this test. The
diffusion variant is only loaded in the page (it needs an SD checkpoint).

Environment as in ``test_comfy_real.py``: ``CARTOONSEG_COMFY_VENV`` (default ``/tmp/comfyharness/venv``) and
``CARTOONSEG_COMFY_HARNESS``; set up with ``.ci/setup_comfy.sh``. Missing pieces skip locally and fail under ``CI``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from _comfy_real import REPO, assert_page_ok, load_harness, make_workspace, running_server, ui_check

pytestmark = pytest.mark.comfy

IMG_H, IMG_W = 96, 128
FRAMES = 6


@pytest.fixture(scope="module")
def harness():
    return load_harness("cartoonseg_kb_run_prompt")


def _tiny_depth_model(folder: Path) -> None:
    """A randomly initialised Depth Anything (V2 architecture, tiny widths) in the transformers folder layout."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    backbone = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        head_hidden_size=8, patch_size=14)
    model = transformers.DepthAnythingForDepthEstimation(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 70, "width": 70}, "ensure_multiple_of": 14, "keep_aspect_ratio": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (IMG_W, IMG_H), (200, 225, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 70, IMG_W, IMG_H), fill=(120, 180, 100))
    draw.ellipse((30, 20, 70, 90), fill=(230, 120, 160), outline=(20, 20, 20), width=2)
    ws = make_workspace(tmp_path_factory.mktemp("kenburns_real"), "cartoonseg_kb_test", img,
                        "cartoonseg_kenburns_test.png")
    _tiny_depth_model(ws["root"] / "models" / "cartoonseg" / "depth" / "tiny-depth-anything")
    return ws


@pytest.fixture(scope="module")
def server(harness, workspace):
    with running_server(harness, workspace) as srv:
        yield srv


def _ui_check(server, workflow: Path, out_dir: Path, export_api: bool) -> dict:
    summary = ui_check(server, workflow, out_dir, export_api)
    assert_page_ok(summary, workflow)
    return summary


def test_kenburns_workflow_runs_end_to_end(harness, server, workspace, tmp_path):
    from PIL import Image

    workflow = REPO / "workflows" / "kenburns.json"
    _ui_check(server, workflow, tmp_path, export_api=True)
    prompt = json.loads((tmp_path / "kenburns_api.json").read_text())
    by_type: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append(node_id)
    for needed in ("LoadImage", "CartoonSegSegment", "CartoonSegDepthEstimate", "CartoonSegDepthPool",
                   "CartoonSegInpaintPatchMatch", "CartoonSegCameraPath", "CartoonSegKenBurns", "SaveAnimatedWEBP"):
        assert len(by_type.get(needed, [])) == 1, needed
    one = {k: prompt[v[0]]["inputs"] for k, v in by_type.items()}
    # the shipped defaults survived the page's conversion
    assert one["CartoonSegCameraPath"]["preset"] == "auto" and one["CartoonSegCameraPath"]["frames"] == 75
    assert one["SaveAnimatedWEBP"]["fps"] == [by_type["CartoonSegKenBurns"][0], 2]  # fps wired from the renderer
    # test settings: our image, tiny local models, accept every random detection, a short clip
    one["LoadImage"]["image"] = workspace["image"].name
    depth_loader = prompt[by_type["CartoonSegDepthLoader"][0]]["inputs"]
    depth_loader.update(model="tiny-depth-anything", auto_download=False)
    one["CartoonSegModelLoader"].update(auto_download=False)
    # random weights give all-or-nothing masks; 0.7 makes them empty, so the clip runs the "no character found"
    # path end to end (the layered path is covered by test_kenburns.py)
    one["CartoonSegSegment"].update(score_threshold=0.0, max_instances=2, det_size=256, refine_size=128,
                                    mask_threshold=0.7)
    one["CartoonSegCameraPath"].update(frames=FRAMES)
    t0 = time.time()
    result = harness.run_prompt(server, prompt, timeout=600)
    status = (result.get("status") or {}).get("status_str")
    assert result["accepted"], f"prompt rejected: {result.get('error')} {result.get('node_errors')}"
    assert status == "success" and not result["execution_error"], (
        f"execution failed: {json.dumps(result['execution_error'], indent=1)[:4000]}\n{server.log_tail(40)}")
    print(f"\nkenburns workflow executed in {time.time() - t0:.1f}s")
    files = [Path(server.workdir) / "output" / item.get("subfolder", "") / item["filename"]
             for out in result["outputs"].values() for item in out.get("images", [])
             if item["filename"].endswith(".webp")]
    assert len(files) == 1 and files[0].is_file()
    with Image.open(files[0]) as webp:
        assert webp.size == (IMG_W, IMG_H)
        assert getattr(webp, "n_frames", 1) == 2 * FRAMES - 2  # ping-pong playback


def test_diffusion_variant_loads_in_the_page(server, tmp_path):
    _ui_check(server, REPO / "workflows" / "kenburns_diffusion.json", tmp_path, export_api=False)


def test_frames_feed_the_core_video_nodes(harness, server, workspace):
    """The renderer's frames IMAGE batch and fps FLOAT go straight into ComfyUI's core ``CreateVideo`` ->
    ``SaveVideo`` (mp4, H.264). Those nodes exist from ComfyUI 0.3.3x (2025) on; an older ComfyUI skips."""
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
    result = harness.run_prompt(server, prompt, timeout=600)
    assert result["accepted"], f"prompt rejected: {result.get('error')} {result.get('node_errors')}"
    status = (result.get("status") or {}).get("status_str")
    assert status == "success" and not result["execution_error"], (
        f"execution failed: {json.dumps(result['execution_error'], indent=1)[:4000]}\n{server.log_tail(40)}")
    videos = sorted((Path(server.workdir) / "output").rglob("cartoonseg_kb_video*.mp4"))
    assert len(videos) == 1
    with av.open(str(videos[0])) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(12.0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 4 and frames[0].shape == (IMG_H, IMG_W, 3)
