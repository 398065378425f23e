"""ZoeDepth (transformers) and Marigold (diffusers) depth estimators next to Depth Anything V2: tiny random models
built through the real classes, saved with ``save_pretrained`` and loaded back through ``load_depth_model``; the
checked, file-by-file download from a fake local hub (nested diffusers folders included); the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cartoonseg import WeightsUnavailableError
from cartoonseg.depth import DEPTH_MODELS, family_of, load_depth_model, resolve_depth_model
from cartoonseg.depth.marigold import MarigoldEstimator
from cartoonseg.depth.zoedepth import ZoeDepthEstimator

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def make_tiny_zoedepth(folder: Path) -> Path:
    """A randomly initialised ZoeDepth (tiny BEiT backbone) and its processor, in the transformers layout."""
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    try:
        from transformers import ZoeDepthImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import ZoeDepthImageProcessor as Processor
    torch.manual_seed(0)
    backbone = BeitConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                          intermediate_size=32, out_features=["stage1", "stage2", "stage3", "stage4"],
                          out_indices=[1, 2, 3, 4], use_relative_position_bias=True,
                          use_absolute_position_embeddings=False, reshape_hidden_states=False, add_fpn=False)
    config = ZoeDepthConfig(backbone_config=backbone, backbone_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16],
                            fusion_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5], num_relative_features=8,
                            bottleneck_features=8, num_attractors=[4, 4, 2, 2], bin_embedding_dim=8, patch_size=8,
                            bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0}])
    ZoeDepthForDepthEstimation(config).eval().save_pretrained(folder, safe_serialization=True)
    Processor(size={"height": 32, "width": 48}, ensure_multiple_of=8, keep_aspect_ratio=True).save_pretrained(folder)
    return folder


def make_tiny_marigold(folder: Path) -> Path:
    """A randomly initialised Marigold depth pipeline (tiny UNet / VAE / CLIP text encoder, LCM scheduler), saved
    with the diffusers layout."""
    diffusers = pytest.importorskip("diffusers")
    from _tiny_clip import write_clip_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8)
    vae = diffusers.AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                  sample_size=32, down_block_types=["DownEncoderBlock2D"] * 2,
                                  up_block_types=["UpDecoderBlock2D"] * 2)
    tok = write_clip_tokenizer(folder.parent / f"{folder.name}_tokenizer_src")
    tokenizer = CLIPTokenizer(str(tok / "vocab.json"), str(tok / "merges.txt"), model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = diffusers.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       prediction_type="v_prediction", timestep_spacing="trailing")
    pipe = diffusers.MarigoldDepthPipeline(unet=unet, vae=vae, scheduler=scheduler, text_encoder=text,
                                           tokenizer=tokenizer, prediction_type="depth", scale_invariant=True,
                                           shift_invariant=True, default_denoising_steps=2,
                                           default_processing_resolution=32)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zoe_dir(tmp_path_factory) -> Path:
    return make_tiny_zoedepth(tmp_path_factory.mktemp("depth") / "zoedepth-nyu-kitti")


@pytest.fixture(scope="module")
def marigold_dir(tmp_path_factory) -> Path:
    return make_tiny_marigold(tmp_path_factory.mktemp("depth") / "marigold-depth-lcm-v1-0")


# ---------------------------------------------------------------------------------------------- registry
def test_registry_lists_the_three_families_with_licences():
    families = {spec.family for spec in DEPTH_MODELS.values()}
    assert families == {"depth-anything", "zoedepth", "marigold"}
    assert DEPTH_MODELS["zoedepth"].repo_id == "Intel/zoedepth-nyu-kitti" and DEPTH_MODELS["zoedepth"].licence == "MIT"
    lcm = DEPTH_MODELS["marigold-lcm"]
    assert (lcm.steps, lcm.ensemble, lcm.processing_resolution) == (4, 5, 768)  # the original's settings
    for spec in DEPTH_MODELS.values():
        assert spec.files and spec.licence and not set(spec.files) & set(spec.optional_files)


# ---------------------------------------------------------------------------------------------- ZoeDepth
def test_zoedepth_through_transformers_with_flip_tta(zoe_dir):
    from transformers import ZoeDepthForDepthEstimation

    assert family_of(zoe_dir) == "zoedepth"
    est = load_depth_model(zoe_dir)
    assert isinstance(est, ZoeDepthEstimator) and est.flip
    res = est(IMAGE)
    assert res.disparity.shape == (40, 56) == res.raw.shape
    assert float(res.disparity.min()) == 0.0 and float(res.disparity.max()) == 1.0
    assert torch.allclose(res.depth, 1 - res.disparity) and bool((res.raw > 0).all())
    # the same numbers straight from the transformers classes: processor, model on the image and its mirror,
    # averaged, padding (int(sqrt(side / 2) * 3)) removed, metric depth -> normalised inverse
    model = ZoeDepthForDepthEstimation.from_pretrained(zoe_dir).eval()
    x = est.processor(images=IMAGE, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        plain = model(pixel_values=x).predicted_depth
        pred = 0.5 * (plain + model(pixel_values=torch.flip(x, dims=[-1])).predicted_depth.flip(-1))
    ph, pw = int(np.sqrt(40 / 2) * 3), int(np.sqrt(56 / 2) * 3)

    def unpad(p):
        full = F.interpolate(p[:, None], size=(40 + 2 * ph, 56 + 2 * pw), mode="bicubic", align_corners=False)[0, 0]
        return full[ph:ph + 40, pw:pw + 56].clamp_min(0)

    assert torch.allclose(res.raw, unpad(pred), atol=1e-5)
    no_flip = ZoeDepthEstimator(est.model, est.processor, flip=False)(IMAGE)
    assert torch.allclose(no_flip.raw, unpad(plain), atol=1e-5)
    # an image 3 pixels high is read channels-last (transformers would guess channels-first), and a sliver the
    # processor would resize to 0 px gets a one-line error
    strip = np.random.default_rng(0).integers(0, 255, (3, 40, 3), dtype=np.uint8)
    x3 = est.processor(images=strip, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    got = ZoeDepthEstimator(est.model, est.processor, flip=False)
    assert got(strip).raw.shape == (3, 40)
    with torch.no_grad():
        want = model(pixel_values=x3).predicted_depth
    assert x3.shape[-1] > x3.shape[-2]  # wide stays wide
    assert want.shape[-1] > want.shape[-2]
    with pytest.raises(ValueError, match="too elongated for ZoeDepth"):
        got(np.zeros((2, 4000, 3), np.uint8))


def test_zoedepth_bf16_request_follows_the_device_probe(zoe_dir, no_bf16):
    from cartoonseg.device import PrecisionFallbackWarning

    with pytest.warns(PrecisionFallbackWarning):
        est = load_depth_model(zoe_dir, dtype=torch.bfloat16)
    assert est.dtype == torch.float32 and est(IMAGE).disparity.shape == (40, 56)
    with pytest.raises(ValueError, match="float16"):
        load_depth_model(zoe_dir, dtype=torch.float16)


# ---------------------------------------------------------------------------------------------- Marigold
def test_marigold_through_diffusers(marigold_dir):
    assert family_of(marigold_dir) == "marigold"
    est = load_depth_model(marigold_dir, steps=1, ensemble=2, processing_resolution=32)
    assert isinstance(est, MarigoldEstimator) and (est.steps, est.ensemble) == (1, 2)
    res = est(IMAGE)
    assert res.disparity.shape == (40, 56) and float(res.disparity.min()) == 0.0 and float(res.disparity.max()) == 1.0
    assert 0.0 <= float(res.raw.min()) and float(res.raw.max()) <= 1.0
    # disparity is the reversed depth: the nearest prediction is the largest disparity
    assert int(res.raw.argmin()) == int(res.disparity.argmax())
    again = est(IMAGE)
    assert torch.equal(again.raw, res.raw)  # seeded
    assert isinstance(est.model, torch.nn.ModuleDict) and set(est.model) == {"unet", "vae", "text_encoder"}
    # between calls every tensor is in `model`, the one module ComfyUI's model management moves and frees: a tensor
    # cached elsewhere on the pipeline (diffusers' empty prompt embedding) would stay on the GPU after an unload
    stray = {k for obj in (est, est.pipe) for k, v in vars(obj).items() if isinstance(v, torch.Tensor)}
    assert not stray, stray


def test_marigold_defaults_come_from_the_registry(marigold_dir):
    est = load_depth_model(marigold_dir.name, search_dirs=[marigold_dir.parent], allow_download=False,
                           processing_resolution=32, steps=1)
    assert est.ensemble == 5  # marigold-lcm: the original's ensemble of 5


# ---------------------------------------------------------------------------------------------- download
@pytest.fixture()
def hub(monkeypatch):
    """``snapshot_download`` stand-in serving a local folder as the repo: it copies the files that match the
    requested ``allow_patterns`` (nested diffusers paths included); ``truncate`` halves every safetensors file."""
    import fnmatch
    import shutil

    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    state = {"repo": None, "truncate": False, "requested": []}

    def snapshot_download(repo_id, revision, local_dir, allow_patterns):
        state["requested"] = list(allow_patterns)
        root = state["repo"]
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if not any(fnmatch.fnmatch(name, pat) for pat in allow_patterns):
                continue
            dest = Path(local_dir) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            if state["truncate"] and name.endswith(".safetensors"):
                data = data[: len(data) // 2]
            dest.write_bytes(data)
            shutil.copystat(path, dest)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return state


def test_zoedepth_download_fetches_the_checked_file_list(hub, zoe_dir, tmp_path):
    import shutil

    hub["repo"] = zoe_dir
    folder = resolve_depth_model("zoedepth", download_dir=tmp_path)
    assert folder == tmp_path / "zoedepth-nyu-kitti"
    assert sorted(hub["requested"]) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert isinstance(load_depth_model(folder), ZoeDepthEstimator)
    # a repo without the processor settings is an incomplete model: nothing is left behind
    partial = tmp_path / "partial_repo"
    shutil.copytree(zoe_dir, partial)
    (partial / "preprocessor_config.json").unlink()
    hub["repo"] = partial
    with pytest.raises(WeightsUnavailableError, match="incomplete .*preprocessor_config.json"):
        resolve_depth_model("zoedepth", download_dir=tmp_path / "second")
    assert not (tmp_path / "second" / "zoedepth-nyu-kitti").exists()


def test_marigold_download_nested_pipeline_folders(hub, marigold_dir, tmp_path):
    hub["repo"] = marigold_dir
    folder = resolve_depth_model("marigold-lcm", download_dir=tmp_path)
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    spec = DEPTH_MODELS["marigold-lcm"]
    assert set(hub["requested"]) == set(spec.files + spec.optional_files)
    assert set(spec.files) <= set(got) <= set(spec.files + spec.optional_files)
    assert isinstance(load_depth_model(folder, steps=1, processing_resolution=32), MarigoldEstimator)
    # a truncated UNet is caught by the safetensors check and never placed
    hub["truncate"] = True
    with pytest.raises(WeightsUnavailableError, match="incomplete .*unreadable"):
        resolve_depth_model("marigold-lcm", download_dir=tmp_path / "truncated")
    assert not (tmp_path / "truncated" / "marigold-depth-lcm-v1-0").exists()
    assert not [p for p in (tmp_path / "truncated").iterdir()]  # no temporary folder left either


def test_offline_names_every_file_and_the_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_depth_model("marigold", download_dir=tmp_path)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "unet/diffusion_pytorch_model.safetensors" in message
    assert str(tmp_path / "marigold-depth-v1-1") in message and "https://" in message


def test_incomplete_local_marigold_folder_is_refused(marigold_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(marigold_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(WeightsUnavailableError, match="unet/diffusion_pytorch_model.safetensors"):
        load_depth_model(broken)
    assert json.loads((broken / "model_index.json").read_text())["_class_name"] == "MarigoldDepthPipeline"


# ---------------------------------------------------------------------------------------------- ComfyUI loader
PACK = "cartoonseg_pack_depth_models_test"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, zoe_dir, marigold_dir):
    """ComfyUI's models folder with the tiny ZoeDepth under its published name and the tiny Marigold as a local
    folder of another name."""
    import shutil

    root = tmp_path_factory.mktemp("comfy_models")
    depth = root / "cartoonseg" / "depth"
    shutil.copytree(zoe_dir, depth / "zoedepth-nyu-kitti")
    shutil.copytree(marigold_dir, depth / "my-marigold")
    (depth / "not-a-model").mkdir()
    return root


def test_loader_node_lists_and_runs_zoedepth_and_marigold(nodes, comfy, models_dir):
    loader = nodes["CartoonSegDepthLoader"]
    spec = loader.INPUT_TYPES()["required"]
    choices = spec["model"][0]
    assert "zoedepth-nyu-kitti (ZoeDepth, MIT)" in choices and "my-marigold" in choices
    assert any(c.startswith("marigold-depth-lcm-v1-0") for c in choices) and "not-a-model" not in choices
    assert "zoedepth-nyu-kitti" not in choices  # the published one is listed once, under its display name
    assert spec["precision"][0] == ["fp32", "fp16", "bf16"]  # cartoonseg.device.PRECISIONS, as the other loaders
    image = torch.rand(2, 30, 40, 3)
    for name in ("zoedepth-nyu-kitti (ZoeDepth, MIT)", "my-marigold"):
        (model,) = loader().load(name, "fp32", False)
        depth, mask = nodes["CartoonSegDepthEstimate"]().estimate(model, image)
        assert depth.shape == (2, 30, 40, 3) and mask.shape == (2, 30, 40)
        assert float(depth.min()) == 0.0 and float(depth.max()) == 1.0
    with pytest.raises(ValueError, match="precision"):
        loader().load("my-marigold", "fp8", False)


def test_loader_node_fp16_on_the_cpu_runs_fp32_on_every_cpu(nodes, comfy, models_dir):
    """A workflow saved with fp16 (for a GPU) runs on the CPU in fp32 after a warning, on CPUs with fp16 kernels
    (AVX512-FP16, where it used to raise) as on those without."""
    from cartoonseg.device import PrecisionFallbackWarning

    (model,) = nodes["CartoonSegDepthLoader"]().load("zoedepth-nyu-kitti (ZoeDepth, MIT)", "fp16", False)
    with pytest.warns(PrecisionFallbackWarning):
        depth, _ = nodes["CartoonSegDepthEstimate"]().estimate(model, torch.rand(1, 30, 40, 3))
    assert depth.shape == (1, 30, 40, 3) and bool(torch.isfinite(depth).all())


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_depth_runs_zoedepth_and_marigold(zoe_dir, marigold_dir, tmp_path):
    from PIL import Image

    from cartoonseg.depth.cli import main as cli_main

    Image.fromarray(IMAGE).save(tmp_path / "img.png")
    for folder, extra in ((zoe_dir, []), (marigold_dir, ["--steps", "1", "--ensemble", "1", "--processing-resolution", "32"])):
        out = tmp_path / f"{folder.name}.png"
        assert cli_main(["depth", str(tmp_path / "img.png"), "--model", str(folder), "--out", str(out), *extra]) == 0
        grey = np.asarray(Image.open(out))
        assert grey.shape[:2] == (40, 56) and grey.min() == 0 and grey.max() == 255


def test_marigold_bf16_runs_on_every_cpu(marigold_dir):
    """bf16 Marigold on a CPU with bf16 kernels used to crash in diffusers' antialiased resize (no bf16 CPU kernel);
    it is autocast over fp32 weights now. On a CPU without bf16 kernels it falls back to fp32 (one warning)."""
    import warnings

    from cartoonseg.device import resolve_dtype

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = load_depth_model(marigold_dir, dtype=torch.bfloat16, steps=1, ensemble=1, processing_resolution=32)
        assert est.dtype == resolve_dtype("bf16", "cpu")
    out = est(IMAGE)
    assert out.disparity.shape == (40, 56) and out.disparity.dtype == torch.float32
    assert bool(torch.isfinite(out.disparity).all())
