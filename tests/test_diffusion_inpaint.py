"""Diffusion refinement helpers and the diffusers runner, on a tiny randomly initialised SD inpainting pipeline built
here (UNet/VAE/CLIP with a hand-made character-level tokenizer; no download), loaded back through the real loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cartoonseg.inpaint import (
    NEGATIVE_PROMPT,
    NEGATIVE_PROMPT_RELEASED_CODE,
    RefineSettings,
    background_prompt,
    composite,
    grey_out_hole,
    working_size,
)
from cartoonseg.inpaint.cli import main as cli_main
from cartoonseg.inpaint.diffusers_backend import load_inpaint_pipeline, refine_with_diffusers
from _tiny_clip import write_clip_tokenizer

diffusers = pytest.importorskip("diffusers")  # requirements-dev.txt; optional at run time (CLI only)


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_sd_inpaint")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    tok_dir = write_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = folder / "pipeline"
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_inpaint_pipeline(tiny_pipeline_dir)


def test_prompts_follow_the_original():
    assert background_prompt(None) == "high quality, masterpiece, no_humans"
    p = background_prompt({"outdoors": 0.6, "sky": 0.9, "1girl": 0.99, "cloud_(sky)": 0.5})
    assert p == "sky, outdoors, cloud_\\(sky\\), high quality, masterpiece, no_humans"  # underscores kept
    assert background_prompt(["tree", ("grass", 0.7), "tree", "solo"]) == "tree, grass, high quality, masterpiece, no_humans"
    assert background_prompt("forest, river", suffix="") == "forest, river"
    assert "boy, 1boy" in NEGATIVE_PROMPT and "cat" in NEGATIVE_PROMPT_RELEASED_CODE
    with pytest.raises(TypeError):
        background_prompt(3)


def test_prompt_reads_tag_lists_as_the_tagger_writes_them():
    """A tags string is parsed as the tagger's tag lists are (cartoonseg.tags.parse_tag_list): "\\," is a comma
    inside a tag (Tag Instances' background_tags writes names that way) and a newline separates tags too; a plain
    comma split left "ah\\, _so" in the prompt."""
    from cartoonseg.tags import join_tag_list

    line = join_tag_list(["ah,_so", "sky", "solo"]) + "\n" + join_tag_list(["tree", "star_(sky)"])
    assert background_prompt(line) == "ah,_so, sky, tree, star_\\(sky\\), high quality, masterpiece, no_humans"
    assert background_prompt("forest \\(dark\\), lake\n\n", suffix="") == "forest \\(dark\\), lake"


def test_settings_sizes_and_compositing():
    s = RefineSettings()
    assert (s.steps, s.cfg, s.denoise, s.seed, s.sampler, s.scheduler, s.short_side) == (32, 7.0, 0.75, 0, "dpmpp_2m", "karras", 1024)
    with pytest.raises(ValueError):
        RefineSettings(denoise=0.0)
    # the seed is checked up front (a seed past 2**64 - 1 failed inside the sampler, after the PatchMatch fill)
    assert RefineSettings(seed=2**64 - 1).seed == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed must lie in"):
            RefineSettings(seed=bad)
    for bad in (1.5, "3"):
        with pytest.raises(TypeError, match="seed must be an integer"):
            RefineSettings(seed=bad)
    assert working_size(720, 1280) == (1024, 1792)  # short side 1024, long side floored to a multiple of 32
    assert working_size(1280, 720, 512) == (896, 512)
    assert working_size(50, 90, 0) == (48, 88)
    # the short side is exactly short_side (floored to 32) for every size, not one multiple of 32 less where the
    # float scale lands just below an integer (725 px: 725 * (1024 / 725) = 1023.99...)
    assert working_size(725, 1000) == (1024, 1408) and working_size(1000, 725) == (1408, 1024)
    for short in range(100, 1500):
        assert min(working_size(short, 2000)) == 1024 and min(working_size(2000, short, 1000)) == 992
    img = torch.rand(6, 8, 3)
    new = torch.rand(6, 8, 3)
    m = torch.zeros(6, 8)
    m[2:4, 2:5] = 1.0
    m[0, 0] = 0.25
    out = composite(img, new, m)
    assert torch.equal(out[m == 0], img[m == 0])
    assert torch.equal(out[m == 1], new[m == 1])
    assert torch.allclose(out[0, 0], img[0, 0] * 0.75 + new[0, 0] * 0.25)
    grey = grey_out_hole(img, m)
    assert torch.all(grey[2:4, 2:5] == 0.5) and torch.equal(grey[5], img[5])


def test_refine_background_samples_only_real_holes_and_keeps_the_rest_exact():
    from cartoonseg.inpaint import refine_background

    requests = []

    def backend(req):
        requests.append(req)
        return 1.0 - req.image

    g = torch.Generator().manual_seed(0)
    image = torch.rand(37, 53, 3, generator=g)  # not a multiple of 8, hole on the border
    mask = torch.zeros(37, 53)
    mask[:10, 40:] = 1.0
    out, fill = refine_background(image, mask, backend, prompt="x", settings=RefineSettings(steps=2, short_side=0))
    assert len(requests) == 1 and out.shape == image.shape
    assert torch.equal(out[mask == 0], image[mask == 0]) and torch.equal(fill[mask == 0], image[mask == 0])
    assert not torch.equal(out[mask > 0], fill[mask > 0])
    # a given init is used inside the hole only
    out, fill = refine_background(image, mask, backend, prompt="x", init=torch.zeros_like(image),
                                  settings=RefineSettings(steps=2, short_side=0))
    assert torch.equal(out[mask == 0], image[mask == 0]) and torch.equal(fill[mask > 0], torch.zeros_like(fill[mask > 0]))
    # a uint8 image (and init) is 0..255 by io's rule, as its float twin (a bare .float() mixed 0..255 with [0,1])
    u8 = (image * 255).round().to(torch.uint8)
    as_float = u8.float() / 255
    for init in ("image", "given"):
        got = [refine_background(x, mask, backend, prompt="x", settings=RefineSettings(steps=2, short_side=0),
                                 init=torch.zeros_like(x) if init == "given" else "image") for x in (u8, as_float)]
        assert torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1])
    # a one-pixel hole that the downscale to the working size would erase is still sampled (not a call with an
    # empty mask, which samples nothing or, for an inpainting model, regenerates the whole image)
    requests.clear()
    big = torch.rand(200, 300, 3, generator=g)
    dot = torch.zeros(200, 300)
    dot[100, 150] = 1.0
    out, _ = refine_background(big, dot, backend, prompt="x", settings=RefineSettings(steps=2, short_side=64))
    assert tuple(requests[0].mask.shape) == (1, 64, 96) and 1 <= int(requests[0].mask.sum()) <= 4
    assert not torch.equal(out[100, 150], big[100, 150]) and torch.equal(out[dot == 0], big[dot == 0])
    # soft values without a hole (nothing above 0.5) and an empty mask: no sampling, the image comes back
    requests.clear()
    soft = torch.zeros(37, 53)
    soft[5:20, 5:20] = 0.4
    for m in (soft, torch.zeros(37, 53)):
        out, _ = refine_background(image, m, backend, prompt="x", settings=RefineSettings(steps=2, short_side=0))
        assert torch.equal(out, image)
    assert requests == []


def test_refine_changes_only_masked_pixels_and_seed_reproduces(pipe):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(48, 64, 3, generator=g)
    init = image.clone()
    mask = torch.zeros(48, 64)
    mask[10:30, 20:44] = 1.0
    init[mask > 0.5] = 0.3  # a stand-in fill
    settings = RefineSettings(steps=4, short_side=0, seed=7)
    steps_seen = []
    a = refine_with_diffusers(pipe, image, mask, init, prompt=background_prompt("sky"), settings=settings,
                              progress=lambda i, n: steps_seen.append((i, n)))
    b = refine_with_diffusers(pipe, image, mask, init, prompt=background_prompt("sky"), settings=settings)
    c = refine_with_diffusers(pipe, image, mask, init, prompt=background_prompt("sky"),
                              settings=RefineSettings(steps=4, short_side=0, seed=8))
    assert a.shape == image.shape
    outside = mask == 0
    assert torch.equal(a[outside], image[outside])
    assert not torch.equal(a[~outside], init[~outside])  # the hole was re-synthesised
    assert torch.equal(a, b)
    assert not torch.equal(a[~outside], c[~outside])
    assert steps_seen and steps_seen[-1] == (3, 3)  # 4 steps at denoise 0.75: diffusers runs 3; the bar ends full
    # resize path (working size differs from the image) still leaves unmasked pixels untouched
    d = refine_with_diffusers(pipe, image, mask, init, prompt="x", settings=RefineSettings(steps=2, short_side=64))
    assert torch.equal(d[outside], image[outside])

    def cancel(i, n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine_with_diffusers(pipe, image, mask, init, prompt="x", settings=settings, progress=cancel)
    with pytest.raises(ValueError, match="sizes differ"):
        refine_with_diffusers(pipe, image, mask[:10], init, prompt="x")


def test_loader_is_local_only(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"not really")
    with pytest.raises(ValueError, match="config"):
        load_inpaint_pipeline(ckpt)
    with pytest.raises(FileNotFoundError):
        load_inpaint_pipeline(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="model_index.json"):
        load_inpaint_pipeline(tmp_path)
    with pytest.raises(ValueError, match="float16"):
        load_inpaint_pipeline(tmp_path, dtype=torch.float16)


def test_cli_inpaint_refine(tiny_pipeline_dir, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[8:24, 10:30] = 255
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    rc = cli_main(["inpaint-refine", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--model", str(tiny_pipeline_dir),
                   "--out", str(out), "--tags", "sky, grass", "--steps", "2", "--short-side", "0", "--seed", "1"])
    assert rc == 0
    res = np.asarray(Image.open(out))
    assert np.array_equal(res[mask == 0], img[mask == 0])
    # one step at the default denoise 0.75: diffusers would run int(1 * 0.75) = 0 steps and fail inside
    assert cli_main(["inpaint-refine", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--model",
                     str(tiny_pipeline_dir), "--out", str(tmp_path / "one.png"), "--steps", "1", "--short-side", "0",
                     "--quiet"]) == 0
