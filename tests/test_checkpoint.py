"""Checkpoint reading: the released file layouts (generated here with exactly the released key sets), strict
loading with readable diffs, our safetensors format, the converter, and refusal of code-carrying pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from _checkpoint_writers import save_flat_refiner_checkpoint, save_mmengine_detector_checkpoint

import cartoonseg
from cartoonseg import checkpoint as ck
from cartoonseg.models import RTMDetIns


@pytest.fixture(scope="module")
def l_manifest(reference):
    return json.loads((reference / "rtmdet_ins_l_keys.json").read_text())


def test_l_model_matches_released_manifest(l_manifest):
    model = RTMDetIns(cartoonseg.DETECTOR_PRESETS["l"])
    sd = model.state_dict()
    expected = [(k, tuple(s)) for k, s, _ in l_manifest["state_dict"]]
    assert len(sd) == 942 == l_manifest["num_state_dict_entries"]
    assert sorted((k, tuple(v.shape)) for k, v in sd.items()) == sorted(expected)
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == 57_304_754 == l_manifest["num_parameters_unique"]
    # every alias group of the manifest shares one storage in our module tree
    for group in l_manifest["alias_groups"]:
        ptrs = {sd[k].data_ptr() for k in group}
        assert len(ptrs) == 1, group


def test_released_l_layout_loads_strictly(tmp_path, l_manifest):
    """A file with exactly the released layout: meta.cfg text + 942 keys, aliases sharing storage."""
    model = RTMDetIns(cartoonseg.DETECTOR_PRESETS["l"])
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.randn_like(p) * 0.01 + i * 1e-4)
    path = save_mmengine_detector_checkpoint(model, tmp_path / "rtmdetl_e60.ckpt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"meta", "state_dict"} and isinstance(raw["meta"]["cfg"], str)
    assert [k for k, _, _ in l_manifest["state_dict"]] == list(raw["state_dict"])
    assert raw["state_dict"]["bbox_head.reg_convs.2.1.conv.weight"].data_ptr() == \
        raw["state_dict"]["bbox_head.cls_convs.0.1.conv.weight"].data_ptr()
    loaded = cartoonseg.load_detector(path)
    assert loaded.config == cartoonseg.DETECTOR_PRESETS["l"]
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_meta_cfg_is_parsed_not_executed(tmp_path):
    model = cartoonseg.build_detector("tiny", score_thr=0.123, iou_thr=0.55, det_size=512)
    path = save_mmengine_detector_checkpoint(model, tmp_path / "d.ckpt")
    raw = torch.load(path, weights_only=True)
    # something that would run if the config were exec'd
    raw["meta"]["cfg"] = "import os\nos.system('touch PWNED')\n" + raw["meta"]["cfg"] + "x = __import__('os')\n"
    torch.save(raw, path)
    loaded = cartoonseg.load_detector(path)
    assert loaded.config.score_thr == 0.123 and loaded.config.iou_thr == 0.55 and loaded.config.det_size == 512
    assert not (tmp_path / "PWNED").exists()


def test_parse_mmengine_config_literals():
    text = (
        "a = 3\nb = dict(x=[1, 2, (3, 4)], y=dict(z=-1.5), w=None, t=True)\n"
        "c = dict(nested=b, s='str', k=2 * 3)\nd = some_function(1)\n"
    )
    cfg = ck.parse_mmengine_config(text)
    assert cfg["a"] == 3
    assert cfg["b"] == {"x": [1, 2, (3, 4)], "y": {"z": -1.5}, "w": None, "t": True}
    assert cfg["c"]["nested"] is cfg["b"] and cfg["c"]["k"] == 6
    assert "unparsed" in repr(cfg["d"])
    with pytest.raises(ck.CheckpointError):
        ck.parse_mmengine_config("model = dict(")


def test_unsupported_config_is_rejected(tmp_path):
    model = cartoonseg.build_detector("tiny")
    path = save_mmengine_detector_checkpoint(model, tmp_path / "d.ckpt")
    raw = torch.load(path, weights_only=True)
    raw["meta"]["cfg"] = raw["meta"]["cfg"].replace("type='CSPNeXt'", "type='ResNet'")
    torch.save(raw, path)
    with pytest.raises(ck.CheckpointError, match="backbone.type='ResNet'"):
        cartoonseg.load_detector(path)


def test_released_refiner_layout_and_lightning(tmp_path):
    model = cartoonseg.build_refiner("tiny")
    flat = save_flat_refiner_checkpoint(model, tmp_path / "refine_last.ckpt")
    assert cartoonseg.load_refiner(flat).config == model.config
    lightning = {"epoch": 3, "state_dict": {**{f"net.{k}": v for k, v in model.state_dict().items()},
                                            "gt_encoder.conv_in.conv.weight": torch.zeros(1)}}
    torch.save(lightning, tmp_path / "lightning.ckpt")
    loaded = cartoonseg.load_refiner(tmp_path / "lightning.ckpt")
    assert torch.equal(loaded.side1.weight, model.side1.weight)


def test_key_diff_is_readable(tmp_path):
    model = cartoonseg.build_detector("tiny")
    sd = model.state_dict()
    sd.pop("backbone.stem.0.conv.weight")
    sd["bbox_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(ck.CheckpointError) as info:
        ck.load_state_dict_strict(RTMDetIns(model.config), sd, "my.ckpt")
    msg = str(info.value)
    assert "my.ckpt" in msg and "missing: backbone.stem.0.conv.weight" in msg and "bbox_head.extra.weight" in msg
    sd = model.state_dict()
    sd["bbox_head.rtm_cls.0.bias"] = torch.zeros(3)
    with pytest.raises(ck.CheckpointError, match=r"rtm_cls.0.bias: file \(3,\) vs model \(1,\)"):
        ck.load_state_dict_strict(RTMDetIns(model.config), sd)


def test_inconsistent_aliases_are_rejected():
    model = cartoonseg.build_detector("tiny")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["bbox_head.reg_convs.1.0.bn.weight"] += 1
    with pytest.raises(ck.CheckpointError, match="aliased checkpoint entries differ"):
        ck.filter_mmdet_rtmdet_ins({"state_dict": sd})


def test_wrong_kind_truncated_and_pickled_code(tmp_path):
    det = cartoonseg.build_detector("tiny")
    ref = cartoonseg.build_refiner("tiny")
    save_flat_refiner_checkpoint(ref, tmp_path / "r.ckpt")
    save_mmengine_detector_checkpoint(det, tmp_path / "d.ckpt")
    with pytest.raises(ck.CheckpointError, match="use load_refiner"):
        cartoonseg.load_detector(tmp_path / "r.ckpt")
    with pytest.raises(ck.CheckpointError, match="use load_detector"):
        cartoonseg.load_refiner(tmp_path / "d.ckpt")
    data = (tmp_path / "d.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="truncated, corrupt"):
        cartoonseg.load_detector(tmp_path / "trunc.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match="empty"):
        cartoonseg.load_detector(tmp_path / "empty.ckpt")
    with pytest.raises(ck.CheckpointError, match="not found"):
        cartoonseg.load_detector(tmp_path / "missing.ckpt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ck.CheckpointError, match="not a weights-only checkpoint|truncated"):
        cartoonseg.load_detector(tmp_path / "evil.ckpt")


def test_convert_round_trip(tmp_path):
    det = cartoonseg.build_detector("tiny", num_classes=3)
    ref = cartoonseg.build_refiner("tiny")
    src_d = save_mmengine_detector_checkpoint(det, tmp_path / "d.ckpt")
    src_r = save_flat_refiner_checkpoint(ref, tmp_path / "r.ckpt")
    from cartoonseg.__main__ import main

    assert main(["convert", str(src_d), str(tmp_path / "d.safetensors")]) == 0
    assert main(["convert", str(src_r), str(tmp_path / "r.safetensors")]) == 0
    d2 = cartoonseg.load_detector(tmp_path / "d.safetensors")
    r2 = cartoonseg.load_refiner(tmp_path / "r.safetensors")
    assert d2.config == det.config and d2.config.num_classes == 3
    for a, b in zip(det.state_dict().values(), d2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ref.state_dict().values(), r2.state_dict().values()):
        assert torch.equal(a, b)
    # aliases stored once: fewer tensors in the file than state-dict keys
    from safetensors import safe_open

    with safe_open(str(tmp_path / "d.safetensors"), "pt") as f:
        assert len(list(f.keys())) < len(det.state_dict())
    with pytest.raises(ck.CheckpointError, match="not a refiner"):
        cartoonseg.load_refiner(tmp_path / "d.safetensors")


@pytest.mark.parametrize("preset", ["tiny", "s", "m", "x"])
def test_every_size_round_trips_through_meta_cfg(tmp_path, preset):
    model = cartoonseg.build_detector(preset, num_classes=2)
    path = save_mmengine_detector_checkpoint(model, tmp_path / "d.ckpt")
    loaded = cartoonseg.load_detector(path)
    assert loaded.config == model.config
    raw = torch.load(path, weights_only=True)
    flat = raw["state_dict"]
    torch.save(flat, tmp_path / "flat.ckpt")  # no cfg: sized from shapes
    assert cartoonseg.load_detector(tmp_path / "flat.ckpt").config == model.config


def test_corrupt_file_and_code_pickle_have_distinct_messages(tmp_path):
    """Random bytes, a damaged checkpoint and a pickle that would run code each say what they are (issue 20 #8)."""
    import os

    det = cartoonseg.build_detector("tiny")
    good = save_mmengine_detector_checkpoint(det, tmp_path / "d.ckpt")
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    with pytest.raises(ck.CheckpointError, match="not a weights file") as e:
        cartoonseg.load_detector(tmp_path / "random.ckpt")
    assert "unpickle" not in str(e.value)
    (tmp_path / "random_pickle.ckpt").write_bytes(b"\x80\x02" + os.urandom(4096))  # pickle magic, garbage after
    with pytest.raises(ck.CheckpointError, match="truncated, corrupt") as e:
        cartoonseg.load_detector(tmp_path / "random_pickle.ckpt")
    assert "unpickle" not in str(e.value)
    data = bytearray(good.read_bytes())
    i = data.find(b"data.pkl") + 64
    data[i:i + 32] = b"\xff" * 32  # damage inside the pickle of a zip checkpoint
    (tmp_path / "damaged.ckpt").write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match="truncated, corrupt") as e:
        cartoonseg.load_detector(tmp_path / "damaged.ckpt")
    assert "unpickle" not in str(e.value)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"state_dict": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(ck.CheckpointError, match="not a weights-only checkpoint") as e:
        cartoonseg.load_detector(tmp_path / "evil.ckpt")
    message = str(e.value).replace(str(tmp_path), "")
    assert "getcwd" in message and "corrupt" not in message
    torch.save({"net": torch.nn.Linear(2, 2)}, tmp_path / "module.ckpt")  # a pickled module: code, not corrupt
    with pytest.raises(ck.CheckpointError, match="not a weights-only checkpoint"):
        cartoonseg.load_refiner(tmp_path / "module.ckpt")


