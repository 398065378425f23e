"""Contract tests of the depth and inpainting nodes (issue 5) with stubbed ComfyUI modules.

The pack is loaded under a private package name (never the bare module ``nodes``). ``folder_paths``,
``comfy.model_management``, ``comfy.utils``, ``comfy.sample`` and ``comfy.samplers`` are small stand-ins installed in
``sys.modules`` for this module only. The diffusion node runs its real logic (fill, working size, conditioning,
compositing) against a recording stand-in of ComfyUI's sampler and toy CLIP/VAE objects.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _comfy_stub import Interrupted

from cartoonseg import Instances, WeightsUnavailableError

PACK = "cartoonseg_pack_depth_inpaint_under_test"
OUR_IDS = {
    "CartoonSegDepthLoader", "CartoonSegDepthEstimate", "CartoonSegDepthPool",
    "CartoonSegBackgroundMask", "CartoonSegInpaintPatchMatch", "CartoonSegInpaintDiffusion",
}


class ToyClip:
    """CLIP stand-in: remembers what it encoded; the conditioning tensor depends on the text."""

    def __init__(self):
        self.texts: list[str] = []

    def tokenize(self, text):
        self.texts.append(text)
        return {"text": text}

    def encode_from_tokens(self, tokens, return_pooled=False):
        g = torch.Generator().manual_seed(len(tokens["text"]))
        cond = torch.randn(1, 77, 8, generator=g)
        return (cond, cond.mean(1)) if return_pooled else cond


class ToyVAE:
    """VAE stand-in with the SD layout: [B,H,W,3] <-> [B,4,H/8,W/8]."""

    def __init__(self):
        self.encoded_shapes: list[tuple] = []

    def encode(self, pixels):
        self.encoded_shapes.append(tuple(pixels.shape))
        assert pixels.shape[1] % 8 == 0 and pixels.shape[2] % 8 == 0
        x = F.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([x, x.mean(1, keepdim=True)], 1)

    def decode(self, samples):
        return F.interpolate(samples[:, :3], scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


def _tiny_depth_model(folder: Path) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 56, "width": 56},
                                                                  "ensure_multiple_of": 14, "keep_aspect_ratio": True}))
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _tiny_depth_model(root / "cartoonseg" / "depth" / "tiny-depth-anything")
    return root


def scene(b=2, h=48, w=64):
    """Textured background with a magenta 'character' square per frame; returns (image, mask, background)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    bg = torch.stack([((x + y) // 4 % 2).float() * 0.6 + 0.2, ((x // 8 + y // 8) % 2).float() * 0.4 + 0.3,
                      1 - y.float() / h], -1)
    image = bg.expand(b, h, w, 3).clone()
    mask = torch.zeros(b, h, w)
    for i in range(b):
        mask[i, 12 + 4 * i:30 + 4 * i, 20:40] = 1.0
    image[mask > 0.5] = torch.tensor([1.0, 0.0, 1.0])
    return image, mask, bg


# ---------------------------------------------------------------------------------------------- contract
def test_registration_and_metadata(pack):
    mappings, names = pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS
    assert OUR_IDS <= set(mappings)
    for node_id in OUR_IDS:
        cls = mappings[node_id]
        assert names[node_id].endswith("(CartoonSeg)")
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        area = "loaders" if node_id.endswith("Loader") else ("depth" if "Depth" in node_id else "inpaint")
        assert cls.CATEGORY == f"CartoonSeg/{area}"
        assert isinstance(cls.DESCRIPTION, str) and len(cls.DESCRIPTION) > 20
        params = inspect.signature(getattr(cls(), cls.FUNCTION)).parameters
        for section in ("required", "optional"):
            for name, value in spec.get(section, {}).items():
                assert name in params, f"{node_id} lacks parameter {name}"
                if isinstance(value[0], list):
                    assert value[1].get("default", value[0][0]) in value[0]
        assert {p for p, v in params.items() if v.default is inspect.Parameter.empty} <= set(spec["required"])
    assert mappings["CartoonSegDepthLoader"].RETURN_TYPES == ("CARTOONSEG_DEPTH_MODEL",)
    assert mappings["CartoonSegDepthEstimate"].RETURN_TYPES == ("IMAGE", "MASK")
    assert mappings["CartoonSegDepthPool"].RETURN_TYPES == ("IMAGE", "CARTOONSEG_INSTANCES", "STRING")
    assert mappings["CartoonSegInpaintPatchMatch"].RETURN_TYPES == ("IMAGE",)
    assert mappings["CartoonSegInpaintDiffusion"].RETURN_TYPES[0] == "IMAGE"
    diff = mappings["CartoonSegInpaintDiffusion"].INPUT_TYPES()["required"]
    assert [diff[k][0] for k in ("model", "clip", "vae")] == ["MODEL", "CLIP", "VAE"]
    defaults = {k: diff[k][1]["default"] for k in ("seed", "steps", "cfg", "denoise", "sampler_name", "scheduler")}
    assert defaults == {"seed": 0, "steps": 32, "cfg": 7.0, "denoise": 0.75, "sampler_name": "dpmpp_2m", "scheduler": "karras"}
    from cartoonseg.inpaint import NEGATIVE_PROMPT

    assert diff["negative_prompt"][1]["default"] == NEGATIVE_PROMPT


def test_depth_loader_and_estimate(nodes, comfy):
    loader = nodes["CartoonSegDepthLoader"]
    choices = loader.INPUT_TYPES()["required"]["model"][0]
    assert choices[0].startswith("Depth-Anything-V2-Small-hf (Apache-2.0)")
    assert any("non-commercial" in c for c in choices) and "tiny-depth-anything" in choices
    (model,) = loader().load("tiny-depth-anything", "fp32", False)
    image = torch.rand(3, 30, 40, 3)
    depth, depth_mask = nodes["CartoonSegDepthEstimate"]().estimate(model, image)
    assert depth.shape == (3, 30, 40, 3) and depth_mask.shape == (3, 30, 40)
    assert torch.equal(depth[..., 0], depth_mask) and torch.equal(depth[..., 0], depth[..., 2])
    assert float(depth.min()) == 0.0 and float(depth.max()) == 1.0
    assert comfy.updates == 3
    comfy.reset()
    comfy.cancel_after = 1
    with pytest.raises(Interrupted):
        nodes["CartoonSegDepthEstimate"]().estimate(model, image)
    assert comfy.updates == 1
    with pytest.raises(TypeError, match="CARTOONSEG_DEPTH_MODEL"):
        nodes["CartoonSegDepthEstimate"]().estimate("not a model", image)


def test_depth_loader_offline_message(nodes, monkeypatch, models_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as err:
        nodes["CartoonSegDepthLoader"]().load("Depth-Anything-V2-Base-hf (CC-BY-NC-4.0, non-commercial)", "fp32", True)
    assert "huggingface.co/depth-anything/Depth-Anything-V2-Base-hf" in str(err.value)
    assert str(models_dir / "cartoonseg" / "depth" / "Depth-Anything-V2-Base-hf") in str(err.value)


def test_depth_pool_node(nodes):
    h, w = 40, 50
    ramp = (torch.arange(h, dtype=torch.float32) / h)[:, None].expand(h, w)
    depth = ramp[None, ..., None].expand(1, h, w, 3).clone()
    m = torch.zeros(2, h, w)
    m[0, 20:40, 5:15] = 1.0  # near (low on the ground plane)
    m[1, 2:12, 30:40] = 1.0  # far
    inst = Instances.from_masks(m)
    out, ordered, values = nodes["CartoonSegDepthPool"]().pool(depth, [inst], "feet", 1.0, 0.03, False, True)
    assert out.shape == (1, h, w, 3)
    assert torch.allclose(out[0, 20:40, 5:15, 0], torch.tensor(39 / h))
    assert torch.allclose(out[0, 2:12, 30:40, 0], torch.tensor(11 / h))
    assert torch.allclose(out[0, :, 20:28, 0], ramp[:, 20:28], atol=1e-6)  # outside the masks: unchanged
    assert ordered[0].ids.tolist() == [1, 0] and ordered[0].extras["depth"] == pytest.approx([11 / h, 39 / h])
    rec = json.loads(values)
    assert [r["id"] for r in rec] == [1, 0] and [r["z"] for r in rec] == [0, 1]
    # a depth IMAGE from another pack at another size, one depth for two frames of instances
    small = F.interpolate(depth.movedim(-1, 1), size=(20, 26)).movedim(1, -1)
    out2, ordered2, values2 = nodes["CartoonSegDepthPool"]().pool(small, [inst, inst[[0]]], "mean", 1.0, 0.03, False, True)
    assert out2.shape == (2, h, w, 3) and len(ordered2) == 2 and len(json.loads(values2)) == 2
    with pytest.raises(ValueError, match="frames"):
        nodes["CartoonSegDepthPool"]().pool(depth.expand(3, -1, -1, -1), [inst, inst], "mean", 1.0, 0.03, False, True)


def test_background_mask_node(nodes):
    m = torch.zeros(3, 20, 20)
    m[0, 2:5, 2:5] = 1
    m[1, 10:12, 10:12] = 1
    m[2, 15:18, 15:18] = 1
    inst = Instances.from_masks(m)
    (mask,) = nodes["CartoonSegBackgroundMask"]().make([inst, inst], "0,2", 0, 0.0)
    assert mask.shape == (2, 20, 20) and int(mask[0].sum()) == 18
    (grown,) = nodes["CartoonSegBackgroundMask"]().make([inst], "1", 2, 0.0)
    assert int(grown.sum()) > 4 and grown[0, 10, 10] == 1


def test_background_mask_node_video_with_fewer_instances_matches_select_instances(nodes):
    """A selection a frame cannot satisfy skips that frame's missing positions (as Select Instances does) instead of
    failing the whole video: without dilation the same pixels as Select Instances' union."""
    m = torch.zeros(2, 64, 64)
    m[0, 10:30, 8:24] = 1
    m[1, 30:50, 36:56] = 1
    two, one, none = Instances.from_masks(m), Instances.from_masks(m[:1]), Instances.empty(64, 64)
    split = nodes["CartoonSegInstanceSplit"]()
    for select, frames in (("1", [two, one]), ("-1", [two, none]), ("0,1", [two, one, none])):
        (mask,) = nodes["CartoonSegBackgroundMask"]().make(frames, select, 0, 0.0)
        union = split.split(frames, "index", select, "position", -1, 0, 0, "image", 0, "binary")[3]
        assert mask.shape == union.shape and torch.equal(mask, union), select
    (mask,) = nodes["CartoonSegBackgroundMask"]().make([two, one], "1", 5, 0.0)
    assert (20 + 10) * (20 + 10) > int(mask[0].sum()) > 20 * 20 and int(mask[1].sum()) == 0  # ellipse of side 11


def test_patchmatch_node(nodes, comfy):
    image, mask, _bg = scene()
    for method in ("patchmatch", "telea"):
        comfy.reset()
        (out,) = nodes["CartoonSegInpaintPatchMatch"]().inpaint(image, mask, method, 3, 0, 3)
        assert out.shape == image.shape and out.dtype == torch.float32
        keep = mask <= 0.5
        assert torch.equal(out[keep], image[keep])
        magenta = torch.tensor([1.0, 0.0, 1.0])
        assert float((out[~keep] - magenta).abs().sum(-1).min()) > 0.5
        assert comfy.updates == 2
    (one,) = nodes["CartoonSegInpaintPatchMatch"]().inpaint(image, mask[:1], "telea", 3, 0, 3)  # one mask, 2 frames
    assert torch.equal(one[1][mask[0] <= 0.5], image[1][mask[0] <= 0.5])
    with pytest.raises(ValueError, match="frames"):
        nodes["CartoonSegInpaintPatchMatch"]().inpaint(image, mask.repeat(2, 1, 1)[:3], "telea", 3, 0, 3)


def run_diffusion(nodes, image, mask, **overrides):
    args = {"tags": "sky, 1girl, tree_(plant)", "negative_prompt": None, "init": "patchmatch", "seed": 0, "steps": 3, "cfg": 7.0,
                "denoise": 0.75, "sampler_name": "dpmpp_2m", "scheduler": "karras", "short_side": 0}
    args.update(overrides)
    node = nodes["CartoonSegInpaintDiffusion"]
    if args["negative_prompt"] is None:
        args["negative_prompt"] = node.INPUT_TYPES()["required"]["negative_prompt"][1]["default"]
    clip, vae = ToyClip(), ToyVAE()
    out = node().refine("MODEL", clip, vae, image, mask, **args)
    return out, clip, vae


def test_diffusion_node_changes_only_masked_pixels_and_reproduces(nodes, comfy):
    image, mask, _ = scene()
    (out, init, prompt), clip, _vae = run_diffusion(nodes, image, mask)
    keep = mask == 0
    assert out.shape == image.shape
    assert torch.equal(out[keep], image[keep])  # never touches unmasked pixels
    assert not torch.equal(out[~keep], init[~keep])  # the hole was sampled
    # the starting point is the PatchMatch fill: no character colour in it
    magenta = torch.tensor([1.0, 0.0, 1.0])
    assert float((init[~keep] - magenta).abs().sum(-1).min()) > 0.5
    assert torch.equal(init[keep], image[keep])
    # prompts: tags (character tags dropped, parentheses escaped) + the original suffix; fixed negative
    assert prompt == "sky, tree_\\(plant\\), high quality, masterpiece, no_humans"
    assert clip.texts == [prompt, "human, single, person, girl, 1girl, boy, 1boy, creature, animal, alien, robot, body"]
    # ComfyUI sampling got the original parameters, a noise mask and the inpainting latents
    assert len(comfy.sample_calls) == 2
    call = comfy.sample_calls[0]
    assert (call["steps"], call["cfg"], call["denoise"], call["sampler_name"], call["scheduler"], call["seed"]) == \
        (3, 7.0, 0.75, "dpmpp_2m", "karras", 0)
    assert call["noise_mask"].shape == (1, 48, 64) and set(call["noise_mask"].unique().tolist()) == {0.0, 1.0}
    for cond in (call["positive"], call["negative"]):
        assert cond[0][1]["concat_latent_image"].shape == (1, 4, 6, 8)
        assert cond[0][1]["concat_mask"].shape == (1, 1, 48, 64)
    # same seed: same result; another seed: another hole
    (again, _, _), _, _ = run_diffusion(nodes, image, mask)
    assert torch.equal(again, out)
    (other, _, _), _, _ = run_diffusion(nodes, image, mask, seed=5)
    assert not torch.equal(other[~keep], out[~keep]) and torch.equal(other[keep], image[keep])


def test_diffusion_node_working_size_progress_and_cancel(nodes, comfy):
    image, mask, _ = scene(b=1, h=50, w=90)
    (out, _, _), _, vae = run_diffusion(nodes, image, mask, short_side=64, init="telea")
    assert out.shape == image.shape
    assert vae.encoded_shapes[0] == (1, 64, 96, 3)  # short side 64, long side floored to a multiple of 32
    assert torch.equal(out[mask == 0], image[mask == 0])
    steps = comfy.sample_calls[0]["steps"]
    assert comfy.updates == steps + 1  # the bar moves per sampler step (and once for the fill)
    comfy.reset()
    comfy.cancel_in_sampler = True
    with pytest.raises(Interrupted):
        run_diffusion(nodes, image, mask)
    comfy.reset()
    (same, _init, _), _, _ = run_diffusion(nodes, image, torch.zeros(1, 50, 90))  # empty mask: nothing sampled
    assert torch.equal(same, image) and comfy.sample_calls == []
    with pytest.raises(ValueError, match="init"):
        run_diffusion(nodes, image, mask, init="lama")


def test_mask_inputs_accept_the_shapes_other_packs_produce(nodes):
    """MASK inputs shaped [B,1,H,W] (Impact's make_3d_mask squeezes that dim; several packs emit it) or [B,H,W,1]
    give the same result as [B,H,W]; other 4-D shapes are still refused with the shape in the message."""
    image, mask, _bg = scene()
    node = nodes["CartoonSegInpaintPatchMatch"]()
    (ref,) = node.inpaint(image, mask, "telea", 3, 0, 3)
    for shaped in (mask[:, None], mask[..., None]):
        (out,) = node.inpaint(image, shaped, "telea", 3, 0, 3)
        assert torch.equal(out, ref)
    with pytest.raises(ValueError, match=r"\(2, 2, 48, 64\)"):
        node.inpaint(image, mask[:, None].expand(-1, 2, -1, -1), "telea", 3, 0, 3)


def test_depth_loader_is_changed_follows_the_folder_and_the_holder_refuses_changed_files(nodes, models_dir):
    """IS_CHANGED (a classmethod called with the node's inputs) is keyed on the model folder's files; a holder whose
    files changed since the loader ran refuses to read them."""
    import os

    loader = nodes["CartoonSegDepthLoader"]
    first = loader.IS_CHANGED(model="tiny-depth-anything", precision="fp32", auto_download=False)
    assert first == loader.IS_CHANGED(model="tiny-depth-anything", precision="fp32", auto_download=False)
    assert "model.safetensors" in first
    (model,) = loader().load("tiny-depth-anything", "fp32", False)
    config = models_dir / "cartoonseg" / "depth" / "tiny-depth-anything" / "config.json"
    stat = config.stat()
    try:
        os.utime(config, ns=(1, 1))
        assert loader.IS_CHANGED(model="tiny-depth-anything", precision="fp32", auto_download=False) != first
        with pytest.raises(RuntimeError, match="config.json changed on disk"):
            nodes["CartoonSegDepthEstimate"]().estimate(model, torch.rand(1, 30, 40, 3))
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert loader.IS_CHANGED(model="tiny-depth-anything", precision="fp32", auto_download=False) == first
