"""Shared fixtures.

Golden data are read in place from ``../shared/reference`` (or ``$CARTOONSEG_REFERENCE``); they are never
copied into the repository. When ``CI`` is set, missing golden data fail the tests instead of skipping them.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    env = os.environ.get("CARTOONSEG_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference() -> Path:
    """Folder of golden files; fails under CI when absent, skips otherwise."""
    path = reference_dir()
    if not path.is_dir():
        message = f"golden reference folder not found: {path} (set CARTOONSEG_REFERENCE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # The golden files were produced with 2 threads; tolerances cover 1 vs 2, so just pin it.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


# ------------------------------------------------------------------------------------------- CPU capabilities
@pytest.fixture
def bf16_kernels():
    """Skip unless this CPU (under its ``ONEDNN_MAX_CPU_ISA`` cap) runs bf16 kernels; AVX2-only CPUs do not, and
    there the fallback tests (``no_bf16``) cover what happens instead."""
    from cartoonseg.device import capabilities

    caps = capabilities("cpu")
    if "bf16" not in caps.supported:
        pytest.skip(f"no bf16 kernels on this {caps.description}")
    return caps


@pytest.fixture
def no_bf16(monkeypatch):
    """Make the capability probe report a CPU without bf16 kernels (an AVX2-only CPU), whatever this one has."""
    import cartoonseg.device as device

    fake = device.Capabilities(device="cpu", description="CPU AVX2 (test: probe reports no bf16 kernels)",
                               supported=("fp32",), native=(), cpu_isa="AVX2")
    device.clear_cache()
    monkeypatch.setattr(device, "_cpu_capabilities", lambda: fake)
    yield fake
    monkeypatch.undo()
    device.clear_cache()


# ------------------------------------------------------------------------------------------- fake hub
# A Hugging Face "resolve" endpoint on 127.0.0.1, so the real huggingface_hub client is exercised with no network.
class _Hub(http.server.BaseHTTPRequestHandler):
    """Serves ``files``; with ``truncate`` the body stops halfway (the connection drops mid-download)."""

    files: dict[str, bytes] = {}
    truncate = False
    requests: list[str] = []

    def _serve(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 5 or parts[2] != "resolve" or parts[4] not in self.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.files[parts[4]]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.end_headers()
        if body:
            self.wfile.write(data[: len(data) // 2] if self.truncate else data)
            if self.truncate:
                self.wfile.flush()
                self.close_connection = True

    def do_HEAD(self):  # noqa: N802
        self._serve(False)

    def do_GET(self):  # noqa: N802
        self._serve(True)

    def log_message(self, *args):
        pass


@pytest.fixture()
def spy_calls(monkeypatch):
    """``spy_calls(owner, name, raises=None) -> list``: replace ``owner.name`` by a spy that records each call's
    positional arguments in the returned list, then raises ``raises`` (an exception class) or calls the original.
    The input-checking tests use it to prove that a command fails before it resolves or loads any model."""

    def install(owner, name: str, raises: type[BaseException] | None = None) -> list:
        calls: list = []
        real = getattr(owner, name)

        def spy(*args, **kwargs):
            calls.append(args)
            if raises is not None:
                raise raises
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
        return calls

    return install


@pytest.fixture()
def fake_hub(monkeypatch, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "5")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    _Hub.files, _Hub.truncate, _Hub.requests = {}, False, []
    yield _Hub
    server.shutdown()


# ---------------------------------------------------------------------------------------------- stubbed ComfyUI
# Node test modules define ``PACK`` (a private package name for the node pack) and a module-scoped ``models_dir``
# fixture (ComfyUI's models folder); these fixtures then give them the installed stub, the loaded pack and its
# node classes. A module may override any of them (tests/_comfy_stub.py has the stub itself).
@pytest.fixture(scope="module")
def comfy(models_dir):
    from _comfy_stub import ComfyStub, installed

    with installed(ComfyStub(models_dir)) as state:
        yield state


@pytest.fixture(scope="module")
def pack(comfy, request):
    from _comfy_stub import loaded_pack

    with loaded_pack(request.module.PACK) as module:
        yield module


@pytest.fixture()
def nodes(pack, comfy):
    """The pack's NODE_CLASS_MAPPINGS, with the stub's counters and Cancel flag reset for each test."""
    comfy.reset()
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(autouse=True)
def _hub_looks_reachable(request, monkeypatch):
    """Tests stub the hub client (or use ``fake_hub``) and never touch the network, so the library's quick "is the
    hub reachable" probe (cartoonseg.hub.download_blocker) answers yes, except in tests marked ``network_probe``
    that check the probe itself."""
    if request.node.get_closest_marker("network_probe") is None:
        from cartoonseg import hub

        monkeypatch.setattr(hub, "_unreachable", lambda url: None)


# ---------------------------------------------------------------------------------------------- real ComfyUI
@pytest.fixture(scope="module", params=__import__("_comfy_real").GENERATIONS)
def generation(request) -> str:
    """``"2024"`` or ``"2025"``: a real-ComfyUI test module using it runs once per ComfyUI generation (one server
    each; ``tests/_comfy_real.py``)."""
    return request.param
