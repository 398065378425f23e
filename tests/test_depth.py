"""Depth estimation (tiny random Depth Anything built here, saved and loaded back through the real loader, a fake
local hub for downloads) and instance depth pooling with known answers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cartoonseg import Instances, WeightsUnavailableError
from cartoonseg.depth import (
    DEPTH_MODELS,
    DepthEstimator,
    depth_to_image,
    disparity_from_image,
    load_depth_model,
    resolve_depth_model,
)
from cartoonseg.depth import pool_instance_depth, pool_value, z_order_instances
from cartoonseg.depth.cli import main as cli_main

transformers = pytest.importorskip("transformers")  # in requirements.txt; skip only on broken installs


def make_tiny_depth_model(folder: Path, *, processor: bool = True) -> Path:
    """A randomly initialised DepthAnything (V2 architecture, tiny widths) in the transformers folder layout."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    model = DepthAnythingForDepthEstimation(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if processor:
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_resize": True, "size": {"height": 70, "width": 70}, "ensure_multiple_of": 14,
            "keep_aspect_ratio": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        }))
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny_depth_model(tmp_path_factory.mktemp("depth") / "tiny-depth-anything")


def test_load_and_estimate_at_image_size(tiny_dir):
    est = load_depth_model(tiny_dir)
    assert isinstance(est, DepthEstimator) and est.size == (70, 70) and est.multiple == 14
    assert est.network_size(50, 90) == (42, 70)  # DPT rule: scale closest to 1, sides multiple of 14
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    res = est(image)
    assert res.disparity.shape == (50, 90) and res.depth.shape == (50, 90) and res.raw.shape == (50, 90)
    assert float(res.disparity.min()) == 0.0 and float(res.disparity.max()) == 1.0
    assert torch.allclose(res.depth, 1 - res.disparity)
    # the transformers model itself, run on our pre-processing, gives the same raw map (before resize)
    x = est.preprocess(image)
    assert tuple(x.shape) == (1, 3, 42, 70)
    with torch.no_grad():
        ref = est.model(pixel_values=x).predicted_depth
    ref = torch.nn.functional.interpolate(ref[:, None], size=(50, 90), mode="bicubic", align_corners=False)[0, 0]
    assert torch.allclose(res.raw, ref, atol=1e-5)
    # float input in [0,1], grey and RGBA inputs are accepted
    same = est(torch.from_numpy(image).float() / 255.0)
    assert torch.allclose(same.disparity, res.disparity, atol=1e-5)
    assert est(image[..., 0]).disparity.shape == (50, 90)
    assert est(np.concatenate([image, image[..., :1]], -1)).disparity.shape == (50, 90)
    with pytest.raises(ValueError, match="too small"):
        est(np.zeros((1, 5, 3), np.uint8))


def test_bf16_and_defaults_without_processor_file(tmp_path):
    folder = make_tiny_depth_model(tmp_path / "noproc", processor=False)
    est = load_depth_model(folder, dtype=torch.bfloat16)
    assert est.size == (518, 518) and est.multiple == 14
    out = est(np.full((30, 40, 3), 128, np.uint8))
    assert out.disparity.dtype == torch.float32 and torch.isfinite(out.disparity).all()
    with pytest.raises(ValueError, match="float16"):
        load_depth_model(folder, dtype=torch.float16)


