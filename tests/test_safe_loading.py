"""Safe writing and downloading of weights (issue 11): a failed, interrupted or tampered download never replaces a
good file, and an interrupted safetensors save never leaves a half-written file at the destination.

The downloads go through the real huggingface_hub client against the ``fake_hub`` fixture (conftest.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

import cartoonseg
from cartoonseg import hub
from cartoonseg.checkpoint import load_refiner, save_weights
from cartoonseg.outputs import MANIFEST


GOOD = b"good weights \x00\x01" * 500


def _spec(data: bytes = GOOD) -> hub.WeightsSpec:
    return hub.WeightsSpec("w.ckpt", hashlib.sha256(data).hexdigest(), repo_id="someone/repo")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("w.ckpt", "w.ckpt.sha256-mismatch"))


@pytest.mark.parametrize("failure", ["tampered", "truncated", "missing"])
def test_failed_download_never_replaces_a_good_file(fake_hub, tmp_path, failure):
    """The download step itself (hub._download_verified) with a good file already at the destination."""
    target = tmp_path / "w.ckpt"
    target.write_bytes(GOOD)
    if failure == "tampered":
        fake_hub.files["w.ckpt"] = b"evil" * 100
    elif failure == "truncated":
        fake_hub.files["w.ckpt"] = GOOD
        fake_hub.truncate = True
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub._download_verified(_spec(), target, how_to=f"place it at {target}")
    assert str(target) in str(info.value)
    if failure == "tampered":
        assert "sha256" in str(info.value)
        assert (tmp_path / "w.ckpt.sha256-mismatch").read_bytes() == b"evil" * 100
    assert target.read_bytes() == GOOD
    assert _leftovers(tmp_path) == []  # no temp folder or .incomplete file left behind
    assert fake_hub.requests  # the download was really attempted


def test_good_download_is_renamed_into_place(fake_hub, tmp_path):
    fake_hub.files["w.ckpt"] = GOOD
    out = hub.resolve_weights("w.ckpt", spec=_spec(), download_dir=tmp_path)
    assert out == tmp_path / "w.ckpt" and out.read_bytes() == GOOD and _leftovers(tmp_path) == []
    # a file already in download_dir is used as it is: no request, nothing overwritten
    fake_hub.files["w.ckpt"] = b"newer"
    n = len(fake_hub.requests)
    assert hub.resolve_weights("w.ckpt", spec=_spec(), download_dir=tmp_path).read_bytes() == GOOD
    assert len(fake_hub.requests) == n


def test_interrupted_download_leaves_no_file(fake_hub, tmp_path):
    fake_hub.files["w.ckpt"] = GOOD
    fake_hub.truncate = True
    with pytest.raises(hub.WeightsUnavailableError, match="downloading w.ckpt failed"):
        hub.resolve_weights("w.ckpt", spec=_spec(), download_dir=tmp_path / "dl")
    assert not (tmp_path / "dl" / "w.ckpt").exists() and list((tmp_path / "dl").iterdir()) == []


def test_interrupted_safetensors_save_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch

    torch.manual_seed(0)
    old = cartoonseg.build_refiner("tiny")
    path = save_weights(old, tmp_path / "r.safetensors")
    before = path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "r.safetensors"]

    real = safetensors.torch.save_file

    def dies_halfway(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(Path(filename).read_bytes()[:1000])  # a half-written file, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_halfway)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        save_weights(cartoonseg.build_refiner("tiny"), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST, "r.safetensors"]
    monkeypatch.undo()
    loaded = load_refiner(path)
    for k, v in old.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_killed_download_leaves_no_partial_data_behind(fake_hub, tmp_path):
    """A download killed mid-way (SIGKILL, power loss) could not clean its temporary folder, which used a random
    name no later run recognised: each try left up to a whole weights file of partial data in the models folder
    forever. The next download now removes the temporaries of dead writers, and keeps those of live ones (a
    concurrent download by another rank)."""
    import subprocess
    import sys

    from cartoonseg import outputs

    dl = tmp_path / "dl"
    dl.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    stale = dl / outputs._tmp_name("w.ckpt", folder=True).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    running = dl / outputs._tmp_name("w.ckpt", folder=True).replace(f"-{os.getpid()}-", f"-{live}-")
    for folder in (stale, running):
        folder.mkdir()
        (folder / "w.ckpt.incomplete").write_bytes(b"half")
    fake_hub.files["w.ckpt"] = GOOD
    assert hub.resolve_weights("w.ckpt", spec=_spec(), download_dir=dl).read_bytes() == GOOD
    assert not stale.exists() and running.exists()
    assert sorted(p.name for p in dl.iterdir()) == sorted([running.name, "w.ckpt"])
