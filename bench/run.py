"""cartoonseg benchmark suite (issue 10): per-stage times of the two-stage segmenter (arXiv 2312.01943 §4) on a
720x720 image with a forced instance count, achieved GFLOP/s against a conv-throughput calibration measured in the
same run, peak memory, a large-input memory check, and the application benchmarks when their entry points exist.

    python bench/run.py [--quick] [--precision fp32,bf16] [--instances 1,3,8] [--json out.json]
                        [--compare baseline.json] [--threads N] [--repeat R] [--sections segment,large,apps,contention]
                        [--isa native,avx2]

Random weights (speed does not depend on the values). The count of refined instances is forced by refining N fixed
box prompts; decode/NMS runs with ``max_per_img=N``, ``score_thr=0``. Two modes are timed: ``reference`` (eager
NCHW, unfused: the op order of the reference implementation) and ``fast`` (BN folded, channels_last). FLOPs come
from ``torch.utils.flop_counter`` (2 FLOP per MAC), counted once per network and input size. The calibration takes
the best of NCHW and channels-last. Timings on a shared machine are noisy: the table shows medians and bests;
ratios use the best. ``--compare`` prints best-time ratios against a saved JSON. No timing is asserted anywhere.

Precisions the device cannot run (bf16 on an AVX2-only CPU, see :mod:`cartoonseg.device`) are listed under
``unsupported_precisions`` instead of being timed. ``--isa native,avx2`` runs everything once per instruction set in
child processes: ``avx2`` sets ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (on an AVX-512 CPU this is how
an AVX2-only CPU behaves; on an AVX2 CPU it equals ``native``). The ``contention`` section times the detector with
1 and 2 torch threads, with and without a busy process on another core, and with OpenMP's default and passive wait
policies (child processes, since libgomp reads ``OMP_WAIT_POLICY`` when it loads).
"""

# ruff: noqa: B023  (the timing closures are called inside the iteration that defines them)
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # noqa: E402  (bench/: --json FILE)
import cartoonseg
from cartoonseg.device import DTYPES, capabilities
from cartoonseg.structures import Instances
from cartoonseg.transforms import letterbox, to_rgb_uint8

PRESETS = {  # (detector preset, refiner preset, image size, large-input sizes, repeats)
    "full": ("l", "isnet", 720, (4096, 8192), 3),
    "quick": ("tiny", "tiny", 160, (512,), 1),
}


