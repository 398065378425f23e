"""Contract tests of the Ken Burns nodes (CartoonSegCameraPath, CartoonSegKenBurns) with stubbed ComfyUI modules.

The pack is loaded from its root ``__init__.py`` under a private package name (never as the bare module ``nodes``,
which ComfyUI owns). ``folder_paths``, ``comfy.model_management`` and ``comfy.utils`` are small stand-ins put in
``sys.modules`` for this module only.
"""

from __future__ import annotations

import inspect
import sys

import pytest
import torch
from _comfy_stub import Interrupted

import cartoonseg.kenburns as kb
from cartoonseg import Instances

PACK = "cartoonseg_pack_kenburns_test"
NEGATIVE = "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"
IDS = ("CartoonSegCameraPath", "CartoonSegKenBurns", "CartoonSegDiffusionFill")
H, W = 32, 40


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def scene(b: int = 1):
    """Far blue plane, near red card (one instance), green plate."""
    image = torch.zeros(b, H, W, 3)
    image[..., 2] = 1.0
    image[:, 8:24, 12:26] = torch.tensor([1.0, 0.0, 0.0])
    depth = torch.full((b, H, W, 3), 0.25)
    depth[:, 8:24, 12:26] = 1.0
    mask = torch.zeros(1, H, W)
    mask[0, 8:24, 12:26] = 1.0
    instances = [Instances.from_masks(mask) for _ in range(b)]
    plate = torch.zeros(b, H, W, 3)
    plate[..., 1] = 1.0
    return image, depth, instances, plate


def run(nodes, camera=None, **kwargs):
    node = nodes["CartoonSegKenBurns"]()
    image, depth, instances, plate = scene()
    args = dict(image=image, depth=depth, instances=instances, background=plate, camera=camera)
    args.update(kwargs)
    return node.render(**args)


def camera(nodes, **kwargs):
    (cam,) = nodes["CartoonSegCameraPath"]().make(**kwargs)
    return cam


# ---------------------------------------------------------------------------------------------- contract
def test_registration_and_metadata(pack):
    for node_id in IDS:
        cls = pack.NODE_CLASS_MAPPINGS[node_id]
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY == "CartoonSeg/kenburns"
        assert cls.DESCRIPTION and len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        spec = cls.INPUT_TYPES()
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert name in params, (node_id, name)
                if isinstance(entry[0], list) and len(entry) > 1 and "default" in entry[1]:
                    assert entry[1]["default"] in entry[0]
    assert pack.NODE_CLASS_MAPPINGS["CartoonSegCameraPath"].RETURN_TYPES == ("CARTOONSEG_CAMERA",)
    assert pack.NODE_CLASS_MAPPINGS["CartoonSegKenBurns"].RETURN_TYPES == ("IMAGE", "MASK", "FLOAT")
    optional = pack.NODE_CLASS_MAPPINGS["CartoonSegKenBurns"].INPUT_TYPES()["optional"]
    assert optional["instances"][0] == "CARTOONSEG_INSTANCES" and optional["camera"][0] == "CARTOONSEG_CAMERA"


def test_literal_choices_match_the_library(pack):
    module = sys.modules[PACK + ".nodes.kenburns"]
    assert module.PRESETS is kb.PRESETS and module.EASINGS is kb.EASINGS and module.ANCHORS is kb.ANCHORS
    assert module.FILLS is kb.FILLS and module.CHARACTER_REVEALS is kb.CHARACTER_REVEALS
    from cartoonseg.inpaint import NEGATIVE_PROMPT

    assert module.NEGATIVE_PROMPT == NEGATIVE_PROMPT


def test_diffusion_nodes_default_to_the_library_sampler_settings(pack):
    """Both diffusion nodes share one literal list of sampler inputs; its defaults are RefineSettings' (the paper's)."""
    from cartoonseg.inpaint import RefineSettings

    d = RefineSettings()
    want = {"seed": d.seed, "steps": d.steps, "cfg": d.cfg, "denoise": d.denoise, "sampler_name": d.sampler,
            "scheduler": d.scheduler, "short_side": d.short_side}
    for name in ("CartoonSegDiffusionFill", "CartoonSegInpaintDiffusion"):
        required = pack.NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["required"]
        assert {k: required[k][1]["default"] for k in want} == want, name
        assert [required[k][0] for k in ("model", "clip", "vae")] == ["MODEL", "CLIP", "VAE"], name
        defaults = inspect.signature(getattr(pack.NODE_CLASS_MAPPINGS[name], pack.NODE_CLASS_MAPPINGS[name].FUNCTION))
        assert {k: defaults.parameters[k].default for k in want} == want, name


def test_camera_node_builds_a_camera_path(nodes):
    cam = camera(nodes, preset="pan-left", frames=12, zoom=1.5, strength=0.5, easing="ease-in-out", playback=False,
                 fps=30.0, anchor="median")
    assert cam == kb.CameraPath(preset="pan-left", frames=12, zoom=1.5, strength=0.5, easing="ease-in-out",
                                playback=False, fps=30.0, anchor="median")
    with pytest.raises(ValueError, match="preset"):
        camera(nodes, preset="teleport")


