"""Weights resolution: local files first, sha256-checked downloads through huggingface_hub from the fake hub of
conftest.py (127.0.0.1) (tests never touch the network), offline mode and clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cartoonseg import hub


def _spec(data: bytes, name: str = "weights.ckpt") -> hub.WeightsSpec:
    return hub.WeightsSpec(name, hashlib.sha256(data).hexdigest(), repo_id="someone/some-repo")


def test_existing_path_and_search_dirs(tmp_path):
    f = tmp_path / "x.ckpt"
    f.write_bytes(b"abc")
    assert hub.resolve_weights(f) == f
    (tmp_path / "models").mkdir()
    placed = tmp_path / "models" / "rtmdetl_e60.ckpt"
    placed.write_bytes(b"pre-placed")
    assert hub.resolve_weights("detector", search_dirs=[tmp_path / "nothing", tmp_path / "models"]) == placed
    assert hub.resolve_weights("rtmdetl_e60.ckpt", search_dirs=[tmp_path / "models"]) == placed


def test_download_from_fake_hub_with_sha256(fake_hub, tmp_path):
    data = b"\x00weights\x01" * 1000
    fake_hub.files["weights.ckpt"] = data
    out = hub.resolve_weights("weights.ckpt", spec=_spec(data), download_dir=tmp_path / "dl")
    assert out == tmp_path / "dl" / "weights.ckpt" and out.read_bytes() == data
    assert any("/someone/some-repo/resolve/main/weights.ckpt" in r for r in fake_hub.requests)
    # second call finds the file locally: no new request
    n = len(fake_hub.requests)
    assert hub.resolve_weights("weights.ckpt", spec=_spec(data), search_dirs=[tmp_path / "dl"]) == out
    assert len(fake_hub.requests) == n


def test_checksum_mismatch_is_reported_and_quarantined(fake_hub, tmp_path):
    fake_hub.files["weights.ckpt"] = b"tampered"
    spec = _spec(b"original")
    with pytest.raises(hub.WeightsUnavailableError, match="sha256") as info:
        hub.resolve_weights("weights.ckpt", spec=spec, download_dir=tmp_path)
    assert str(tmp_path / "weights.ckpt") in str(info.value)
    assert not (tmp_path / "weights.ckpt").exists()
    assert (tmp_path / "weights.ckpt.sha256-mismatch").exists()


def test_missing_on_hub_names_url_and_destination(fake_hub, tmp_path):
    with pytest.raises(hub.WeightsUnavailableError) as info:
        hub.resolve_weights("detector", download_dir=tmp_path)
    msg = str(info.value)
    assert "dreMaz/AnimeInstanceSegmentation/resolve/main/rtmdetl_e60.ckpt" in msg
    assert str(tmp_path / "rtmdetl_e60.ckpt") in msg


def test_a_folder_at_the_target_is_one_clear_error(fake_hub, tmp_path):
    """A folder where the file belongs used to end the download with a raw IsADirectoryError naming neither the URL
    nor where to place the file; now one WeightsUnavailableError says both, before downloading, and the folder stays."""
    data = b"weights" * 100
    fake_hub.files["weights.ckpt"] = data
    (tmp_path / "weights.ckpt").mkdir()
    (tmp_path / "weights.ckpt" / "mine.txt").write_text("user data")
    with pytest.raises(hub.WeightsUnavailableError, match="is a folder") as info:
        hub.resolve_weights("weights.ckpt", spec=_spec(data), download_dir=tmp_path)
    msg = str(info.value)
    assert "/someone/some-repo/resolve/main/weights.ckpt" in msg and str(tmp_path / "weights.ckpt") in msg
    assert info.value.missing == [("weights.ckpt", _spec(data).url, str(tmp_path / "weights.ckpt"))]
    assert (tmp_path / "weights.ckpt" / "mine.txt").read_text() == "user data"
    assert not fake_hub.requests


@pytest.mark.parametrize("where", ["models folder", "temporary folder"])
def test_an_unwritable_models_folder_is_one_clear_error(fake_hub, monkeypatch, tmp_path, where):
    """Tests run as root, so the folder is made unwritable by making its creation (or the download's temporary
    folder inside it) raise PermissionError: the error names the URL and the path to place the file at by hand."""
    data = b"weights" * 100
    fake_hub.files["weights.ckpt"] = data
    dl = tmp_path / "models"
    if where == "temporary folder":
        dl.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if (self == dl and not self.exists()) or self.parent == dl:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(hub.WeightsUnavailableError, match="PermissionError") as info:
        hub.resolve_weights("weights.ckpt", spec=_spec(data), download_dir=dl)
    msg = str(info.value)
    assert "/someone/some-repo/resolve/main/weights.ckpt" in msg and str(dl / "weights.ckpt") in msg
    assert info.value.missing == [("weights.ckpt", _spec(data).url, str(dl / "weights.ckpt"))]


def test_offline_and_disabled_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.WeightsUnavailableError, match="HF_HUB_OFFLINE") as info:
        hub.resolve_weights("refiner", search_dirs=[tmp_path])
    assert "https://huggingface.co/dreMaz/AnimeInstanceSegmentation/resolve/main/refine_last.ckpt" in str(info.value)
    assert str(tmp_path / "refine_last.ckpt") in str(info.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(hub.WeightsUnavailableError, match="downloading is disabled"):
        hub.resolve_weights("refiner", search_dirs=[tmp_path], allow_download=False)
    with pytest.raises(hub.WeightsUnavailableError, match="not found"):
        hub.resolve_weights("unknown.ckpt", search_dirs=[tmp_path])


def test_cartoonseg_no_download_stops_every_download(fake_hub, monkeypatch, tmp_path):
    """CARTOONSEG_NO_DOWNLOAD=1 forbids downloads in the library and the CLI too (it used to be read by the nodes
    only: `segment` and `tag` went to the hub with it set); a file already on disk still loads."""
    fake_hub.files["weights.ckpt"] = b"abc"
    spec = hub.WeightsSpec("weights.ckpt", None, repo_id="someone/some-repo")
    monkeypatch.setenv("CARTOONSEG_NO_DOWNLOAD", "1")
    with pytest.raises(hub.WeightsUnavailableError, match="CARTOONSEG_NO_DOWNLOAD is set"):
        hub.resolve_weights("weights.ckpt", download_dir=tmp_path, spec=spec)
    assert fake_hub.requests == []
    monkeypatch.setenv("CARTOONSEG_NO_DOWNLOAD", "0")  # "0" means downloads are allowed
    assert hub.resolve_weights("weights.ckpt", download_dir=tmp_path, spec=spec).read_bytes() == b"abc"
    monkeypatch.setenv("CARTOONSEG_NO_DOWNLOAD", "1")
    assert hub.resolve_weights("weights.ckpt", download_dir=tmp_path, spec=spec).read_bytes() == b"abc"


def test_released_specs_are_the_published_ones():
    assert hub.RELEASED_WEIGHTS["detector"].sha256 == "8052de69f831188cbe7331500c9cf73252d73f2a22da9c2eb9f6414d0366fb36"
    assert hub.RELEASED_WEIGHTS["refiner"].sha256 == "c41a7c1cd54e63c1492d273466a540b6bff71ce9c2a01877add52bec554635a6"
    assert Path(hub.RELEASED_WEIGHTS["refiner"].filename).name == "refine_last.ckpt"


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "1e9"])
def test_a_bad_net_timeout_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("CARTOONSEG_NET_TIMEOUT", value)
    with pytest.raises(ValueError, match="CARTOONSEG_NET_TIMEOUT must be a number of seconds"):
        hub.net_timeout()
    monkeypatch.setenv("CARTOONSEG_NET_TIMEOUT", "2.5")
    assert hub.net_timeout() == 2.5
