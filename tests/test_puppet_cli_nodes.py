"""The ``puppet`` command line and the puppet nodes (CartoonSegPuppetRig, CartoonSegPuppetAnimate) with stubbed
ComfyUI modules. The drawn test scene (two stick figures with soft masks) is the one of ``test_puppet.py``."""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest
import torch
from _comfy_stub import Interrupted
from PIL import Image
from test_puppet import H, W, _person, _pose_frame, scene

import cartoonseg.puppet as puppet
from cartoonseg import Instances
from cartoonseg.__main__ import main
from cartoonseg.outputs import MANIFEST

PACK = "cartoonseg_pack_puppet_test"
IDS = ("CartoonSegPuppetRig", "CartoonSegPuppetAnimate")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("puppet_cli")
    img, masks, plate = scene()
    Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(root / "scene.png")
    Image.fromarray((plate * 255 + 0.5).astype(np.uint8)).save(root / "plate.png")
    Image.fromarray((plate * 255 + 0.5).astype(np.uint8)).save(root / "plate.webp", lossless=True)
    for k, m in enumerate(masks):
        Image.fromarray((m * 255 + 0.5).astype(np.uint8)).save(root / f"mask{k}.png")
    return root


def _cli(files, *extra):
    return main(["puppet", str(files / "scene.png"), "--masks", str(files / "mask0.png"), str(files / "mask1.png"),
                 "--plate", str(files / "plate.png"), "--quiet", *extra])


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_animated_webp_and_png_frames(files, tmp_path):
    out = tmp_path / "clip.webp"
    assert _cli(files, "--out", str(out), "--motion", "wave", "--frames", "6", "--fps", "10") == 0
    with Image.open(out) as im:
        assert im.size == (W, H) and im.n_frames == 6
        im.seek(0)
        first = np.asarray(im.convert("RGB"), dtype=np.float32)
    src = np.asarray(Image.open(files / "scene.png").convert("RGB"), dtype=np.float32)
    assert np.abs(first - src).mean() < 4.0  # frame 0 is the picture (lossy WEBP, quality 90)
    folder = tmp_path / "frames"
    assert _cli(files, "--out", str(folder), "--motion", "bounce", "--frames", "3", "--instances", "1") == 0
    names = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert names == [f"{k}_{i:05d}.png" for k in ("frame", "mask") for i in range(3)]
    mask = np.asarray(Image.open(folder / "mask_00000.png"))
    assert mask[:, : W // 2 - 20].max() == 0 and mask[:, W // 2:].max() == 255  # only instance 1 animates
    assert not [p for p in tmp_path.glob(".*") if p.name != MANIFEST]  # no temporary files left behind


def test_cli_matting_cuts_the_characters_out_by_their_mattes(files, tmp_path, monkeypatch):
    pytest.importorskip("pymatting")
    import cartoonseg.puppet.cli as cli

    rigs = []
    real = cli.build_rig

    def spy(instances, **kwargs):
        rigs.append((instances, real(instances, **kwargs)))
        return rigs[-1][1]

    monkeypatch.setattr(cli, "build_rig", spy)
    assert _cli(files, "--out", str(tmp_path / "plain"), "--frames", "2") == 0
    assert _cli(files, "--out", str(tmp_path / "matted"), "--frames", "2", "--matting") == 0
    (plain, plain_rig), (matted, matted_rig) = rigs
    assert plain.alphas is None and not any(ch.matted for ch in plain_rig.characters)
    assert matted.alphas is not None and all(ch.matted for ch in matted_rig.characters)


def test_cli_summary_of_a_frame_folder_counts_frames_and_masks(files, tmp_path, capsys):
    folder = tmp_path / "frames"
    argv = ["puppet", str(files / "scene.png"), "--masks", str(files / "mask0.png"), str(files / "mask1.png"),
            "--plate", str(files / "plate.png"), "--out", str(folder), "--frames", "3"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.endswith(f"-> {folder}/ (3 frame PNGs, 3 mask PNGs)"), line  # was "frame_00000.png (+5 more)"


def test_cli_follows_the_output_policy(files, tmp_path, capsys):
    """Never over a file or into a folder cartoonseg did not write (unless --overwrite); a rerun replaces its own
    result whole: a shorter clip leaves no frames of the longer earlier one."""
    foreign = tmp_path / "holiday.webp"
    foreign.write_bytes(b"a user's file")
    assert _cli(files, "--out", str(foreign), "--frames", "2") == 2
    assert "--overwrite" in capsys.readouterr().err and foreign.read_bytes() == b"a user's file"
    assert _cli(files, "--out", str(foreign), "--frames", "2", "--overwrite") == 0
    with Image.open(foreign) as im:
        assert im.size == (W, H)
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "page.png").write_bytes(b"not ours")
    assert _cli(files, "--out", str(folder), "--frames", "2") == 2
    assert sorted(p.name for p in folder.iterdir()) == ["page.png"]
    frames = tmp_path / "frames"
    assert _cli(files, "--out", str(frames), "--frames", "4") == 0
    assert _cli(files, "--out", str(frames), "--frames", "2") == 0  # our own folder: replaced whole
    assert sorted(p.name for p in frames.glob("frame_*.png")) == ["frame_00000.png", "frame_00001.png"]


def test_cli_motion_sources(files, tmp_path):
    poses = tmp_path / "poses.json"
    poses.write_text(json.dumps([_pose_frame([_person({"neck": (50, 40), "r_shoulder": (40, 42), "r_elbow": (30, 50 - 4 * f)})])
                                 for f in range(4)]))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keyframes": [{"frame": 3, "joints": {"0": {"nose": [45, 10]}}}]}))
    from test_puppet import BVH_TEXT

    bvh = tmp_path / "move.bvh"
    bvh.write_text(BVH_TEXT)
    for extra, n in ((["--poses", str(poses)], 4), (["--keyframes", str(keys)], 4), (["--bvh", str(bvh)], 1)):
        out = tmp_path / f"{extra[0][2:]}.webp"
        assert _cli(files, "--out", str(out), *extra) == 0, extra
        with Image.open(out) as im:
            assert im.n_frames == n  # the motion's own length (BVH: 3 frames at 30 fps -> 1 frame at 12 fps)


@pytest.mark.parametrize("extra, message", [
    (["--out", "x.gif"], ".webp or .mp4"),
    (["--out", "{out}", "--instances", "5"], "out of range"),
    (["--out", "{out}", "--instances", "a"], "comma-separated"),
    (["--out", "{out}", "--frames", "0"], "--frames"),
    (["--out", "{out}", "--keyframes", "{missing}"], "not found"),
    (["--out", "{out}", "--handles", "{bad_json}"], "invalid JSON"),
    (["--plate", "{plate_webp}", "--out", "{plate_webp}"], "it is an input"),
])
def test_cli_errors_are_one_line_with_status_2(files, tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    extra = [e.format(out=tmp_path / "o.webp", missing=tmp_path / "none.json", bad_json=bad,
                      plate_webp=files / "plate.webp") for e in extra]
    assert _cli(files, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_cli_bvh_that_overflows_is_one_error_line_before_the_slow_steps(files, tmp_path, capsys, monkeypatch):
    from test_puppet import BVH_TEXT

    import cartoonseg.puppet.cli as cli

    def no_rig(*args, **kwargs):
        raise AssertionError("the motion is checked before the characters are rigged")

    monkeypatch.setattr(cli, "build_rig", no_rig)

    slow = tmp_path / "slow.bvh"  # Frame Time 1e308 s: was a traceback (OverflowError in round(inf))
    slow.write_text(BVH_TEXT.replace("Frame Time: 0.0333333", "Frame Time: 1e308"))
    far = tmp_path / "far.bvh"  # positions that overflow in forward kinematics: was "handle targets must be finite"
    far.write_text(BVH_TEXT.replace("OFFSET 0 0 0", "OFFSET 1e308 0 0").replace("1 90 0 0 0 0", "1e308 90 0 0 0 0"))
    for bvh, message in ((slow, "lasts too long"), (far, "overflow in frame 2")):
        assert _cli(files, "--out", str(tmp_path / "o.webp"), "--bvh", str(bvh)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (tmp_path / "o.webp").exists()


def test_cli_picture_too_wide_for_the_clip_format_is_refused_before_the_slow_steps(tmp_path, capsys, monkeypatch):
    import cartoonseg.puppet.cli as cli

    def no_rig(*args, **kwargs):
        raise AssertionError("the clip size is checked before the characters are rigged")

    monkeypatch.setattr(cli, "build_rig", no_rig)
    Image.fromarray(np.full((8, 16400, 3), 200, np.uint8)).save(tmp_path / "wide.png")
    # the masks are never read: the frames' size is refused first
    args = ["puppet", str(tmp_path / "wide.png"), "--masks", str(tmp_path / "missing.png"), "--quiet", "--out",
            str(tmp_path / "o.webp")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: frames of 16400x8 px do not fit a .webp clip"), err
    assert "16383 px per side" in err[0] and "a smaller picture" in err[0] and "a folder of PNG frames" in err[0]
    assert not (tmp_path / "o.webp").exists()


def test_cli_keyframed_joint_no_skeleton_can_have_is_refused_before_rigging(files, tmp_path, capsys, monkeypatch):
    """A keyed joint the skeletons cannot have (a typo, another naming scheme) failed only after segmentation
    and rigging; the names a skeleton can have are known up front (the handles', the automatic skeleton's, the
    pose rig's OpenPose names), so it fails at once, naming the joint and the allowed names."""
    import cartoonseg.puppet.cli as cli

    def no_rig(*args, **kwargs):
        raise AssertionError("the keyframes' joints are checked before the characters are rigged")

    keys = tmp_path / "k.json"
    handles = tmp_path / "h.json"
    handles.write_text(json.dumps({"characters": [{"instance": 1, "joints": {"top": [150, 30], "bottom": [150, 90]}}]}))

    def refused(doc, *extra):
        keys.write_text(json.dumps({"keyframes": [{"frame": 2, "joints": doc}]}))
        monkeypatch.setattr(cli, "build_rig", no_rig)
        assert _cli(files, "--out", str(tmp_path / "o.webp"), "--keyframes", str(keys), *extra) == 2
        monkeypatch.undo()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: keyframes name joint"), err
        return err[0]

    err = refused({"0": {"right_hand": [1, 2]}})
    assert "'right_hand' for instance 0" in err and "automatic skeleton's joints are root, neck, nose" in err
    assert "r_wrist" in err and "r_eye" not in err
    err = refused({"0": {"r_eye": [1, 2]}})  # an OpenPose joint: only a pose rig gives it
    assert "'r_eye'" in err
    err = refused({"1": {"neck": [1, 2]}}, "--handles", str(handles))  # handles define the instance's joints
    assert "'neck' for instance 1, whose handles define the joints top, bottom" in err
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps([_pose_frame([_person({"nose": (45, 30), "neck": (45, 45)})], canvas=(H, W))]))
    err = refused({"0": {"hand": [1, 2]}}, "--pose-rig", str(pose))
    assert "pose rig's or the automatic skeleton's joints are root, neck, nose" in err and "r_eye" in err and "root" in err
    # names a skeleton can have pass the check (the rigged skeletons are checked exactly later), and the clip renders
    doc = {"keyframes": [{"frame": 2, "joints": {"0": {"r_eye": [1, 2], "joint2": [1, 2], "r_wrist_2": [1, 2]}}}]}
    puppet.KeyframeMotion.from_json(doc).check_joints(pose_rig=True)
    with pytest.raises(ValueError, match="'r_eye'"):
        puppet.KeyframeMotion.from_json(doc).check_joints()
    keys.write_text(json.dumps({"keyframes": [{"frame": 2, "joints": {"1": {"top": [140, 30]}}}]}))
    assert _cli(files, "--out", str(tmp_path / "ok.webp"), "--keyframes", str(keys), "--handles", str(handles),
                "--frames", "3") == 0


def test_cli_mp4_needs_pyav_or_writes_h264(files, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    rc = _cli(files, "--out", str(out), "--frames", "4")
    try:
        import av
    except ImportError:
        assert rc == 2 and "pip install av" in capsys.readouterr().err
        assert not out.exists()
        return
    assert rc == 0
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (W, H)


def test_cli_computes_a_patchmatch_plate_when_none_is_given(tmp_path):
    img = np.full((40, 48, 3), 200, np.uint8)
    img[::4] = 120  # stripes PatchMatch continues behind the character
    m = np.zeros((40, 48), np.uint8)
    m[8:34, 18:30] = 255
    img[m > 0] = (220, 60, 60)
    Image.fromarray(img).save(tmp_path / "small.png")
    Image.fromarray(m).save(tmp_path / "m.png")
    out = tmp_path / "f"
    handles = tmp_path / "h.json"
    handles.write_text(json.dumps({"characters": [{"instance": 0, "joints": {"top": [24, 10], "bottom": [24, 32]}}]}))
    shift = tmp_path / "shift.json"
    shift.write_text(json.dumps({"interpolation": "linear", "keyframes": [
        {"frame": 1, "joints": {"0": {"top": [10, 10], "bottom": [10, 32]}}}]}))
    assert main(["puppet", str(tmp_path / "small.png"), "--masks", str(tmp_path / "m.png"), "--out", str(out),
                 "--handles", str(handles), "--keyframes", str(shift), "--quiet"]) == 0
    moved = np.asarray(Image.open(out / "frame_00001.png"), dtype=np.int16)
    revealed = moved[10:30, 26:29]
    assert np.abs(revealed - np.array([220, 60, 60])).sum(-1).min() > 100  # no red left where it was: the plate


# ---------------------------------------------------------------------------------------------- nodes
@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _inputs():
    img, masks, plate = scene()
    return (torch.from_numpy(img)[None], [Instances.from_masks(torch.from_numpy(masks))],
            torch.from_numpy(plate)[None])


def test_registration_and_metadata(pack):
    for node_id in IDS:
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id].endswith("(CartoonSeg)")
        assert cls.CATEGORY == "CartoonSeg/puppet" and len(cls.DESCRIPTION) > 40
        spec = cls.INPUT_TYPES()
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert name in params, (node_id, name)
                assert len(entry) > 1 and entry[1].get("tooltip"), (node_id, name)
    assert pack.NODE_CLASS_MAPPINGS["CartoonSegPuppetRig"].RETURN_TYPES == ("CARTOONSEG_PUPPET", "IMAGE")
    assert pack.NODE_CLASS_MAPPINGS["CartoonSegPuppetAnimate"].RETURN_TYPES == ("IMAGE", "MASK", "FLOAT")
    module = sys.modules[f"{pack.__name__}.nodes.puppet"]
    assert module.PRESETS is puppet.PRESETS and module.RETARGET is puppet.RETARGET_MODES


def test_rig_then_animate_with_preset_plate_and_progress(nodes, comfy):
    image, instances, plate = _inputs()
    rigs, preview = nodes["CartoonSegPuppetRig"]().rig(image, instances)
    assert len(rigs) == 1 and len(rigs[0].characters) == 2
    assert preview.shape == (1, H, W, 3) and 0 <= float(preview.min()) and float(preview.max()) <= 1
    comfy.ticks = 0
    frames, masks, fps = nodes["CartoonSegPuppetAnimate"]().animate(image, rigs, preset="wave", frames=5, fps=8.0,
                                                                    plate=plate)
    assert frames.shape == (5, H, W, 3) and masks.shape == (5, H, W) and fps == 8.0
    assert comfy.ticks == 5  # one progress step per frame
    assert float((frames[0] - image[0]).abs().max()) < 1e-4
    blue = (frames[..., 2] > 0.99) & (frames[..., 0] < 0.01)
    assert bool(blue.any()) and float(masks[blue].max()) < 0.05  # revealed plate: at most a soft edge over it


def test_rig_node_with_pose_keypoint_and_handles(nodes):
    image, instances, _ = _inputs()
    pose = [_pose_frame([_person({"nose": (45, 30), "neck": (45, 45), "r_wrist": (20, 68)})], canvas=(H, W))]
    rigs, _ = nodes["CartoonSegPuppetRig"]().rig(image, instances, pose_keypoint=pose)
    assert [c.skeleton.source for c in rigs[0].characters] == ["pose", "auto"]
    # a driving sequence (one entry per video frame) wired into the rig of one picture: refused, not cut to frame 0
    with pytest.raises(ValueError, match="pose_keypoint has 3 frames but image has 1"):
        nodes["CartoonSegPuppetRig"]().rig(image, instances, pose_keypoint=pose * 3)
    rigs, _ = nodes["CartoonSegPuppetRig"]().rig(image.expand(2, -1, -1, -1), instances, pose_keypoint=pose)
    assert len(rigs) == 2  # one pose entry (and one instances entry) serve every picture
    # one picture for two instances frames: one rig per pair (it used to be refused; every node pairs an image
    # with its instances so, one entry on either side serving every frame of the other)
    rigs, previews = nodes["CartoonSegPuppetRig"]().rig(image, instances * 2, pose_keypoint=pose)
    assert len(rigs) == 2 and previews.shape[0] == 2
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        nodes["CartoonSegPuppetRig"]().rig(image.expand(3, -1, -1, -1), instances * 2)
    handles = json.dumps({"characters": [{"instance": 1, "joints": {"a": [115, 30], "b": [115, 90]}}]})
    rigs, _ = nodes["CartoonSegPuppetRig"]().rig(image, instances, indices="1", handles_json=handles)
    assert [c.instance for c in rigs[0].characters] == [1] and rigs[0].characters[0].skeleton.names == ["a", "b"]


def test_animate_node_pose_sequence_keyframes_and_default_plate(nodes):
    image = torch.full((1, 40, 48, 3), 0.8)
    image[:, ::4] = 0.5
    mask = torch.zeros(1, 40, 48)
    mask[0, 8:34, 18:30] = 1.0
    image[0, 8:34, 18:30] = torch.tensor([0.9, 0.2, 0.2])
    handles = json.dumps({"characters": [{"instance": 0, "joints": {"neck": [24, 10], "r_hip": [24, 32]}}]})
    rigs, _ = nodes["CartoonSegPuppetRig"]().rig(image, [Instances.from_masks(mask)], handles_json=handles)
    seq = [_pose_frame([_person({"neck": (50, 40), "r_hip": (50 + 5 * f, 70)})], canvas=(H, W)) for f in range(3)]
    frames, masks, _ = nodes["CartoonSegPuppetAnimate"]().animate(image, rigs, frames=0, pose_keypoint=seq,
                                                                 plate=torch.zeros(1, 40, 48, 3))
    assert frames.shape[0] == 3  # the sequence's length
    assert float((frames[2] - frames[0]).abs().max()) > 0.5  # the body leans with the reference
    keys = json.dumps({"keyframes": [{"frame": 2, "joints": {"0": {"neck": [14, 10], "r_hip": [14, 32]}}}]})
    frames, masks, _ = nodes["CartoonSegPuppetAnimate"]().animate(image, rigs, keyframes_json=keys)  # PatchMatch plate
    assert frames.shape == (3, 40, 48, 3) and torch.isfinite(frames).all()
    assert float((frames[2, 10:30, 26:29] - torch.tensor([0.9, 0.2, 0.2])).abs().sum(-1).min()) > 0.3  # plate, no red


def test_animate_node_rejects_bad_inputs_and_cancels(nodes, comfy):
    image, instances, plate = _inputs()
    node = nodes["CartoonSegPuppetAnimate"]()
    with pytest.raises(TypeError, match="CARTOONSEG_PUPPET"):
        node.animate(image, "rig")
    rigs, _ = nodes["CartoonSegPuppetRig"]().rig(image, instances)
    with pytest.raises(ValueError, match="pose_keypoint is an empty POSE_KEYPOINT list"):
        node.animate(image, rigs, pose_keypoint=[], plate=plate)
    with pytest.raises(ValueError, match="rig was built"):
        node.animate(image[:, :50], rigs, plate=plate[:, :50], frames=2)
    # a plate of another aspect ratio (another picture's, a crop) would be stretched over the picture: refused, as
    # 3D Ken Burns does; a resized plate of the same aspect is fine
    with pytest.raises(ValueError, match="background plate is .* another aspect ratio"):
        node.animate(image, rigs, plate=plate[:, : H // 2], frames=2)
    half = torch.nn.functional.interpolate(plate.movedim(-1, 1), scale_factor=0.5, mode="area").movedim(1, -1)
    assert node.animate(image, rigs, plate=half, frames=2)[0].shape == (2, H, W, 3)
    comfy.cancel_after = 2
    with pytest.raises(Interrupted):
        node.animate(image, rigs, frames=6, plate=plate)
