"""Benchmark: depth of one image with a published depth model's architecture (random weights: speed does not depend
on the values), through the package's estimator, pre- and post-processing included.

    python bench/bench_depth.py [--model small|zoedepth|marigold-lcm] [--threads 2] [--repeat 3] [--size 720]
        [--precision fp32|bf16] [--steps 1,2] [--ensemble 1] [--json out.json]

* ``small`` (default): Depth Anything V2-Small (DINOv2-S/14 + DPT head, 24.8 M parameters) through
  ``cartoonseg.depth.DepthEstimator``; the network sees the image at 518 px on the short side (the processor rule).
* ``zoedepth``: ZoeD_M12_NK (BEiT-L/16 at 384 + metric bins for NYU and KITTI, 345 M) through
  ``cartoonseg.depth.zoedepth.ZoeDepthEstimator`` with the published processor settings (384x512, multiple of 32,
  ZoeDepth padding) and the flip test-time augmentation (two forward passes).
* ``marigold-lcm``: the Marigold pipeline (Stable Diffusion 2 UNet with 8 input channels, SD VAE, OpenCLIP-H text
  encoder; about 1.3 B) through ``cartoonseg.depth.marigold.MarigoldEstimator`` at processing resolution 768.
  Each run of ``--steps`` (comma-separated) is timed; the per-step cost (difference of the first two) gives the
  estimate for the original's 4 steps x ensemble of 5 (cost = ensemble x (encode + steps x UNet + decode)).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)
from cartoonseg.depth import DepthEstimator  # noqa: E402
from cartoonseg.device import DTYPES, capabilities, resolve_precision  # noqa: E402


def v2_small(quick: bool = False) -> torch.nn.Module:
    """Depth Anything V2-Small's published shape (``quick``: a 2-layer, 64-wide stand-in for CI)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    if quick:
        backbone = Dinov2Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                                patch_size=14, image_size=518, out_features=["stage1", "stage2", "stage3", "stage4"],
                                reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=64,
                                  neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=16, head_hidden_size=8)
    else:
        backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                patch_size=14, image_size=518, out_indices=[3, 6, 9, 12],
                                reshape_hidden_states=False, layerscale_value=1.0)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                  neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32)
    return DepthAnythingForDepthEstimation(cfg).eval()


def zoedepth_nk():
    """ZoeD_M12_NK's published shape (transformers' ZoeDepthConfig defaults are the BEiT-L/384 model; NK adds the
    KITTI bins) and the published processor settings."""
    from transformers import ZoeDepthConfig, ZoeDepthForDepthEstimation

    try:
        from transformers import ZoeDepthImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import ZoeDepthImageProcessor as Processor
    torch.manual_seed(0)
    cfg = ZoeDepthConfig(bin_configurations=[{"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0},
                                             {"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}],
                         num_patch_transformer_layers=4, patch_transformer_hidden_size=128,
                         patch_transformer_intermediate_size=1024, patch_transformer_num_attention_heads=4)
    return ZoeDepthForDepthEstimation(cfg).eval(), Processor()


def marigold_pipeline():
    """A Marigold depth pipeline with the published component shapes (SD 2 UNet with 8 input channels, SD VAE,
    OpenCLIP-H text encoder, LCM scheduler) and a small stand-in tokenizer (Marigold encodes one empty prompt)."""
    import tempfile

    import diffusers
    from _tiny_clip import write_clip_tokenizer  # tests/: the tokenizer the tests' tiny pipelines use
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=96, in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)
    vae = diffusers.AutoencoderKL(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3,
                                  latent_channels=4, layers_per_block=2, sample_size=768,
                                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    folder = write_clip_tokenizer(Path(tempfile.mkdtemp(prefix="bench_marigold_tok_")))
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                        hidden_act="gelu", projection_dim=512, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1))
    scheduler = diffusers.LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       prediction_type="v_prediction", timestep_spacing="trailing")
    pipe = diffusers.MarigoldDepthPipeline(unet=unet.eval(), vae=vae.eval(), scheduler=scheduler,
                                           text_encoder=text.eval(), tokenizer=tokenizer, prediction_type="depth",
                                           scale_invariant=True, shift_invariant=True, default_denoising_steps=4,
                                           default_processing_resolution=768)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _time(est, image, repeat: int) -> tuple[list[float], list[float], object]:
    est(image)  # warm-up
    walls, cpus = [], []
    out = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = est(image)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus, out


def _loadavg():
    return Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None


