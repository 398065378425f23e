"""Contract of the ComfyUI node CartoonSegInstanceStyleEdit, with stubbed ``comfy`` modules.

The node package is loaded under a private name (never ``import nodes``: that name is ComfyUI's). The stubs stand in
for ComfyUI's sampling API with the same call signatures (comfy.sample.prepare_noise / sample, CLIP.tokenize /
encode_from_tokens, VAE.encode / decode, ControlNet.copy / set_cond_hint / set_previous_controlnet, ProgressBar,
model_management interrupt) and record what reaches them.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cartoonseg.structures import Instances

REPO = Path(__file__).resolve().parents[1]
PKG = "_cartoonseg_style_node_pack"


class Interrupted(Exception):
    pass


class ComfyStub:
    """Fake comfy.* modules recording the calls."""

    def __init__(self) -> None:
        self.samples: list[dict] = []
        self.progress: list[tuple[int, int]] = []
        self.interrupt_after: int | None = None
        self.interrupt_checks = 0

    def modules(self) -> dict[str, types.ModuleType]:
        stub = self
        comfy = types.ModuleType("comfy")
        comfy.__path__ = []
        samplers = types.ModuleType("comfy.samplers")
        samplers.KSampler = type("KSampler", (), {"SAMPLERS": ["euler", "dpmpp_2m"], "SCHEDULERS": ["normal", "karras"]})
        sample = types.ModuleType("comfy.sample")

        def prepare_noise(latent, seed, inds=None):
            return torch.randn(latent.shape, generator=torch.Generator().manual_seed(int(seed)))

        def sample_fn(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                      denoise=1.0, noise_mask=None, callback=None, disable_pbar=False, seed=None, **kw):
            control = positive[0][1].get("control")
            stub.samples.append({
                "prompt": decode(positive[0][0]), "negative": decode(negative[0][0]), "seed": seed, "steps": steps,
                "cfg": cfg, "sampler": sampler_name, "scheduler": scheduler, "denoise": denoise,
                "noise_mask": noise_mask, "hint": None if control is None else control.hint,
                "strength": None if control is None else control.strength,
                "neg_control": negative[0][1].get("control") is control, "noise": noise.clone(), "model": model,
            })
            for i in range(steps):
                if callback is not None:
                    callback(i, latent_image, latent_image, steps)
            new = 1.0 - latent_image + 0.1 * noise
            if noise_mask is not None:
                m = F.interpolate(noise_mask.reshape(-1, 1, *noise_mask.shape[-2:]), size=latent_image.shape[-2:], mode="bilinear")
                new = latent_image * (1 - m) + new * m
            return new

        sample.prepare_noise = prepare_noise
        sample.sample = sample_fn
        mm = types.ModuleType("comfy.model_management")

        def throw():
            stub.interrupt_checks += 1
            if stub.interrupt_after is not None and len(stub.samples) >= stub.interrupt_after:
                raise Interrupted("cancelled")

        mm.throw_exception_if_processing_interrupted = throw
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")
        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total):
                self.total, self.current = total, 0

            def update(self, n):
                self.current += n
                stub.progress.append((self.current, self.total))

            def update_absolute(self, value, total=None, preview=None):
                self.current = value

        utils.ProgressBar = ProgressBar
        comfy.samplers, comfy.sample, comfy.model_management, comfy.utils = samplers, sample, mm, utils
        return {"comfy": comfy, "comfy.samplers": samplers, "comfy.sample": sample,
                "comfy.model_management": mm, "comfy.utils": utils}


def encode(text: str) -> torch.Tensor:
    return torch.tensor([[float(ord(c)) for c in text]])


def decode(cond: torch.Tensor) -> str:
    return "".join(chr(int(v)) for v in cond[0].tolist())


class FakeClip:
    def tokenize(self, text):
        return text

    def encode_from_tokens(self, tokens, return_pooled=False):
        return encode(tokens), torch.zeros(1, 4)


class FakeVAE:
    def encode(self, pixels):
        assert pixels.dim() == 4 and pixels.shape[-1] == 3 and pixels.shape[1] % 8 == 0 and pixels.shape[2] % 8 == 0
        x = F.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.cat([x, x.mean(1, keepdim=True)], 1)

    def decode(self, latent):
        return F.interpolate(latent[:, :3], scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


class FakeControlNet:
    def __init__(self):
        self.hint = None
        self.strength = None
        self.previous = "unset"
        self.kwargs = None

    def copy(self):
        return FakeControlNet()

    def set_cond_hint(self, hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=()):
        self.hint, self.strength, self.kwargs = hint, strength, {"range": timestep_percent_range, "vae": vae}
        return self

    def set_previous_controlnet(self, prev):
        self.previous = prev


@pytest.fixture()
def comfy(monkeypatch):
    stub = ComfyStub()
    for name, mod in stub.modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    return stub


@pytest.fixture()
def node_module(comfy, monkeypatch):
    """nodes/style.py imported inside a private package that points at the repo's nodes/ folder."""
    pkg = types.ModuleType(PKG)
    pkg.__path__ = [str(REPO / "nodes")]
    monkeypatch.setitem(sys.modules, PKG, pkg)
    for sub in ("_comfy", "style"):
        monkeypatch.delitem(sys.modules, f"{PKG}.{sub}", raising=False)
    return importlib.import_module(f"{PKG}.style")