def test_resolve_search_dirs_download_and_offline(tiny_dir, tmp_path, monkeypatch):
    spec = DEPTH_MODELS["small"]
    assert spec.licence == "Apache-2.0" and "non-commercial" in DEPTH_MODELS["large"].licence
    models = tmp_path / "models"
    # not on disk, downloads disabled: the message names the URL and the expected folder
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_depth_model("small", search_dirs=[models], allow_download=False)
    assert "huggingface.co/depth-anything/Depth-Anything-V2-Small-hf" in str(err.value)
    assert str(models / "Depth-Anything-V2-Small-hf") in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        resolve_depth_model("small", search_dirs=[models])
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # fake hub: snapshot_download copies the tiny model into local_dir
    calls = []

    def fake_snapshot_download(repo_id, revision, local_dir, allow_patterns):
        calls.append((repo_id, revision, local_dir, tuple(allow_patterns)))
        for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
            shutil.copy(tiny_dir / name, Path(local_dir) / name)
        return local_dir

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    path = resolve_depth_model("small", search_dirs=[models])
    assert path == models / "Depth-Anything-V2-Small-hf"
    # downloaded into a temporary folder next to the target, then renamed (tests/test_depth_download.py)
    assert calls == [(spec.repo_id, "main", calls[0][2], ("config.json", "model.safetensors", "preprocessor_config.json"))]
    assert Path(calls[0][2]).parent == models and not Path(calls[0][2]).exists()
    # second time it is found locally, even offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_depth_model("depth-anything/Depth-Anything-V2-Small-hf", search_dirs=[models]) == path
    assert len(calls) == 1
    assert isinstance(load_depth_model("small", search_dirs=[models]), DepthEstimator)

    # download failures are reported with the manual route
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def failing(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(WeightsUnavailableError, match="no network.*Depth-Anything-V2-Base-hf"):
        resolve_depth_model("base", search_dirs=[models])
    # a download into download_dir (the CLI without --models-dir, ~/.cache by default) is found there again,
    # offline too, instead of being fetched on every call
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    cache = tmp_path / "cache"
    first = resolve_depth_model("small", download_dir=cache)
    assert len(calls) == 2 and first == cache / "Depth-Anything-V2-Small-hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_depth_model("small", download_dir=cache, allow_download=False) == first and len(calls) == 2


def test_resolve_rejects_bad_folders_and_names(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(WeightsUnavailableError, match="model.safetensors"):
        resolve_depth_model(tmp_path / "half")
    with pytest.raises(WeightsUnavailableError, match="known"):
        resolve_depth_model("huge")


def test_disparity_from_other_packs_images():
    img = torch.zeros(1, 10, 12, 3)
    img[0, :, 6:] = 0.8
    d = disparity_from_image(img)
    assert d.shape == (10, 12) and float(d[0, 11]) == pytest.approx(0.8)
    up = disparity_from_image(img, size=(20, 24))
    assert up.shape == (20, 24)
    u8 = disparity_from_image(np.full((4, 4), 255, np.uint8))
    assert torch.all(u8 == 1.0)
    assert torch.all(disparity_from_image(np.full((4, 4), 255, np.uint8), invert=True) == 0.0)
    assert disparity_from_image(torch.rand(5, 6, 4)).shape == (5, 6)
    with pytest.raises(ValueError, match="batch"):
        disparity_from_image(torch.rand(2, 5, 6, 3))
    vis = depth_to_image(torch.tensor([[0.0, 2.0], [float("nan"), 0.5]]))
    assert vis.shape == (2, 2, 3) and float(vis.max()) == 1.0 and float(vis[1, 0, 0]) == 0.0


# ---------------------------------------------------------------------------------------------- pooling
def ramp(h=100, w=60) -> torch.Tensor:
    """Disparity growing downwards (the ground plane: nearer at the bottom): d[y, x] = y / 100."""
    return (torch.arange(h, dtype=torch.float32) / 100.0)[:, None].expand(h, w).clone()


def box(h, w, y1, y2, x1, x2) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def test_pool_modes_known_answers():
    d = ramp()
    m = box(100, 60, 10, 110, 5, 15)  # rows 10..99 (touches the bottom border)
    assert float(pool_value(d, m, "mean")) == pytest.approx(np.mean(np.arange(10, 100)) / 100, abs=1e-6)
    assert float(pool_value(d, m, "median")) == pytest.approx(np.median(np.arange(10, 100)) / 100, abs=1e-6)
    assert float(pool_value(d, m, "feet")) == pytest.approx(0.99)  # max over the bottom rows
    # feet uses the bottom 3 % of the extent only: a bright spot above it is ignored
    d2 = d.clone()
    d2[50, 10] = 5.0
    m2 = box(100, 60, 0, 80, 5, 15)  # rows 0..79: band rows >= 0 + 0.97 * 79 = 76.63, i.e. 77..79
    assert float(pool_value(d2, m2, "feet")) == pytest.approx(0.79)
    assert float(pool_value(d2, m2, "feet", feet_fraction=0.5)) == pytest.approx(5.0)
    # median of an even count is the mean of the two middle values
    even = torch.tensor([[1.0, 2.0, 3.0, 10.0]])
    assert float(pool_value(even, torch.ones(1, 4, dtype=torch.bool), "median")) == pytest.approx(2.5)
    # one pixel, and empty
    one = box(100, 60, 40, 41, 7, 8)
    for mode in ("mean", "median", "feet"):
        assert float(pool_value(d, one, mode)) == pytest.approx(0.40)
        assert math.isnan(float(pool_value(d, torch.zeros(100, 60, dtype=torch.bool), mode)))
    with pytest.raises(ValueError, match="allowed"):
        pool_value(d, m, "max")


@pytest.mark.parametrize("mode", ["mean", "median", "feet"])
def test_non_finite_depth_samples_are_left_out_of_the_pooling(mode):
    """NaN and ±inf depth samples are no measurement: an instance pools its finite samples only (one +inf made
    the mean 3.4e38 / k, a NaN counted as 0 pulled it toward the far end), the map holds no ±3.4e38 and an
    instance with no finite sample is left alone like an empty one."""
    d = ramp()
    m = box(100, 60, 10, 100, 5, 15)
    bad = d.clone()
    bad[30, 7], bad[40, 8], bad[50, 9], bad[99, 6] = float("inf"), -float("inf"), float("nan"), float("inf")
    bad[0, 0], bad[1, 1] = float("inf"), -float("inf")  # outside every mask
    hole = box(100, 60, 60, 62, 40, 42)  # a second instance whose samples are all missing
    bad[hole] = float("nan")
    clean = m.clone()
    clean[30, 7] = clean[40, 8] = clean[50, 9] = clean[99, 6] = False
    want = float(pool_value(d, clean, mode))
    assert float(pool_value(bad, m, mode)) == pytest.approx(want, abs=1e-6)
    res = pool_instance_depth(bad, torch.stack([m, hole]), mode=mode)
    assert float(res.values[0]) == pytest.approx(want, abs=1e-6) and bool(res.valid[0])
    assert math.isnan(float(res.values[1])) and not bool(res.valid[1])
    assert bool(torch.isfinite(res.depth).all()) and float(res.depth.abs().max()) <= 1.0
    assert float(res.depth[0, 0]) == 0.0 and float(res.depth[1, 1]) == 0.0 and bool((res.depth[hole] == 0).all())
    assert bool((res.depth[m] == res.values[0]).all())
    # a map of another size is resized without the missing samples dragging their neighbours toward 0
    half = pool_instance_depth(bad[::2, ::2], torch.stack([m, hole]), mode="mean")
    assert bool(torch.isfinite(half.depth).all()) and float(half.depth.abs().max()) <= 1.0
    assert float(half.values[0]) == pytest.approx(float(pool_value(d, m, "mean")), abs=0.02)


def test_pool_instance_depth_flattens_blends_and_orders():
    d = ramp()
    masks = torch.stack([box(100, 60, 20, 40, 0, 10), box(100, 60, 50, 90, 30, 50), torch.zeros(100, 60, dtype=torch.bool)])
    res = pool_instance_depth(d, masks, mode="mean")
    v0, v1 = np.mean(np.arange(20, 40)) / 100, np.mean(np.arange(50, 90)) / 100
    assert res.values[:2].tolist() == pytest.approx([v0, v1], abs=1e-6)
    assert math.isnan(float(res.values[2])) and res.valid.tolist() == [True, True, False]
    assert res.order.tolist() == [2, 0, 1]  # empty first, then far -> near
    assert torch.allclose(res.depth[masks[0]], torch.tensor(v0, dtype=torch.float32))
    assert torch.allclose(res.depth[masks[1]], torch.tensor(v1, dtype=torch.float32))
    outside = ~(masks[0] | masks[1])
    assert torch.equal(res.depth[outside], d[outside])
    half = pool_instance_depth(d, masks, mode="mean", blend=0.5)
    assert torch.allclose(half.depth[masks[0]], (d[masks[0]] + v0) / 2)
    same = pool_instance_depth(d, masks, blend=0.0)
    assert torch.equal(same.depth, d)
    with pytest.raises(ValueError, match="blend"):
        pool_instance_depth(d, masks, blend=1.5)


def test_overlaps_go_to_the_nearest_instance():
    d = torch.zeros(40, 40)
    d[:, 20:] = 1.0  # right half near
    near = box(40, 40, 0, 40, 20, 40)
    far = box(40, 40, 0, 40, 0, 30)  # overlaps the near one on columns 20..29
    res = pool_instance_depth(d, torch.stack([far, near]), mode="mean")
    assert float(res.values[1]) == pytest.approx(1.0)
    # the far instance is pooled over its own pixels only (columns 0..19), not the occluded strip
    assert float(res.values[0]) == pytest.approx(0.0)
    assert torch.all(res.depth[:, 20:30] == 1.0)  # the nearest wins where they overlap
    kept = pool_instance_depth(d, torch.stack([far, near]), mode="mean", resolve_overlaps=False)
    assert float(kept.values[0]) == pytest.approx(10 / 30)
    # an overlap under the nearer instance whose pixels are far: the instance that owns the overlap paints it,
    # even when the other one, pooled without those pixels, ends up in front
    d = torch.zeros(8, 15)
    d[:, :5], d[:, 10:] = 0.6, 0.9
    a, b = box(8, 15, 0, 8, 0, 10), box(8, 15, 0, 8, 5, 15)
    for soft in (False, True):
        res = pool_instance_depth(d, torch.stack([a, b]), mode="mean", soft=soft)
        assert res.values.tolist() == pytest.approx([0.6, 0.45])
        torch.testing.assert_close(res.depth[:, 5:10], torch.full((8, 5), 0.45), rtol=0, atol=1e-6)
        torch.testing.assert_close(res.depth[:, :5], torch.full((8, 5), 0.6), rtol=0, atol=1e-6)


def test_instances_input_soft_edges_resize_and_z_order():
    soft = torch.zeros(2, 20, 20)
    soft[0, 2:6, 2:6] = 0.9
    soft[0, 6, 2:6] = 0.4  # soft edge below mask_thr
    soft[1, 10:15, 10:15] = 0.8
    inst = Instances.from_masks(soft, mask_thr=0.5)
    inst.extras["tags"] = [{"a": 1.0}, {"b": 1.0}]
    d = torch.zeros(20, 20)
    d[2:6] = 0.9
    d[10:15] = 0.1
    res = pool_instance_depth(d, inst, mode="median", soft=True)
    assert float(res.depth[6, 3]) == pytest.approx(0.4 * 0.9)  # alpha 0.4 toward 0.9 from 0
    ordered = z_order_instances(inst, res)
    assert ordered.ids.tolist() == [1, 0]  # far -> near
    assert ordered.extras["depth"] == pytest.approx([0.1, 0.9])
    assert ordered.extras["tags"] == [{"b": 1.0}, {"a": 1.0}]
    small = torch.nn.functional.interpolate(d[None, None], size=(10, 10))[0, 0]
    assert pool_instance_depth(small, inst).depth.shape == (20, 20)
    empty = pool_instance_depth(d, Instances.empty(20, 20))
    assert torch.equal(empty.depth, d) and len(empty.values) == 0


def test_cli_depth_and_depth_pool(tiny_dir, tmp_path, capfd):
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    assert cli_main(["depth", str(tmp_path / "img.png"), "--model", str(tiny_dir), "--out", str(tmp_path / "d.png"),
                     "-q"]) == 0
    err = capfd.readouterr().err
    assert "%|" not in err and "Loading weights" not in err  # -q silences transformers' loading bar too
    dep = np.asarray(Image.open(tmp_path / "d.png"))
    assert dep.shape == (40, 50) and dep.dtype == np.uint8 and dep.max() == 255 and dep.min() == 0
    assert cli_main(["depth", str(tmp_path / "img.png"), "--model", str(tiny_dir), "--bits", "16",
                     "--out", str(tmp_path / "d16.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "d16.png")).max() > 255
    # depth-pool with a synthetic ramp and two masks
    ramp_img = (np.arange(40)[:, None].repeat(50, 1) * 6).astype(np.uint8)
    Image.fromarray(ramp_img).save(tmp_path / "ramp.png")
    for i, (y1, y2) in enumerate([(5, 15), (20, 40)]):
        m = np.zeros((40, 50), np.uint8)
        m[y1:y2, 10:20] = 255
        Image.fromarray(m).save(tmp_path / f"m{i}.png")
    rc = cli_main(["depth-pool", str(tmp_path / "ramp.png"), "--masks", str(tmp_path / "m0.png"), str(tmp_path / "m1.png"),
                   "--mode", "feet", "--out", str(tmp_path / "pooled.png"), "--json", str(tmp_path / "v.json")])
    assert rc == 0
    rec = json.loads((tmp_path / "v.json").read_text())
    assert [r["depth"] for r in rec["instances"]] == pytest.approx([14 * 6 / 255, 39 * 6 / 255], abs=1e-5)
    assert rec["back_to_front"] == [str(tmp_path / "m0.png"), str(tmp_path / "m1.png")]
    pooled = np.asarray(Image.open(tmp_path / "pooled.png"))
    assert np.all(pooled[20:40, 10:20] == 39 * 6) and np.array_equal(pooled[:, 30:], ramp_img[:, 30:])
    assert cli_main(["depth", str(tmp_path / "img.png"), "--model", str(tmp_path / "nothing"), "--no-download",
                     "--out", str(tmp_path / "x.png")]) == 2


def test_16_bit_depth_needs_a_16_bit_format_and_bad_outputs_fail_before_the_work(tiny_dir, tmp_path, capfd):
    """--bits 16 to a format that holds 8 bits wrote a near-white picture (WebP: Pillow clipped the 16-bit values)
    or failed only after the model ran (JPEG); an ending Pillow cannot write also failed only at the end."""
    from PIL import Image

    from cartoonseg.io import write_grey

    ramp = torch.linspace(0, 1, 60).reshape(6, 10)
    for name in ("d.webp", "d.jpg", "d.bmp"):
        with pytest.raises(ValueError, match="16 bits"):
            write_grey(tmp_path / name, ramp, bits=16)
        assert not (tmp_path / name).exists()
    write_grey(tmp_path / "d.tif", ramp, bits=16)
    torch.testing.assert_close(torch.from_numpy(np.asarray(Image.open(tmp_path / "d.tif"), np.float32) / 65535), ramp,
                               atol=1 / 65535, rtol=0)
    write_grey(tmp_path / "d8.webp", ramp, bits=8)  # 8 bits: any writable format
    Image.fromarray(np.zeros((6, 10, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((6, 10), 255, np.uint8)).save(tmp_path / "m.png")
    runs = [["depth", str(tmp_path / "img.png"), "--model", str(tmp_path / "no-model"), "--bits", "16",
             "--out", str(tmp_path / "o.webp")],
            ["depth", str(tmp_path / "img.png"), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o.xyz")],
            ["depth-pool", str(tmp_path / "d.tif"), "--masks", str(tmp_path / "m.png"), "--bits", "16",
             "--out", str(tmp_path / "p.jpg")]]
    for argv in runs:  # the bad --out is named before the (missing) model is looked for or anything is read
        assert cli_main(argv) == 2
        err = capfd.readouterr().err
        assert err.startswith("error: cannot write") and "Traceback" not in err, err
        assert not Path(argv[-1]).exists()


def test_32_bit_depth_files_are_read_in_their_documented_ranges_and_refused_otherwise(tmp_path, capfd):
    """A float TIFF of metric depth (metres) was divided by 255 and clipped, an int32 one beyond 16 bits clipped, and
    negative values clipped to 0: silently wrong depth maps. They are refused now; [0,1] float and 16-bit-range
    integer files read exactly."""
    from PIL import Image

    from cartoonseg.io import read_depth

    ramp = np.linspace(0, 1, 60, dtype=np.float32).reshape(6, 10)
    Image.fromarray(ramp).save(tmp_path / "f01.tif")
    nan = ramp.copy()
    nan[0, :3] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    Image.fromarray((ramp * 65535).round().astype(np.int32)).save(tmp_path / "i16.tif")
    torch.testing.assert_close(read_depth(tmp_path / "f01.tif"), torch.from_numpy(ramp))
    assert float(read_depth(tmp_path / "nan.tif")[0, :3].abs().max()) == 0.0
    torch.testing.assert_close(read_depth(tmp_path / "i16.tif"), torch.from_numpy(ramp), atol=1 / 65535, rtol=0)
    bad = {"metric.tif": ramp * 80 + 0.5, "neg.tif": ramp * 2 - 1, "inf.tif": np.where(ramp > 0.5, np.inf, ramp),
           "i32.tif": (ramp * 1e6).astype(np.int32), "ineg.tif": (ramp * 100 - 50).astype(np.int32)}
    for name, arr in bad.items():
        Image.fromarray(arr.astype(arr.dtype if arr.dtype == np.int32 else np.float32)).save(tmp_path / name)
        with pytest.raises(ValueError, match=f"{name} is a 32-bit .* file with values in"):
            read_depth(tmp_path / name)
    Image.fromarray(np.full((6, 10), 255, np.uint8)).save(tmp_path / "m.png")
    assert cli_main(["depth-pool", str(tmp_path / "metric.tif"), "--masks", str(tmp_path / "m.png"),
                     "--out", str(tmp_path / "p.png")]) == 2
    err = capfd.readouterr().err
    assert "values in [0.5, 80.5]" in err and "Traceback" not in err and not (tmp_path / "p.png").exists()


def test_damaged_local_model_folders_give_one_clear_error(tiny_dir, tmp_path, capfd):
    """A local folder with truncated weights ended the CLI in a safetensors traceback; one whose config.json is not
    JSON was refused for lacking "the tokenizer"."""
    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_dir, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc is damaged: model.safetensors is unreadable"):
        load_depth_model(trunc)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "config.json").write_text('{"model_type": ')
    with pytest.raises(WeightsUnavailableError, match="lacks a readable config.json .*not valid JSON"):
        resolve_depth_model(broken)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    assert cli_main(["depth", str(tmp_path / "img.png"), "--model", str(trunc), "--out", str(tmp_path / "d.png"),
                     "-q"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: depth model folder") and "Traceback" not in err


def test_cli_depth_reads_the_image_before_loading_the_model(tmp_path, capfd, monkeypatch):
    """An unreadable image failed only after the depth model loaded (Marigold: seconds to minutes, or a
    download); now its one error line comes first and nothing is loaded."""
    from cartoonseg.depth import cli as depth_cli

    def must_not_load(*args, **kwargs):
        raise AssertionError("the depth model was loaded before the image was read")

    monkeypatch.setattr(depth_cli, "load_depth_model", must_not_load)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert cli_main(["depth", str(tmp_path / "junk.png"), "--model", "small", "--out", str(tmp_path / "d.png")]) == 2
    assert capfd.readouterr().err.startswith("error: cannot read image")