def bench_other(args, image) -> dict:
    """ZoeDepth or Marigold (fp32 only: their reduced-precision paths are GPU paths here)."""
    rows = []
    if args.model == "zoedepth":
        from cartoonseg.depth.zoedepth import ZoeDepthEstimator

        model, processor = zoedepth_nk()
        est = ZoeDepthEstimator(model, processor, flip=True)
        walls, cpus, out = _time(est, image, args.repeat)
        rows.append({"precision": "fp32", "flip_tta": True, "wall_median_s": statistics.median(walls),
                     "wall_best_s": min(walls), "cpu_median_s": statistics.median(cpus),
                     "output_shape": list(out.disparity.shape)})
        print(f"zoedepth fp32: best {min(walls):.2f} s, median {statistics.median(walls):.2f} s", flush=True)
        params = sum(t.numel() for t in model.parameters())
        name = "ZoeD_M12_NK architecture (BEiT-L/384), flip TTA"
    else:
        from cartoonseg.depth.marigold import MarigoldEstimator

        pipe = marigold_pipeline()
        steps = [int(s) for s in args.steps.split(",") if s]
        for n in steps:
            est = MarigoldEstimator(pipe, steps=n, ensemble=args.ensemble, processing_resolution=768)
            wall, cpu = time.perf_counter(), time.process_time()  # no warm-up: one run is minutes on a CPU
            out = est(image)
            rows.append({"precision": "fp32", "steps": n, "ensemble": args.ensemble,
                         "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                         "output_shape": list(out.disparity.shape), "loadavg": _loadavg()})
            print(f"marigold steps={n} ensemble={args.ensemble}: {rows[-1]['wall_s']:.1f} s", flush=True)
        if len(rows) >= 2:
            per_step = (rows[1]["wall_s"] - rows[0]["wall_s"]) / (rows[1]["steps"] - rows[0]["steps"])
            fixed = rows[0]["wall_s"] - rows[0]["steps"] * per_step
            rows.append({"estimate": "the original's 4 steps x ensemble 5", "unet_step_s": per_step,
                         "encode_decode_s": fixed, "wall_s": 5 * (fixed + 4 * per_step) / args.ensemble})
        params = sum(t.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for t in m.parameters())
        name = "Marigold architecture (SD2 UNet, 8 input channels), processing resolution 768"
    return {"model": name, "params": params, "image": f"{args.size}x{args.size}", "threads": args.threads,
            "rows": rows, "loadavg": _loadavg()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size", type=int, default=720, help="side of the square input image")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--quick", action="store_true", help="a small stand-in network (CI smoke run; small only)")
    p.add_argument("--model", default="small", choices=["small", "zoedepth", "marigold-lcm"])
    p.add_argument("--steps", default="1,2", help="marigold-lcm: denoising steps of the timed runs")
    p.add_argument("--ensemble", type=int, default=1, help="marigold-lcm: ensemble size of the timed runs")
    p.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(p)
    args = p.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    torch.set_num_threads(args.threads)
    if args.model != "small":
        if args.quick:
            p.error("--quick runs the small model only")
        image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        result = bench_other(args, image)
        print(json.dumps(result, indent=1))
        write_json(args, result)
        return
    model = v2_small(args.quick)
    params = sum(t.numel() for t in model.parameters())
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    rows = []
    for name in [s for s in args.precision.split(",") if s]:
        if resolve_precision(name, "cpu") != name:  # e.g. bf16 on an AVX2-only CPU: nothing to time
            rows.append({"precision": name, "unsupported": capabilities("cpu").description})
            continue
        dtype = DTYPES[name]
        est = DepthEstimator(model, dtype=dtype)
        est(image)  # warm-up
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            out = est(image)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        rows.append({"precision": name, "network_size": list(est.network_size(args.size, args.size)),
                     "wall_median_s": statistics.median(walls), "wall_best_s": min(walls),
                     "cpu_median_s": statistics.median(cpus), "output_shape": list(out.disparity.shape)})
        print(f"depth {name}: best {min(walls):.3f} s, median {statistics.median(walls):.3f} s", flush=True)
    result = {"model": "Depth Anything V2-Small architecture" + (" (quick stand-in)" if args.quick else ""),
              "params": params, "image": f"{args.size}x{args.size}", "threads": args.threads, "rows": rows,
              "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None}
    print(json.dumps(result, indent=1))
    write_json(args, result)


if __name__ == "__main__":
    main()