def rss_peak_mb() -> float:
    """Peak resident memory of this process. ``VmHWM`` belongs to the address space, so unlike ``ru_maxrss``
    (which Linux carries across execve) it does not inherit the parent's peak in a subprocess."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


DEVICE = torch.device("cpu")  # set by --device; CUDA timings synchronise before reading the clock


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, repeat: int) -> tuple[dict, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "best": min(times)}, out


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


def calibrate(repeat: int, quick: bool, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict:
    """Throughput of a 3x3 conv 256->256 at 80x80 (40x40 in quick mode; batch 8 on a GPU), fp32 and each low
    precision under autocast, in NCHW and channels-last; ``gflops_best`` is the better layout (the FLOP limit)."""
    hw = 40 if quick else 80
    batch = 8 if DEVICE.type == "cuda" else 1
    flops = 2 * 256 * 256 * 9 * hw * hw * batch
    out = {}
    with torch.inference_mode():
        for name in dict.fromkeys(("fp32", *precisions)):
            ctx = None if name == "fp32" else DTYPES[name]
            row: dict = {}
            for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
                conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).eval().to(DEVICE, memory_format=fmt)
                x = torch.randn(batch, 256, hw, hw, device=DEVICE).contiguous(memory_format=fmt)

                def run():
                    if ctx is None:
                        return conv(x)
                    with torch.autocast(DEVICE.type, dtype=ctx):
                        return conv(x)
                t, _ = timed(run, max(5, repeat * 5))
                row[layout] = {"gflops_best": flops / t["best"] / 1e9, "gflops_median": flops / t["median"] / 1e9}
            best = max(row, key=lambda k: row[k]["gflops_best"])
            out[name] = {**row[best], "best_layout": best, **row}
    return out


def fixed_boxes(n: int, size: int) -> torch.Tensor:
    """N deterministic, overlapping boxes covering different parts of a size x size image."""
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, size * 0.5, (n, 2))
    wh = rng.uniform(size * 0.25, size * 0.5, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)


def bench_segment(args, det, ref, size: int, repeat: int, calib: dict) -> list[dict]:
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    rows = []
    flops = {}
    for mode, fuse, cl in (("reference", False, False), ("fast", True, True)):
        for precision in args.precision:
            seg = cartoonseg.Segmenter(det, ref, score_thr=0.0, precision=precision, fuse=fuse, channels_last=cl,
                                       refine_batch=None)
            d = seg._infer(det)
            r = seg._infer(ref)
            pre_t, (canvas, geom) = timed(
                lambda: letterbox(np.ascontiguousarray(to_rgb_uint8(image)[:, :, ::-1]), seg.det_size), repeat)
            x = seg._layout(det.normalize(canvas[None].to(DEVICE)))

            def run_det():
                with torch.inference_mode(), seg._autocast():
                    return d(x)

            det_t, outputs = timed(run_det, repeat)
            if "det" not in flops:
                flops["det"] = count_flops(lambda: det(det.normalize(canvas[None].to(DEVICE))))
            rx = torch.rand(1, 4, seg.refine_size, seg.refine_size, device=DEVICE)
            if "ref" not in flops:
                flops["ref"] = count_flops(lambda: ref.predict_logits(rx))

            def run_ref_net():
                with torch.inference_mode(), seg._autocast():
                    return r.predict_logits(seg._layout(rx))

            ref_net_t, _ = timed(run_ref_net, repeat)
            for n in args.instances:
                def run_post():
                    with torch.inference_mode():
                        return det.postprocess(outputs, 0, img_shape=geom.img_shape, ori_shape=geom.ori_shape,
                                               scale_factor=geom.scale_factor, score_thr=0.0, max_per_img=n)

                post_t, dets = timed(run_post, repeat)
                boxes = fixed_boxes(n, size)
                prompts = Instances(boxes=boxes, scores=torch.ones(n),
                                    masks=cartoonseg.segmenter.boxes_to_masks(boxes, size, size))
                refine_t, _ = timed(lambda: seg.refine(image, prompts), repeat)
                paste = {k: max(0.0, refine_t[k] - n * ref_net_t[k]) for k in refine_t}
                total = {k: pre_t[k] + det_t[k] + post_t[k] + refine_t[k] for k in refine_t}
                gflop = (flops["det"] + n * flops["ref"]) / 1e9
                net_best = det_t["best"] + n * ref_net_t["best"]
                achieved = gflop / net_best
                cal = calib[precision]["gflops_best"]
                rows.append({
                    "mode": mode, "precision": precision, "instances": n, "image": f"{size}x{size}",
                    "decoded_instances": len(dets),
                    "preprocess_s": pre_t, "detector_s": det_t, "decode_nms_s": post_t,
                    "refiner_per_instance_s": ref_net_t, "refine_total_s": refine_t, "paste_back_s": paste,
                    "total_s": total, "gflop": gflop, "det_gflop": flops["det"] / 1e9,
                    "ref_gflop_per_instance": flops["ref"] / 1e9,
                    "achieved_gflops": achieved, "calibration_gflops": cal, "ratio_to_calibration": achieved / cal,
                    "limit_time_s": gflop / cal, "time_over_limit": net_best / (gflop / cal),
                })
                print(f"  {mode:9s} {precision} N={n}: det {det_t['best']:.3f}s ref/inst {ref_net_t['best']:.3f}s "
                      f"total {total['best']:.3f}s  {achieved:.0f} GFLOP/s = {achieved / cal:.2f} x calibration",
                      flush=True)
    return rows


def large_child(size: int, n: int, det_preset: str, ref_preset: str) -> None:
    """Run in a subprocess: full pipeline on a size x size image with n instances; print peak RSS as JSON."""
    torch.manual_seed(0)
    det, ref = cartoonseg.build_detector(det_preset), cartoonseg.build_refiner(ref_preset)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    base = rss_peak_mb()
    seg = cartoonseg.Segmenter(det, ref, score_thr=0.0, max_instances=n)
    t0 = time.perf_counter()
    inst = seg(image)
    wall = time.perf_counter() - t0
    print(json.dumps({"size": size, "instances": len(inst), "wall_s": wall, "rss_before_mb": base,
                      "peak_rss_mb": rss_peak_mb(), "masks_mb": inst.masks.numel() * 4 / 2**20}))


def bench_large(size: int, n: int, det_preset: str, ref_preset: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_large-child", f"{size},{n},{det_preset},{ref_preset}"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"size": size, "error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_apps(quick: bool, threads: int) -> dict:
    """The application benchmarks (their own scripts, when present) as subprocesses with --json."""
    apps = {
        "tagger": ["bench_tagger.py", "--threads", str(threads), "--repeat", "1" if quick else "3"]
        + (["--quick"] if quick else []),
        "tagger_bf16": ["bench_tagger.py", "--threads", str(threads), "--repeat", "1" if quick else "3",
                        "--precision", "bf16"] + (["--quick"] if quick else []),
        "depth": ["bench_depth.py", "--threads", str(threads), "--repeat", "1" if quick else "3"]
        + (["--quick", "--size", "160"] if quick else []),
        "inpaint_patchmatch": ["bench_inpaint.py", "--size", "256" if quick else "1024", "--threads", str(threads)],
        "kenburns": ["bench_kenburns.py", "--size", "128" if quick else "1024", "--frames", "4" if quick else "75",
                     "--threads", str(threads)],
        "puppet": ["bench_puppet.py", "--size", "192" if quick else "1024", "--frames", "3" if quick else "24",
                   "--threads", str(threads)],
    }
    out = {}
    for name, argv in apps.items():
        script = ROOT / "bench" / argv[0]
        if not script.exists():
            out[name] = {"skipped": f"{script.name} not found"}
            continue
        with tempfile.TemporaryDirectory() as folder:  # a fresh file for each child (never one in the repository)
            tmp = Path(folder) / f"{name}.json"
            cmd = [sys.executable, str(script), *argv[1:]]
            if "--json" in (script.read_text()):
                cmd += ["--json", str(tmp)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=3600)
            res = {"wall_s": time.perf_counter() - t0, "rc": proc.returncode}
            result = json.loads(tmp.read_text()) if tmp.exists() else None
        if result is not None:
            res["result"] = result
        else:
            res["stdout_tail"] = proc.stdout[-1500:]
        if proc.returncode:
            res["stderr_tail"] = proc.stderr[-1500:]
        out[name] = res
    return out


def contention_child(threads: int, repeat: int, det_preset: str, size: int) -> None:
    """Run in a subprocess (its OMP_WAIT_POLICY is set by the parent): detector time (fast path, fp32) with
    ``threads`` torch threads; prints JSON."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    det = cartoonseg.build_detector(det_preset).eval()
    seg = cartoonseg.Segmenter(det, None, score_thr=0.0)
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    canvas, _ = letterbox(np.ascontiguousarray(image[:, :, ::-1]), seg.det_size)
    x = seg._layout(det.normalize(canvas[None]))
    d = seg._infer(det)
    t, _ = timed(lambda: d(x), repeat)
    print(json.dumps({"threads": threads, "detector_s": t}))