def test_render_outputs_frames_mask_and_fps(nodes, comfy):
    cam = camera(nodes, preset="pan-right", frames=5, playback=True, fps=12.0)
    frames, disocclusion, fps = run(nodes, cam, character_reveals="plate")
    assert frames.shape == (8, H, W, 3) and frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert disocclusion.shape == (8, H, W) and 0.0 <= float(disocclusion.min()) <= float(disocclusion.max()) <= 1.0
    assert fps == 12.0 and isinstance(fps, float)
    # one progress step per key view inpainted first (pan-right: its far end), then one per rendered (unique) frame
    assert comfy.ticks == 1 + 5
    # the camera moves: the revealed plate shows up and is flagged in the mask
    green = (frames[..., 1] > 0.9) & (frames[..., 0] < 0.1)
    assert bool(green[4].any()) and float(disocclusion[green].min()) > 0.5
    # by default what the camera reveals there is inpainted from the far plane around it: flagged, never the plate
    inpainted, revealed, _ = run(nodes, cam)
    assert bool((revealed[4] > 0.5).any()) and not bool(((inpainted[..., 1] > 0.9) & (inpainted[..., 0] < 0.1)).any())
    # elsewhere the mask is the plate's share of the pixel: nothing on the pure card or far plane, and on their
    # anti-aliased edges at most the part that is neither red (card) nor blue (far plane)
    solid = (frames[..., 2] > 0.99) | (frames[..., 0] > 0.99)
    plate_share = (1.0 - frames[..., 0] - frames[..., 2]).clamp_min(0.0)
    assert float((disocclusion - plate_share)[solid].max()) < 1e-4


def test_defaults_without_optional_inputs(nodes):
    image, depth, _, _ = scene()
    frames, mask, fps = nodes["CartoonSegKenBurns"]().render(image=image, depth=depth[..., :1].expand(-1, -1, -1, 3))
    assert frames.shape == (148, H, W, 3) and mask.shape == (148, H, W) and fps == 25.0  # auto, 75 ping-pong


