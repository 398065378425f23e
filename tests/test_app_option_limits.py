"""Range checks of the application areas' options (style, inpaint-refine, depth, kenburns, puppet): NaN, negative and
huge values are refused by the library's configs (so the API and the nodes get them too) and, on the command line,
with one ``error:`` line naming the option and exit status 2, before any model is built."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cartoonseg.__main__ import main

NAN = float("nan")


def _make(module: str, name: str):
    """A callable importing ``module.name`` when called (so every case fails on its own on old code)."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


RefineSettings = _make("cartoonseg.inpaint", "RefineSettings")
StyleConfig = _make("cartoonseg.style.config", "StyleConfig")
check_marigold_settings = _make("cartoonseg.depth.marigold", "check_marigold_settings")
CameraPath = _make("cartoonseg.kenburns.camera", "CameraPath")
RigConfig = _make("cartoonseg.puppet.rig", "RigConfig")
MeshConfig = _make("cartoonseg.puppet.mesh", "MeshConfig")
background_mask = _make("cartoonseg.ops", "background_mask")

LIBRARY_CASES = [
    ("cfg", lambda: RefineSettings(cfg=NAN)),
    ("cfg", lambda: RefineSettings(cfg=-5.0)),
    ("cfg", lambda: RefineSettings(cfg=1e9)),
    ("short_side", lambda: RefineSettings(short_side=1_000_000)),
    ("steps", lambda: RefineSettings(steps=1_000_000_000)),
    ("cfg", lambda: StyleConfig(cfg=NAN)),
    ("control_strength", lambda: StyleConfig(control_strength=NAN)),
    ("mask_feather", lambda: StyleConfig(mask_feather=NAN)),
    ("resolution", lambda: StyleConfig(resolution=1_000_000)),
    ("crop_padding", lambda: StyleConfig(crop_padding=1_000_000_000)),
    ("dedupe_threshold", lambda: StyleConfig(dedupe_threshold=NAN)),
    ("processing_resolution", lambda: check_marigold_settings(processing_resolution=100_000_000)),
    ("ensemble", lambda: check_marigold_settings(ensemble=1_000_000)),
    ("fps", lambda: CameraPath(fps=1e-9)),
    ("frames", lambda: CameraPath(frames=1_000_000_000)),
    ("RigConfig.ring", lambda: RigConfig(ring=-5)),
    ("ring", lambda: RigConfig(ring=1_000_000_000)),
    ("snap_radius", lambda: RigConfig(snap_radius=NAN)),
    ("spacing", lambda: MeshConfig(spacing=NAN)),
    ("feather", lambda: background_mask(torch.ones(1, 8, 8), feather=NAN)),
    ("dilate", lambda: background_mask(torch.ones(1, 8, 8), dilate=1_000_000_000)),
]


@pytest.mark.parametrize("index", range(len(LIBRARY_CASES)))
def test_library_configs_refuse_nan_negative_and_huge_values(index):
    name, build = LIBRARY_CASES[index]
    with pytest.raises(ValueError, match=name):
        build()


def test_library_defaults_and_edges_still_accepted():
    from cartoonseg.style.config import style_preset

    RefineSettings(cfg=0.0, short_side=0)
    RefineSettings(cfg=100.0, short_side=8192, steps=10000)
    StyleConfig(cfg=0.0, control_strength=10.0, mask_feather=256.0, resolution=8192, dedupe_threshold=float("inf"))
    style_preset("sdxl_canny")
    RigConfig(ring=0)


def test_working_size_of_a_thin_strip_is_bounded():
    from cartoonseg.inpaint.diffusion import working_size

    assert working_size(64, 640, 1024) == (1024, 10240)
    with pytest.raises(ValueError, match="short_side"):
        working_size(1, 100_000, 8192)


@pytest.mark.parametrize("fps", [1e-9, 0.0, -1.0, NAN, math.inf, 1e6])
@pytest.mark.parametrize("suffix", [".webp", ""])
def test_write_frames_refuses_fps_whose_frame_time_no_format_stores(tmp_path, fps, suffix):
    from cartoonseg.io import write_frames

    out = tmp_path / f"clip{suffix}"
    with pytest.raises(ValueError, match=r"fps must be .* in \[0\.01, 240\]"):
        write_frames(np.zeros((2, 8, 8, 3), np.uint8), out, fps)
    assert not out.exists()


def test_write_frames_webp_at_the_slowest_allowed_fps(tmp_path):
    from cartoonseg.io import MIN_FPS, write_frames

    out = tmp_path / "slow.webp"
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[1] = 255
    write_frames(frames, out, MIN_FPS)
    with Image.open(out) as im:
        im.load()
        assert im.n_frames == 2 and im.info["duration"] == round(1000 / MIN_FPS)


@pytest.fixture
def picture(tmp_path):
    rgb = np.full((48, 64, 3), 200, np.uint8)
    rgb[10:40, 20:40] = (40, 80, 160)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:40, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