def _busy() -> subprocess.Popen:
    """A competing process that keeps one core busy (pure Python loop)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench_contention(repeat: int, det_preset: str, size: int) -> list[dict]:
    rows = []
    for busy in (False, True):
        competitor = _busy() if busy else None
        try:
            time.sleep(0.5 if busy else 0)
            for policy in ("default", "PASSIVE"):
                for threads in (1, 2):
                    env = dict(__import__("os").environ)
                    env.pop("OMP_WAIT_POLICY", None)
                    if policy != "default":
                        env["OMP_WAIT_POLICY"] = policy
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--_contention-child",
                           f"{threads},{repeat},{det_preset},{size}"]
                    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=3600, env=env)
                    row = {"busy_core": busy, "omp_wait_policy": policy, "threads": threads}
                    if proc.returncode:
                        row["error"] = proc.stderr[-1500:]
                    else:
                        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                        print(f"  contention busy={busy} policy={policy} threads={threads}: detector "
                              f"best {row['detector_s']['best']:.3f}s median {row['detector_s']['median']:.3f}s",
                              flush=True)
                    rows.append(row)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    return rows


#: per instruction set: the environment of its child run
ISA_ENV = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def run_isa_children(argv: list[str], isas: list[str]) -> dict:
    """This benchmark once per instruction set, each in a child process with that ISA's environment."""
    import os
    import tempfile

    out = {}
    for isa in isas:
        if isa not in ISA_ENV:
            raise SystemExit(f"--isa: {isa!r} is not one of {sorted(ISA_ENV)}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "isa.json"
            rest = [a for a in _strip_options(argv, ("--isa", "--json", "--compare"))]
            cmd = [sys.executable, str(Path(__file__).resolve()), *rest, "--json", str(path)]
            print(f"=== ISA {isa} ({' '.join(f'{k}={v}' for k, v in ISA_ENV[isa].items()) or 'as detected'})",
                  flush=True)
            proc = subprocess.run(cmd, check=False, env={**os.environ, **ISA_ENV[isa]}, timeout=4 * 3600)
            out[isa] = json.loads(path.read_text()) if path.exists() else {"error": f"exit status {proc.returncode}"}
    return out


def _strip_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if any(a.startswith(n + "=") for n in names):
            continue
        rest.append(a)
    return rest


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown"


def compare(current: dict, baseline: dict) -> list[str]:
    key = lambda r: (r["mode"], r["precision"], r["instances"])
    base = {key(r): r for r in baseline.get("segment", [])}
    lines = []
    for r in current.get("segment", []):
        b = base.get(key(r))
        if b:
            ratio = b["total_s"]["best"] / r["total_s"]["best"]
            lines.append(f"{r['mode']:9s} {r['precision']} N={r['instances']}: total {r['total_s']['best']:.3f}s vs "
                         f"{b['total_s']['best']:.3f}s baseline -> x{ratio:.2f} speed-up")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny presets, small images, one repeat")
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--instances", default="1,3,8")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (segment section; apps and large stay on CPU)")
    p.add_argument("--repeat", type=int, default=0, help="timed repeats (0 = preset default)")
    p.add_argument("--sections", default="segment,large,apps", help="any of segment, large, apps, contention")
    p.add_argument("--isa", default="", help="run once per instruction set in child processes: native, avx2")
    p.add_argument("--large-size", default="", help="sides of the large-input checks, comma-separated (default: preset)")
    p.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(p)
    p.add_argument("--compare", default=None)
    p.add_argument("--_large-child", dest="large_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_contention-child", dest="contention_child", default=None, help=argparse.SUPPRESS)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    if args.large_child:
        size, n, dp, rp = args.large_child.split(",")
        large_child(int(size), int(n), dp, rp)
        return 0
    if args.contention_child:
        threads, rep, dp, size = args.contention_child.split(",")
        contention_child(int(threads), int(rep), dp, int(size))
        return 0
    if args.isa:
        result = {"cpu_model": cpu_model(), "isa_runs": run_isa_children(raw_argv, args.isa.split(","))}
        write_json(args, result)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.precision = [s for s in args.precision.split(",") if s]
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available in this torch build / machine")
    allowed = ("fp32", "bf16", "fp16") if DEVICE.type == "cuda" else ("fp32", "bf16")
    bad = [s for s in args.precision if s not in allowed]
    if bad:
        raise SystemExit(f"--precision: {bad} not supported on {DEVICE.type} (allowed: {', '.join(allowed)})")
    caps = capabilities(DEVICE)
    unsupported = {s: caps.description for s in args.precision if s not in caps.supported}
    args.precision = [s for s in args.precision if s in caps.supported]
    for name, why in unsupported.items():
        print(f"precision {name}: not timed, this {why}", flush=True)
    args.instances = [int(s) for s in args.instances.split(",") if s]
    sections = set(args.sections.split(","))
    det_p, ref_p, size, large, repeat = PRESETS["quick" if args.quick else "full"]
    repeat = args.repeat or repeat
    large = [int(v) for v in args.large_size.split(",") if v] or list(large)
    torch.manual_seed(0)
    result = {
        "preset": "quick" if args.quick else "full", "detector": det_p, "refiner": ref_p,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(DEVICE),
        "device_name": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
        "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
        "cpu_model": cpu_model(), "capabilities": caps.description, "cpu_isa": caps.cpu_isa,
        "onednn_max_isa": caps.onednn_max_isa, "unsupported_precisions": unsupported,
    }
    print(f"calibration (conv3x3 256->256, best of NCHW/channels-last) on {result['device_name']} "
          f"({caps.description}; {result['cpu_model']}), threads={result['threads']}", flush=True)
    result["calibration"] = calibrate(repeat, args.quick, tuple(args.precision))
    print("  " + json.dumps(result["calibration"]), flush=True)
    if "segment" in sections:
        det = cartoonseg.build_detector(det_p).eval().to(DEVICE)
        ref = cartoonseg.build_refiner(ref_p).eval().to(DEVICE)
        result["segment"] = bench_segment(args, det, ref, size, repeat, result["calibration"])
        del det, ref
    if "large" in sections:
        result["large"] = []
        for side in large:
            print(f"large input {side}x{side}, 3 instances (subprocess)", flush=True)
            result["large"].append(bench_large(side, 3, det_p, ref_p))
            print("  " + json.dumps(result["large"][-1]), flush=True)
    if "apps" in sections:
        result["apps"] = bench_apps(args.quick, result["threads"])
        for k, v in result["apps"].items():
            print(f"  app {k}: rc={v.get('rc')} wall {v.get('wall_s', 0):.1f}s {v.get('skipped', '')}", flush=True)
    if "contention" in sections:
        print("contention: detector alone vs with one busy core; 1 vs 2 threads; OMP wait policy", flush=True)
        result["contention"] = bench_contention(repeat, det_p, size)
    result["peak_rss_mb"] = rss_peak_mb()
    if args.compare:
        for line in compare(result, json.loads(Path(args.compare).read_text())):
            print(line)
    write_json(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