def _scene(b: int = 1):
    g = torch.Generator().manual_seed(1)
    image = torch.rand(b, 64, 96, 3, generator=g) * 0.6 + 0.2
    m = torch.zeros(2, 64, 96)
    m[0, 8:30, 10:40] = 1.0
    m[1, 24:60, 50:90] = 1.0
    inst = Instances.from_masks(m).replace(
        extras={"tags": [{"1girl": 0.9, "red_hair": 0.8}, {"1boy": 0.9, "cat_ears": 0.7}]}
    )
    return image, [inst] * b


def _defaults(node_cls) -> dict:
    spec = node_cls.INPUT_TYPES()
    out = {}
    for name, entry in spec["required"].items():
        if len(entry) > 1 and isinstance(entry[1], dict) and "default" in entry[1]:
            out[name] = entry[1]["default"]
    return out


def _run(node_module, image, instances, **kw):
    node = node_module.CartoonSegInstanceStyleEdit()
    args = _defaults(node_module.CartoonSegInstanceStyleEdit)
    args.update(model="MODEL", clip=FakeClip(), vae=FakeVAE(), image=image, instances=instances)
    args.update(background_fill="none", resolution=0, mask_feather=0)
    args.update(kw)
    return node.edit(**args)


def test_contract(node_module):
    cls = node_module.CartoonSegInstanceStyleEdit
    assert node_module.NODE_CLASS_MAPPINGS == {"CartoonSegInstanceStyleEdit": cls}
    assert set(node_module.NODE_DISPLAY_NAME_MAPPINGS) == set(node_module.NODE_CLASS_MAPPINGS)
    assert cls.CATEGORY.startswith("CartoonSeg/") and cls.DESCRIPTION
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS) == 3
    spec = cls.INPUT_TYPES()
    for key in ("model", "clip", "vae", "image", "instances", "style_prompt", "negative_prompt", "seed", "steps",
                "cfg", "sampler_name", "scheduler", "denoise", "mode", "background_as_instance", "iterations",
                "crop_padding", "mask_feather"):
        assert key in spec["required"], key
    assert spec["required"]["instances"][0] == "CARTOONSEG_INSTANCES"
    assert set(spec["optional"]) == {"control_net", "control_hint", "background"}
    assert spec["optional"]["control_net"][0] == "CONTROL_NET"
    # the stubbed ComfyUI's sampler lists are offered, with the paper's DPM++ 2M Karras as default
    assert spec["required"]["sampler_name"][0] == ["euler", "dpmpp_2m"]
    assert spec["required"]["sampler_name"][1]["default"] == "dpmpp_2m"
    assert spec["required"]["scheduler"][1]["default"] == "karras"
    d = _defaults(cls)
    assert (d["steps"], d["denoise"], d["control_strength"]) == (24, 0.75, 1.0)
    # the widgets default to the paper's SD1.5 preset, as the CLI's --preset does (cfg was StyleConfig()'s 7, not
    # repaint_person.py's 9)
    from cartoonseg.style.cli import add_parsers
    from cartoonseg.style.config import style_preset

    paper = style_preset("paper_sd15")
    assert d["cfg"] == paper.cfg == 9.0
    for widget, field in (("steps", "steps"), ("denoise", "denoise"), ("sampler_name", "sampler"),
                          ("scheduler", "scheduler"), ("hint_type", "hint"), ("resolution", "resolution"),
                          ("crop_padding", "crop_padding"), ("mask_feather", "mask_feather"), ("mode", "mode"),
                          ("iterations", "iterations"), ("control_strength", "control_strength"),
                          ("negative_prompt", "negative_prompt"), ("background_fill", "background_fill")):
        assert d[widget] == getattr(paper, field), widget
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    add_parsers(sub)
    assert sub.choices["style"].get_default("preset") == "paper_sd15"
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    assert set(spec["required"]) | set(spec["optional"]) == set(params) - {"self"}
    for name in spec["optional"]:
        assert params[name].default is None


def test_per_instance_loop_prompts_seed_and_paste(node_module, comfy):
    image, instances = _scene()
    out, hint, prompts = _run(node_module, image, instances, seed=42, style_prompt="3D pixar style",
                              background_as_instance=False, masked_denoise=False)
    assert [s["prompt"] for s in comfy.samples] == ["3D pixar style, 1girl, red hair", "3D pixar style, 1boy, cat ears"]
    assert {s["seed"] for s in comfy.samples} == {42}
    assert all(torch.equal(s["noise"], comfy.samples[0]["noise"]) for s in comfy.samples if s["noise"].shape == comfy.samples[0]["noise"].shape)
    assert all((s["sampler"], s["scheduler"], s["steps"], s["denoise"]) == ("dpmpp_2m", "karras", 24, 0.75) for s in comfy.samples)
    assert all(s["hint"] is None for s in comfy.samples)  # no ControlNet connected
    assert out.shape == image.shape and hint.shape == image.shape
    union = instances[0].binary.any(0)
    changed = (out[0] != image[0]).any(-1)
    assert not bool(changed[~union].any()) and bool(changed[union].all())  # pasted through the masks only
    assert prompts.splitlines()[0] == "frame 0 iter 0 instance 0 (seed 42): 3D pixar style, 1girl, red hair"


