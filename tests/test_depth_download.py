"""Depth-model download placement (issue 11): ``resolve_depth_model`` downloads into a temporary folder next to
the destination, checks the files there and only then renames it into place, so a failed, killed or truncated
download never leaves a folder that later loads as a complete model; offline gives one message naming the repo id,
the URL and the destination."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_depth import make_tiny_depth_model

from cartoonseg import WeightsUnavailableError
from cartoonseg.depth import DEPTH_MODELS, DepthEstimator, load_depth_model, resolve_depth_model

FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
SPEC = DEPTH_MODELS["small"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny-depth-anything")


@pytest.fixture()
def hub(monkeypatch, tiny_dir):
    """snapshot_download stand-in; ``mode``: ok, fail_halfway (writes config.json then drops), truncated."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    state = {"mode": "ok", "calls": []}

    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        state["calls"].append(local_dir)
        out = Path(local_dir)
        shutil.copy(tiny_dir / "config.json", out / "config.json")
        if state["mode"] == "fail_halfway":
            (out / "model.safetensors").write_bytes((tiny_dir / "model.safetensors").read_bytes()[:1000])
            raise ConnectionError("connection reset by peer")
        data = (tiny_dir / "model.safetensors").read_bytes()
        (out / "model.safetensors").write_bytes(data[: len(data) // 2] if state["mode"] == "truncated" else data)
        shutil.copy(tiny_dir / "preprocessor_config.json", out / "preprocessor_config.json")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return state


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("mode, message", [("fail_halfway", "connection reset"),
                                           ("truncated", "incomplete .*model.safetensors is unreadable")])
def test_failed_download_leaves_nothing_that_loads(hub, tmp_path, mode, message):
    models = tmp_path / "models"
    target = models / SPEC.folder_name
    hub["mode"] = mode
    with pytest.raises(WeightsUnavailableError, match=message) as err:
        resolve_depth_model("small", search_dirs=[models])
    text = str(err.value)
    assert SPEC.repo_id in text and SPEC.url in text and str(target) in text
    assert not target.exists() and _leftovers(models) == []  # no half folder, no temporary folder
    assert Path(hub["calls"][0]).parent == models  # the download went to a private folder next to the target
    with pytest.raises(WeightsUnavailableError, match="not on disk"):
        resolve_depth_model("small", search_dirs=[models], allow_download=False)
    # the next (working) attempt places the complete model under the final name
    hub["mode"] = "ok"
    assert resolve_depth_model("small", search_dirs=[models]) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert _leftovers(models) == [SPEC.folder_name]
    assert isinstance(load_depth_model(target), DepthEstimator)


def test_incomplete_folder_from_before_is_completed_not_trusted(hub, tmp_path):
    models = tmp_path / "models"
    target = models / SPEC.folder_name
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half a file")  # e.g. an old manual copy that was interrupted
    path = resolve_depth_model("small", search_dirs=[models])
    assert path == target and len(hub["calls"]) == 1
    assert isinstance(load_depth_model(target), DepthEstimator)  # the good file replaced the half one
    assert _leftovers(models) == [SPEC.folder_name]


def test_offline_gives_one_message_with_repo_url_and_destination(hub, tmp_path, monkeypatch):
    models = tmp_path / "models"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_depth_model("small", search_dirs=[models])
    text = str(err.value)
    assert "HF_HUB_OFFLINE" in text and SPEC.repo_id in text and SPEC.url in text
    assert str(models / SPEC.folder_name) in text
    assert hub["calls"] == [] and not models.exists()