def _cli_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# (command, extra options, what the message names); the models given do not exist: the options fail first
CLI_CASES = [
    ("inpaint-refine", ["--cfg", "nan"], "cfg"),
    ("inpaint-refine", ["--cfg", "-5"], "cfg"),
    ("inpaint-refine", ["--short-side", "1000000"], "short_side"),
    ("style", ["--cfg", "nan"], "cfg"),
    ("style", ["--control-strength", "nan"], "control_strength"),
    ("style", ["--mask-feather", "nan"], "mask_feather"),
    ("style", ["--resolution", "1000000"], "resolution"),
    ("depth", ["--processing-resolution", "100000000"], "processing_resolution"),
    ("kenburns", ["--fps", "1e-9"], "fps"),
    ("kenburns", ["--size", "-1"], "--size"),
    ("kenburns", ["--plate-dilate", "1000000000"], "--plate-dilate"),
    ("puppet", ["--fps", "1e-9"], "--fps"),
    ("puppet", ["--frames", "1000000000"], "--frames"),
    ("puppet", ["--plate-dilate", "1000000000"], "--plate-dilate"),
    ("puppet", ["--plate-dilate", "-5"], "--plate-dilate"),
    ("puppet", ["--mesh-spacing", "nan"], "--mesh-spacing"),
]


def _argv(command, extra, d):
    img, mask = d / "in.png", d / "mask.png"
    missing = d / "no-such-model"
    if command == "inpaint-refine":
        return [command, img, mask, "--model", missing, "--out", d / "o.png", *extra]
    if command == "style":
        return [command, img, "--model", missing, "--detector", missing, "--out", d / "styled", *extra]
    if command == "depth":
        return [command, img, "--model", missing, "--no-download", "--out", d / "o.png", *extra]
    if command == "kenburns":
        return [command, img, "--depth", mask, "--out", d / "kb.webp", *extra]
    return [command, img, "--masks", mask, "--out", d / "p.webp", *extra]


@pytest.mark.parametrize("command,extra,names", CLI_CASES, ids=[f"{c}{' '.join(e)}" for c, e, _ in CLI_CASES])
def test_cli_bad_values_give_one_error_line_naming_the_option(picture, capsys, command, extra, names):
    line = _cli_error(capsys, _argv(command, extra, picture))
    assert names in line, line
    assert not any(p.name.startswith(("o.", "kb.", "p.", "styled")) for p in picture.iterdir())


def test_depth_fp16_on_cpu_names_the_precision_values(picture, capsys):
    line = _cli_error(capsys, ["depth", picture / "in.png", "--model", picture / "none", "--no-download",
                               "--precision", "fp16", "--device", "cpu", "--out", picture / "o.png"])
    assert "fp16" in line and "fp32 or bf16" in line and "torch." not in line, line


@pytest.mark.parametrize("option", ["--handles", "--keyframes", "--poses", "--bvh"])
def test_puppet_binary_motion_and_handle_files_are_named(picture, capsys, option):
    line = _cli_error(capsys, _argv("puppet", [option, picture / "in.png"], picture))
    assert str(picture / "in.png") in line and "codec" not in line, line


def test_puppet_bad_json_names_the_file(picture, capsys):
    bad = picture / "keys.json"
    bad.write_text("{not json")
    line = _cli_error(capsys, _argv("puppet", ["--keyframes", bad], picture))
    assert str(bad) in line and "JSON" in line, line
    good = picture / "ok.json"
    good.write_text(json.dumps({"fps": 12}))
    from cartoonseg.puppet.skeleton import load_json

    assert load_json(good) == {"fps": 12}


def test_dtype_argument_follows_the_installed_diffusers():
    import types

    from cartoonseg._diffusers import dtype_argument

    old = types.SimpleNamespace(utils=types.SimpleNamespace(deprecation_utils=types.SimpleNamespace()))
    assert dtype_argument(old, torch.float32) == {"torch_dtype": torch.float32}
    new = types.SimpleNamespace(utils=types.SimpleNamespace(
        deprecation_utils=types.SimpleNamespace(_resolve_dtype=lambda d, t: d)))
    assert dtype_argument(new, torch.bfloat16) == {"dtype": torch.bfloat16}


def test_no_torch_dtype_future_warning_from_our_diffusers_loading(tmp_path):
    """Our own loading calls must not use an argument the installed diffusers deprecates."""
    diffusers = pytest.importorskip("diffusers")
    from test_depth_models import make_tiny_marigold

    from cartoonseg.depth.marigold import load_marigold

    folder = make_tiny_marigold(tmp_path / "marigold")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch_dtype.*", category=FutureWarning)
        est = load_marigold(folder, steps=1, processing_resolution=32)
    assert est.pipe is not None and diffusers is not None


def test_quiet_library_logs_hides_notices_only_inside_the_block():
    from cartoonseg._diffusers import quiet_library_logs

    pytest.importorskip("diffusers")
    log = logging.getLogger("diffusers.test_quiet")
    before = logging.getLogger("diffusers").level
    with quiet_library_logs(True):
        assert not log.isEnabledFor(logging.WARNING)
        assert log.isEnabledFor(logging.ERROR)
    assert logging.getLogger("diffusers").level == before
    assert log.isEnabledFor(logging.WARNING)
    with quiet_library_logs(False):
        assert log.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("option", ["--handles", "--pose-rig"])
def test_puppet_rig_files_are_checked_before_segmentation(picture, capsys, option):
    """A rig file of the wrong layout fails before any network loads (here the detector does not even exist), not
    after segmentation."""
    bad = picture / "rig.json"
    bad.write_text(json.dumps({"something": "else"}))
    line = _cli_error(capsys, ["puppet", picture / "in.png", "--detector", picture / "no-such.ckpt", "--no-download",
                               option, bad, "--out", picture / "p.webp"])
    assert "no-such" not in line and ("handles" in line or "POSE_KEYPOINT" in line or "pose" in line), line