def test_background_pass_masked_denoise_and_control_net(node_module, comfy):
    image, instances = _scene()
    cn = FakeControlNet()
    _, hint, _ = _run(node_module, image, instances, control_net=cn, control_strength=0.8, style_prompt="cg",
                        background_prompt="city street")
    assert [s["prompt"] for s in comfy.samples] == ["cg, city street", "cg, 1girl, red hair", "cg, 1boy, cat ears"]
    assert "1girl" in comfy.samples[0]["negative"]  # characters kept out of the background
    for s in comfy.samples:
        assert s["hint"] is not None and s["hint"].shape[1] == 3 and s["strength"] == 0.8  # [B,3,H,W] like core
        assert s["neg_control"]  # applied to positive and negative, like ControlNetApplyAdvanced
    assert comfy.samples[0]["noise_mask"] is None and comfy.samples[1]["noise_mask"] is not None
    assert float(hint.max()) > 0  # lineart preview of the whole frame
    # external hint image: used as given
    comfy.samples.clear()
    given = torch.zeros(1, 64, 96, 3)
    _run(node_module, image, instances, control_net=FakeControlNet(), control_hint=given)
    assert all(float(s["hint"].abs().max()) == 0 for s in comfy.samples)


def test_global_baseline_and_batch_seed(node_module, comfy):
    image, instances = _scene(b=2)
    out, _, prompts = _run(node_module, image, instances, mode="global", style_prompt="cinematic", seed=3)
    assert [(s["prompt"], s["seed"]) for s in comfy.samples] == [("cinematic", 3), ("cinematic", 3)]
    assert out.shape == (2, 64, 96, 3) and "whole image" in prompts
    comfy.samples.clear()
    _run(node_module, image, instances, seed=9, background_as_instance=False)
    # video batch: every frame and every instance gets the same seed
    assert [s["seed"] for s in comfy.samples] == [9, 9, 9, 9]


def test_progress_and_cancel(node_module, comfy):
    image, instances = _scene()
    _run(node_module, image, instances)
    # one unit per sampler step of each pass (background + 2 instances, 24 steps), not one per pass
    assert comfy.progress[-1] == (3 * 24, 3 * 24) and len(comfy.progress) >= 3 * 24
    assert comfy.interrupt_checks >= 3 * 24  # checked at every sampler step too
    comfy.samples.clear()
    comfy.progress.clear()
    comfy.interrupt_after = 1
    with pytest.raises(Interrupted):
        _run(node_module, image, instances)
    assert len(comfy.samples) == 1


def test_bad_inputs(node_module, comfy):
    image, instances = _scene()
    with pytest.raises(ValueError, match="segment the same image"):
        _run(node_module, image[:, :32], instances)
    with pytest.raises(ValueError, match="instances has 2 frames but image has 3"):
        _run(node_module, torch.cat([image] * 3), instances * 2)
    # one picture for two instances frames: one edited frame per pair, as every node pairs an image with its
    # instances (it used to be refused: Style Edit counted the frames by the image alone)
    out, hint, _ = _run(node_module, image, instances * 2)
    assert out.shape == (2, *image.shape[1:]) and hint.shape == out.shape
    comfy.samples.clear()
    with pytest.raises(TypeError, match="CARTOONSEG_INSTANCES"):
        _run(node_module, image, ["nope"])
    out, _, _ = _run(node_module, image, [Instances.empty(64, 96)], background_as_instance=False)
    assert torch.equal(out, image) and comfy.samples == []
    # a clean plate of another aspect ratio would be stretched under the characters: refused before any pass
    with pytest.raises(ValueError, match="background plate is 96x20 px but the image is 96x64"):
        _run(node_module, image, instances, background=torch.rand(1, 20, 96, 3))
    assert comfy.samples == []
    # batch errors name the node's inputs
    with pytest.raises(ValueError, match="control_hint has 2 frames"):
        _run(node_module, torch.cat([image] * 3), instances, control_hint=torch.rand(2, 64, 96, 3))
    with pytest.raises(ValueError, match="background has 2 frames"):
        _run(node_module, torch.cat([image] * 3), instances, background=torch.rand(2, 64, 96, 3))


def test_module_imports_without_diffusers_or_comfy():
    code = (
        "import sys, types, importlib\n"
        "sys.modules['diffusers'] = None\n"
        f"pkg = types.ModuleType('{PKG}'); pkg.__path__ = [{str(REPO / 'nodes')!r}]; sys.modules['{PKG}'] = pkg\n"
        f"m = importlib.import_module('{PKG}.style')\n"
        "spec = m.CartoonSegInstanceStyleEdit.INPUT_TYPES()\n"
        "assert 'dpmpp_2m' in spec['required']['sampler_name'][0]\n"
        "assert not any(k.startswith('comfy') for k in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
