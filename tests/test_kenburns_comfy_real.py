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

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("CARTOONSEG_COMFY_HARNESS", REPO.parent / "shared" / "tools" / "comfy_harness"))
VENV = Path(os.environ.get("CARTOONSEG_COMFY_VENV", "/tmp/comfyharness/venv"))
CHROMIUM = os.environ.get("COMFY_HARNESS_CHROMIUM", "/usr/bin/chromium")
IMG_H, IMG_W = 96, 128
FRAMES = 6


def _unavailable(message: str):
    if os.environ.get("CI"):
        pytest.fail(f"real-ComfyUI test cannot run in CI: {message} (run .ci/setup_comfy.sh)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def harness():
    for path, what in ((HARNESS / "run_prompt.py", "comfy harness"), (VENV / "bin" / "python", "harness venv"),
                       (VENV / "ComfyUI" / "main.py", "harness ComfyUI copy"), (Path(CHROMIUM), "chromium")):
        if not path.exists():
            _unavailable(f"{what} not found: {path}")
    spec = importlib.util.spec_from_file_location("cartoonseg_kb_run_prompt", HARNESS / "run_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    import cartoonseg
    from cartoonseg.checkpoint import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("kenburns_real")
    torch.manual_seed(0)
    models = root / "models" / "cartoonseg"
    save_mmengine_detector_checkpoint(cartoonseg.build_detector("tiny"), models / "rtmdetl_e60.ckpt")
    save_flat_refiner_checkpoint(cartoonseg.build_refiner("tiny"), models / "refine_last.ckpt")
    _tiny_depth_model(models / "depth" / "tiny-depth-anything")
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(f"cartoonseg_kb_test:\n    base_path: {root}\n    cartoonseg: models/cartoonseg\n")
    img = Image.new("RGB", (IMG_W, IMG_H), (200, 225, 250))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 70, IMG_W, IMG_H), fill=(120, 180, 100))
    draw.ellipse((30, 20, 70, 90), fill=(230, 120, 160), outline=(20, 20, 20), width=2)
    image = root / "cartoonseg_kenburns_test.png"
    img.save(image)
    pack = root / "pack" / "cartoonseg"
    pack.parent.mkdir()
    pack.symlink_to(REPO, target_is_directory=True)
    return {"root": root, "yaml": yaml, "image": image, "pack": pack}


@pytest.fixture(scope="module")
def server(harness, workspace):
    srv = harness.ComfyServer(
        root=str(VENV / "ComfyUI"), python=str(VENV / "bin" / "python"), packs=[str(workspace["pack"])],
        inputs=[str(workspace["image"])], extra_args=["--extra-model-paths-config", str(workspace["yaml"])])
    try:
        srv.start(timeout=240)
    except RuntimeError as exc:
        srv.stop()
        pytest.fail(f"ComfyUI did not start: {exc}")
    try:
        yield srv
    finally:
        srv.stop()


def _ui_check(server, workflow: Path, out_dir: Path, export_api: bool) -> dict:
    cmd = [str(VENV / "bin" / "python"), str(HARNESS / "ui_check.py"), "--url", server.url, "--workflow",
           str(workflow), "--screenshot", str(out_dir / f"{workflow.stem}.png")]
    if export_api:
        cmd += ["--export-api", str(out_dir / f"{workflow.stem}_api.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ui_check.py gave no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")
    problems = {k: summary.get(k) for k in ("missing_node_types", "load_error", "console_errors", "page_errors")
                if summary.get(k)}
    assert proc.returncode == 0 and summary.get("ok") and not problems, f"{workflow.name}: {problems}"
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