def test_peek_weights_reads_only_the_header(tmp_path):
    """The loader dropdowns' cheap check: kind from the key names, no tensor read, no code run."""
    import os

    det, ref = cartoonseg.build_detector("tiny"), cartoonseg.build_refiner("tiny")
    assert ck.peek_weights(save_mmengine_detector_checkpoint(det, tmp_path / "d.ckpt")) == "detector"
    assert ck.peek_weights(save_flat_refiner_checkpoint(ref, tmp_path / "r.ckpt")) == "refiner"
    assert ck.peek_weights(ck.save_weights(det, tmp_path / "d.safetensors")) == "detector"
    assert ck.peek_weights(ck.save_weights(ref, tmp_path / "r.safetensors")) == "refiner"
    torch.save({"state_dict": {f"net.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "lightning.ckpt")
    assert ck.peek_weights(tmp_path / "lightning.ckpt") == "refiner"
    torch.save(det.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert ck.peek_weights(tmp_path / "legacy.pth") == "detector"
    from safetensors.torch import save_file

    save_file({"core_model.head.weight": torch.zeros(2, 2)}, str(tmp_path / "tagger.safetensors"))
    assert ck.peek_weights(tmp_path / "tagger.safetensors") == "unknown"
    # a transformers Depth Anything has backbone.* weights too, but no detector head
    save_file({"backbone.embeddings.cls_token": torch.zeros(1, 1, 2), "head.conv1.weight": torch.zeros(2, 2)},
              str(tmp_path / "depth.safetensors"))
    assert ck.peek_weights(tmp_path / "depth.safetensors") == "unknown"
    (tmp_path / "noise.ckpt").write_bytes(os.urandom(2048))
    with pytest.raises(ck.CheckpointError, match="not a weights file"):
        ck.peek_weights(tmp_path / "noise.ckpt")
    (tmp_path / "noise.safetensors").write_bytes(os.urandom(2048))
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        ck.peek_weights(tmp_path / "noise.safetensors")

    marker = tmp_path / "code_ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))  # would create the marker if anything unpickled it

    torch.save({"state_dict": {"backbone.x": torch.zeros(1), "bbox_head.y": Evil()}}, tmp_path / "code.ckpt")
    assert ck.peek_weights(tmp_path / "code.ckpt") == "detector" and not marker.exists()
    torch.save({"state_dict": {"backbone.x": torch.zeros(1), "bbox_head.y": torch.zeros(1)}}, tmp_path / "plain.ckpt")
    assert ck.peek_weights(tmp_path / "plain.ckpt") == "detector"


def _safetensors_with_header(path: Path, header) -> Path:
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


def _zip_checkpoint(path: Path, *, flag: int = 0, method: int | None = None) -> Path:
    """A one-entry torch-style zip whose data.pkl entry claims encryption (``flag``) or an unknown ``method``."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"conv_in.weight": 1}, protocol=2))
    raw = bytearray(buf.getvalue())
    central = raw.find(b"PK\x01\x02")
    raw[6] |= flag
    raw[central + 8] |= flag
    if method is not None:
        raw[8] = raw[central + 10] = method
    path.write_bytes(bytes(raw))
    return path


def test_peek_weights_gives_a_checkpoint_error_for_any_hostile_header(tmp_path):
    """peek_weights runs while ComfyUI lists the loader's dropdown (nodes/loaders.file_kind catches CheckpointError,
    OSError, ValueError): one odd file in models/cartoonseg raised AttributeError/TypeError/RuntimeError/
    NotImplementedError there and broke the node's listing. Now such a file is a CheckpointError or "unknown"."""
    odd = [
        _safetensors_with_header(tmp_path / "list.safetensors", [1, 2]),
        _safetensors_with_header(tmp_path / "number.safetensors", 5),
        _zip_checkpoint(tmp_path / "encrypted.ckpt", flag=1),
        _zip_checkpoint(tmp_path / "method.ckpt", method=99),
    ]
    for path in odd:
        with pytest.raises(ck.CheckpointError, match=path.name):
            ck.peek_weights(path)
    for meta in (["x"], {"cartoonseg": 5}, {"cartoonseg": "[1]"}):
        path = _safetensors_with_header(tmp_path / "meta.safetensors", {"__metadata__": meta})
        assert ck.peek_weights(path) == "unknown"


@pytest.mark.parametrize("state_dict", [
    {1: torch.zeros(1), "conv_in.weight": torch.zeros(1)},
    {"state_dict": {1: torch.zeros(1), "backbone.x": torch.zeros(1)}},
    {"state_dict": {"backbone.x": torch.zeros(1), "bbox_head.cls_convs.1.0": torch.zeros(1)}},
])
def test_odd_keys_are_a_checkpoint_error_not_a_traceback(tmp_path, capsys, state_dict):
    """A checkpoint with a non-string key or a truncated head key name crashed deep in the filters (AttributeError,
    IndexError): a traceback from `python -m cartoonseg convert`. Now loaders and convert name the file."""
    path = tmp_path / "odd.ckpt"
    torch.save(state_dict, path)
    for load in (cartoonseg.load_detector, cartoonseg.load_refiner):
        with pytest.raises(ck.CheckpointError):
            load(path)
    from cartoonseg.__main__ import main

    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "out.safetensors").exists()