def test_batches_pairing_and_resized_depth(nodes):
    image, depth, instances, plate = scene(2)
    node = nodes["CartoonSegKenBurns"]()
    cam = camera(nodes, preset="zoom-in", frames=3, playback=False)
    frames, mask, _ = node.render(image=image, depth=depth[:1, :-1, :-1], instances=instances[:1], background=plate,
                                  camera=cam, size=20)
    assert frames.shape == (6, 16, 20, 3) and mask.shape == (6, 16, 20)
    # one picture for two instances frames: one clip per pair, as every node pairs an image with its instances
    # (it used to be refused: Ken Burns counted the frames by the image alone)
    two, _, _ = node.render(image=image[:1], depth=depth[:1, :-1, :-1], instances=instances, background=plate[:1],
                            camera=cam, size=20)
    assert torch.equal(two, frames)  # the scene's two frames are the same picture
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        node.render(image=torch.cat([image, image[:1]]), depth=depth[:1], instances=instances, camera=cam)
    with pytest.raises(ValueError, match="depth has 3 frames"):
        node.render(image=image, depth=torch.cat([depth, depth[:1]]), camera=cam)
    with pytest.raises(TypeError, match="CARTOONSEG_CAMERA"):
        node.render(image=image, depth=depth, camera="auto")
    with pytest.raises(TypeError, match="instances"):
        node.render(image=image, depth=depth, instances=torch.zeros(2, H, W), camera=cam)
    # instances of another image are refused before any clip is rendered, never stretched over this one
    for mask in (torch.ones(1, H, W + 8), torch.zeros(0, H // 2, W)):
        with pytest.raises(ValueError, match=f"instances are for a .* image but the image is {W}x{H}"):
            node.render(image=image, depth=depth, instances=[Instances.from_masks(mask)], camera=cam)


def test_depth_of_field_option_changes_frames(nodes):
    cam = camera(nodes, preset="static", frames=3, playback=False)
    sharp, _, _ = run(nodes, cam)
    blurred, _, _ = run(nodes, cam, depth_of_field=True, dof_strength=5.0)
    assert not torch.allclose(sharp, blurred)


def test_cancel_stops_rendering(nodes, comfy):
    comfy.cancel_after = 2
    with pytest.raises(Interrupted):
        run(nodes, camera(nodes, preset="zoom-in", frames=6, playback=False))


# ---------------------------------------------------------------------------------------------- fills
def striped(b: int = 1):
    """No instances: a striped far plane behind a near card, so the camera opens holes at a depth edge."""
    image, depth, _, _ = scene(b)
    cols = torch.arange(W)
    image[..., :, :, 0] = torch.where((cols // 3) % 2 == 0, 1.0, 0.0).float()
    image[:, 8:24, 12:26] = torch.tensor([0.5, 0.5, 0.5])
    return image, depth


def test_fill_widget_defaults_to_patchmatch_and_far_side_differs(nodes):
    required = nodes["CartoonSegKenBurns"].INPUT_TYPES()["required"]
    assert required["fill"][1]["default"] == "patchmatch"
    cam = camera(nodes, preset="pan-right", frames=3, zoom=1.6, playback=False)
    image, depth = striped()
    node = nodes["CartoonSegKenBurns"]()
    inpainted, mask, _ = node.render(image=image, depth=depth, camera=cam)
    smeared, _, _ = node.render(image=image, depth=depth, camera=cam, fill="far-side")
    holes = mask > 0.5
    assert bool(holes.any()) and not torch.allclose(inpainted[holes], smeared[holes])
    assert torch.allclose(inpainted[mask == 0], smeared[mask == 0], atol=1e-5)
    with pytest.raises(ValueError, match="CartoonSegDiffusionFill"):
        node.render(image=image, depth=depth, camera=cam, fill="diffusion")


def test_diffusion_fill_keeps_escaped_commas_of_tag_instances_tags(nodes):
    """Tag Instances writes a comma inside a tag name as "\\," and one line per frame; the prompt split on commas
    itself, so "ah\\,_so" reached the prompt as "ah\\, _so" (a backslash and a broken tag) and lines ran together."""
    from test_nodes_depth_inpaint import ToyClip, ToyVAE

    from cartoonseg.tagger import join_tag_list

    clip = ToyClip()
    tags = join_tag_list(["ah,_so", "sky", "1girl"]) + "\n" + join_tag_list(["cloud_(sky)", "sky"])
    nodes["CartoonSegDiffusionFill"]().make("MODEL", clip, ToyVAE(), tags=tags, steps=2, short_side=0)
    assert clip.texts[0] == "ah,_so, sky, cloud_\\(sky\\), high quality, masterpiece, no_humans"


def test_diffusion_fill_samples_the_uncovered_regions(nodes, comfy):
    from test_nodes_depth_inpaint import ToyClip, ToyVAE

    clip, vae = ToyClip(), ToyVAE()
    (fill,) = nodes["CartoonSegDiffusionFill"]().make("MODEL", clip, vae, tags="sky, 1girl", steps=2, short_side=0)
    assert clip.texts == ["sky, high quality, masterpiece, no_humans", NEGATIVE]
    cam = camera(nodes, preset="pan-right", frames=3, zoom=1.6, playback=False)
    image, depth = striped()
    node = nodes["CartoonSegKenBurns"]()
    comfy.reset()
    frames, mask, _ = node.render(image=image, depth=depth, camera=cam, fill="diffusion", diffusion=fill)
    assert comfy.sample_calls and all(c["steps"] == 2 and c["denoise"] == 0.75 for c in comfy.sample_calls)
    assert frames.shape == (3, H, W, 3) and torch.isfinite(frames).all()
    calls = len(comfy.sample_calls)
    node.render(image=image, depth=depth, camera=cam, diffusion=fill)  # wired but fill is patchmatch: no sampling
    assert len(comfy.sample_calls) == calls


def test_device_widget_uses_the_device_asked_for_or_names_it(nodes, monkeypatch):
    # any value but "auto" used to render quietly on the CPU; now the device asked for, or a ValueError naming it
    cam = camera(nodes, preset="static", frames=1, playback=False)
    seen = []
    real = kb.render_kenburns

    def spy(*args, **kwargs):
        seen.append(torch.device(kwargs["device"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(kb, "render_kenburns", spy)
    run(nodes, cam, device="cpu")
    for bad in ("cuda:99", "gpu", "", None):  # no machine has 100 CUDA devices
        with pytest.raises(ValueError, match="device"):
            run(nodes, cam, device=bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available"):
            run(nodes, cam, device="cuda")
    assert seen and all(d.type == "cpu" for d in seen)


def test_depth_refine_is_an_optional_widget_with_the_library_default(nodes, monkeypatch):
    """depth_refine is optional (a workflow saved before it existed loads and renders with the library's default)
    and its value reaches the renderer's config."""
    cls = nodes["CartoonSegKenBurns"]
    spec = cls.INPUT_TYPES()
    assert "depth_refine" not in spec["required"]
    kind, options = spec["optional"]["depth_refine"]
    assert kind == "BOOLEAN" and options["default"] is kb.KenBurnsConfig().depth_refine and options["tooltip"]
    cam = camera(nodes, preset="static", frames=1, playback=False)
    seen = []
    real = kb.render_kenburns

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].depth_refine)
        return real(*args, **kwargs)

    monkeypatch.setattr(kb, "render_kenburns", spy)
    run(nodes, cam)  # an old workflow: no depth_refine
    run(nodes, cam, depth_refine=True)
    run(nodes, cam, depth_refine=False)
    assert seen == [kb.KenBurnsConfig().depth_refine, True, False]
