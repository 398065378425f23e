"""Shared pieces of the REAL-ComfyUI tests (``test_comfy_real.py``, ``test_kenburns_comfy_real.py``): where the
harness lives, the skip-locally / fail-under-CI rule, a workspace with tiny weights in the released layouts, the
server, and the headless-page check.

Environment: ``CARTOONSEG_COMFY_VENV`` (default ``/tmp/comfyharness/venv``), ``CARTOONSEG_COMFY_HARNESS`` (default
``../shared/tools/comfy_harness``), ``COMFY_HARNESS_CHROMIUM``; all set up by ``.ci/setup_comfy.sh``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _comfy_stub import write_tiny_released_weights

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(os.environ.get("CARTOONSEG_COMFY_HARNESS", REPO.parent / "shared" / "tools" / "comfy_harness"))
VENV = Path(os.environ.get("CARTOONSEG_COMFY_VENV", "/tmp/comfyharness/venv"))
CHROMIUM = os.environ.get("COMFY_HARNESS_CHROMIUM", "/usr/bin/chromium")


def unavailable(message: str):
    """Skip locally; fail when ``CI`` is set (CI must run the real-ComfyUI tests)."""
    if os.environ.get("CI"):
        pytest.fail(f"real-ComfyUI test cannot run in CI: {message} (run .ci/setup_comfy.sh)")
    pytest.skip(message)


def load_harness(module_name: str):
    """The harness's ``run_prompt`` module, after checking every piece the tests need exists."""
    for path, what in ((HARNESS / "run_prompt.py", "comfy harness"), (VENV / "bin" / "python", "harness venv"),
                       (VENV / "ComfyUI" / "main.py", "harness ComfyUI copy"), (Path(CHROMIUM), "chromium")):
        if not path.exists():
            unavailable(f"{what} not found: {path}")
    spec = importlib.util.spec_from_file_location(module_name, HARNESS / "run_prompt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_workspace(root: Path, paths_name: str, image, image_name: str) -> dict:
    """Tiny weights in the released layout under ``root/models/cartoonseg``, an ``extra_model_paths.yaml`` naming
    them (entry ``paths_name``), the test ``image`` (PIL) saved as ``image_name``, and a link to the repository
    named like an installed pack (``root/pack/cartoonseg``)."""
    write_tiny_released_weights(root / "models")
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(f"{paths_name}:\n    base_path: {root}\n    cartoonseg: models/cartoonseg\n")
    path = root / image_name
    image.save(path)
    pack = root / "pack" / "cartoonseg"
    pack.parent.mkdir()
    pack.symlink_to(REPO, target_is_directory=True)
    return {"root": root, "yaml": yaml, "image": path, "pack": pack}


@contextmanager
def running_server(harness, workspace: dict) -> Iterator[object]:
    """A ComfyUI server with the pack, the test image and the workspace's model paths; stopped afterwards."""
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


def ui_check(server, workflow: Path, out_dir: Path, export_api: bool = False, timings: dict | None = None) -> dict:
    """Load ``workflow`` in the real page (headless Chromium); the harness's JSON summary plus ``returncode``.
    With ``export_api`` the page's API prompt is written to ``out_dir/<name>_api.json``."""
    name = workflow.stem
    cmd = [str(VENV / "bin" / "python"), str(HARNESS / "ui_check.py"), "--url", server.url, "--workflow",
           str(workflow), "--screenshot", str(out_dir / f"{name}.png"), "--summary-out",
           str(out_dir / f"{name}_ui.json")]
    if export_api:
        cmd += ["--export-api", str(out_dir / f"{name}_api.json")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if timings is not None:
        timings[f"ui_check_{name}_s"] = round(time.time() - t0, 2)
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"ui_check.py gave no JSON (rc={proc.returncode}): {proc.stderr[-3000:]}")
    summary["returncode"] = proc.returncode
    return summary


def assert_page_ok(summary: dict, workflow: Path):
    problems = {k: summary.get(k) for k in ("missing_node_types", "load_error", "console_errors", "page_errors")
                if summary.get(k)}
    assert summary["returncode"] == 0 and summary.get("ok") and not problems, f"{workflow.name}: {problems}"
