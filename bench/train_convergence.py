"""Benchmark: does stage-1 training learn, and how fast? Fixtures -> synthesis -> training -> held-out AP.

    python bench/train_convergence.py [--out DIR] [--recipe tiny-cpu] [--threads 2] [--budget-min 20]
    python bench/train_convergence.py --device cuda            # the paper recipe (RTMDet-Ins-L, AMP) on a GPU

1. procedural fixtures (characters + backgrounds, :mod:`cartoonseg.data.fixtures`);
2. a synthetic training set and a held-out validation set made from them (:mod:`cartoonseg.data.synthesis`,
   different seeds and image ids; both resume if the folder exists);
3. :func:`cartoonseg.training.detector.train_detector` with the chosen recipe (``tiny-cpu``: see
   ``DETECTOR_RECIPES``), stopped after ``--budget-min`` minutes of training wall time (evaluations excluded);
4. every ``--eval-every`` steps and at the end: Box / Mask / Boundary AP and AP50 of the exported (EMA) weights
   on the held-out set.

Prints a table of AP against steps, training wall time and training CPU time (all threads of the training
process; on an idle machine wall time is about CPU time / threads), and writes ``OUT/convergence.json``
(settings, curve, load averages, timings) and ``OUT/learning_curve.png``. Wall times depend on the machine's load:
the 1-minute load average is recorded with every evaluation; compare runs only at similar load.

Thread count matters on a shared CPU: OpenMP's default spin-waiting makes 2 torch threads up to ~20x slower
than 1 when other processes hold the cores. This script sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead
of spinning) unless the variable is already set; ``--omp-wait-policy ''`` keeps the OpenMP default.
"""

from __future__ import annotations

import os
import sys


def _early_env() -> None:
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads it: set it before anything imports torch
    argv = sys.argv[1:]
    policy = "PASSIVE"
    for i, a in enumerate(argv):
        if a == "--omp-wait-policy" and i + 1 < len(argv):
            policy = argv[i + 1]
        elif a.startswith("--omp-wait-policy="):
            policy = a.split("=", 1)[1]
    if policy:
        os.environ.setdefault("OMP_WAIT_POLICY", policy)


_early_env()

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cartoonseg import outputs
from cartoonseg.data.fixtures import make_fixtures
from cartoonseg.data.synthesis import SynthesisConfig, synthesize_dataset
from cartoonseg.evaluation import EvalParams, evaluate_all
from cartoonseg.evaluation.predict import predict_coco
from cartoonseg.segmenter import Segmenter
from cartoonseg.training.detector import DETECTOR_RECIPES, detector_recipe, train_detector
from cartoonseg.training.engine import check_training_folder

KEYS = ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50", "boundary_AP", "boundary_AP50")


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def make_data(out: Path, args: argparse.Namespace) -> dict:
    """Fixtures and the two synthetic sets (resumable); returns paths and timings."""
    t0 = time.time()
    fix = out / "fixtures"
    if not (fix / "fg" / "meta.jsonl").is_file():
        make_fixtures(fix, args.num_fg, args.num_bg, seed=args.seed)
    t1 = time.time()
    data = out / "data"
    cfg = SynthesisConfig(size=args.size, split="train")
    train = synthesize_dataset(fix / "fg", fix / "bg", data, args.train_images, cfg, seed=args.seed,
                               workers=args.synth_workers, progress=False)
    val_cfg = SynthesisConfig(size=args.size, split="val")
    val = synthesize_dataset(fix / "fg", fix / "bg", data, args.val_images, val_cfg, seed=args.seed + 1,
                             workers=args.synth_workers, image_id_start=10_000_000, progress=False)
    return {
        "train_ann": train["annotations"],
        "val_ann": val["annotations"],
        "val_images": str(data / "val"),
        "fixtures_s": round(t1 - t0, 1),
        "synthesis_s": round(time.time() - t1, 1),
        "train_instances": train["instances"],
        "val_instances": val["instances"],
    }


def make_evaluator(val_ann: str, val_images: str, det_size: int, precision: str, batch_size: int = 1):
    gt = json.loads(Path(val_ann).read_text(encoding="utf-8"))

    def evaluate(detector) -> dict[str, float]:
        seg = Segmenter(detector, det_size=det_size, score_thr=0.05, max_instances=100, precision=precision)
        t = time.time()
        preds = predict_coco(seg, gt, val_images, batch_size=batch_size)["final"]
        predict_s = time.time() - t
        stats = evaluate_all(gt, preds, params=EvalParams())
        out = {k: stats[k] for k in KEYS}
        out.update(predict_s=round(predict_s, 2), evaluate_s=round(time.time() - t - predict_s, 2),
                   detections=len(preds), load1=_load())
        return out

    return evaluate


def read_curve(log: Path) -> tuple[list[dict], list[dict]]:
    evals, losses = [], []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "eval":
            evals.append(rec)
        elif "loss" in rec and "step" in rec:
            losses.append(rec)
    return evals, losses


def plot_curve(evals: list[dict], losses: list[dict], path: Path, title: str) -> None:
    """A two-panel PNG (AP vs training minutes, loss vs step) drawn with OpenCV (no plotting dependency)."""
    w, h, pad = 1000, 460, 60
    img = np.full((h, w, 3), 255, np.uint8)
    panels = [(pad, 60, w // 2 - 20, h - pad), (w // 2 + pad, 60, w - 20, h - pad)]
    colours = {"bbox_AP50": (200, 80, 0), "segm_AP50": (0, 140, 0), "boundary_AP50": (0, 0, 200),
               "bbox_AP": (240, 170, 120), "segm_AP": (120, 210, 120), "boundary_AP": (120, 120, 240)}
    font = cv2.FONT_HERSHEY_SIMPLEX

    def frame(box, xmax, ymax, xlabel, ylabel):
        x0, y0, x1, y1 = box
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
        for i in range(5):
            fy = y1 - (y1 - y0) * i / 4
            cv2.putText(img, f"{ymax * i / 4:.2g}", (x0 - 45, int(fy) + 4), font, 0.4, (0, 0, 0), 1)
            fx = x0 + (x1 - x0) * i / 4
            cv2.putText(img, f"{xmax * i / 4:.3g}", (int(fx) - 10, y1 + 18), font, 0.4, (0, 0, 0), 1)
        cv2.putText(img, xlabel, ((x0 + x1) // 2 - 40, y1 + 40), font, 0.5, (0, 0, 0), 1)
        cv2.putText(img, ylabel, (x0, y0 - 10), font, 0.5, (0, 0, 0), 1)

    def line(box, xs, ys, xmax, ymax, colour):
        x0, y0, x1, y1 = box
        pts = [(int(x0 + (x1 - x0) * x / max(xmax, 1e-9)), int(y1 - (y1 - y0) * min(y, ymax) / ymax))
               for x, y in zip(xs, ys)]
        for a, b in zip(pts, pts[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, colour, -1)

    tmax = max([e["train_s"] / 60 for e in evals] + [1e-3])
    frame(panels[0], tmax, 1.0, "training wall time (min)", "held-out AP / AP50")
    for i, (key, colour) in enumerate(colours.items()):
        line(panels[0], [e["train_s"] / 60 for e in evals], [e.get(key, 0.0) for e in evals], tmax, 1.0, colour)
        cv2.putText(img, key, (panels[0][0] + 10, panels[0][1] + 18 + 16 * i), font, 0.45, colour, 1)
    if losses:
        smax = max(r["step"] for r in losses)
        lmax = max(r["loss"] for r in losses) * 1.05
        frame(panels[1], smax, lmax, "step", "training loss")
        for i, (key, colour) in enumerate((("loss", (0, 0, 0)), ("loss_cls", (200, 80, 0)),
                                           ("loss_bbox", (0, 140, 0)), ("loss_mask", (0, 0, 200)))):
            line(panels[1], [r["step"] for r in losses], [r.get(key, 0.0) for r in losses], smax, lmax, colour)
            cv2.putText(img, key, (panels[1][2] - 110, panels[1][1] + 18 + 16 * i), font, 0.45, colour, 1)
    cv2.putText(img, title, (pad, 20), font, 0.5, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/convergence", help="work/output folder (data is reused)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--recipe", default=None, choices=sorted(DETECTOR_RECIPES),
                    help="training recipe (default: tiny-cpu on cpu, paper on cuda)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE", help="OMP_WAIT_POLICY if unset ('' = OpenMP default)")
    ap.add_argument("--budget-min", type=float, default=20.0, help="training wall-time budget in minutes (20)")
    ap.add_argument("--eval-every", type=int, default=75, help="evaluate every N steps (75)")
    ap.add_argument("--size", type=int, default=256, help="synthetic image size (256)")
    ap.add_argument("--train-images", type=int, default=600, help="synthetic training images (600)")
    ap.add_argument("--val-images", type=int, default=80, help="held-out images (80)")
    ap.add_argument("--num-fg", type=int, default=60, help="fixture characters (60)")
    ap.add_argument("--num-bg", type=int, default=12, help="fixture backgrounds (12)")
    ap.add_argument("--synth-workers", type=int, default=1, help="synthesis processes (1)")
    ap.add_argument("--seed", type=int, default=0, help="seed (0)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--img-size", type=int, default=None, help="override the recipe's training canvas")
    ap.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    ap.add_argument("--warmup-iters", type=int, default=None, help="override the recipe's warm-up")
    ap.add_argument("--mosaic", action="store_true", help="use mosaic + mixup (the stock strong augmentation)")
    ap.add_argument("--workers", type=int, default=None, help="override the recipe's DataLoader workers")
    ap.add_argument("--eval-batch", type=int, default=1, help="images per detector pass in the evaluations (1)")
    outputs.add_overwrite_argument(ap)
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, args.threads))
    recipe = args.recipe or ("paper" if args.device.startswith("cuda") else "tiny-cpu")
    out = Path(args.out)
    run_dir = out / f"run_{recipe}"
    try:  # the output policy of every command, before minutes of work: never replace or delete a user's file
        for name in ("convergence.json", "learning_curve.png"):
            outputs.check_file(out / name, overwrite=args.overwrite)
        check_training_folder(run_dir)  # its log.jsonl is deleted below: only a training run's
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    load_start = _load()
    data = make_data(out, args)
    overrides = {k: v for k, v in {
        "epochs": args.epochs, "img_size": args.img_size, "batch_size": args.batch_size, "lr": args.lr,
        "warmup_iters": args.warmup_iters, "num_workers": args.workers,
    }.items() if v is not None}
    if args.mosaic:
        overrides.update(mosaic=True, mixup=True)
    cfg = detector_recipe(recipe, train_ann=data["train_ann"], out_dir=str(run_dir), device=args.device,
                          resume=False, eval_interval=args.eval_every, time_limit_s=args.budget_min * 60,
                          log_interval=10, **overrides)
    if (run_dir / "log.jsonl").exists():
        (run_dir / "log.jsonl").unlink()  # a fresh curve (resume=False trains from scratch)
    precision = "fp16" if args.device.startswith("cuda") else "fp32"
    evaluator = make_evaluator(data["val_ann"], data["val_images"], cfg.img_size, precision, args.eval_batch)
    t = time.time()
    summary = train_detector(cfg, evaluator=evaluator)
    wall = time.time() - t
    evals, losses = read_curve(run_dir / "log.jsonl")
    final = evals[-1] if evals else {}
    result = {
        "recipe": recipe,
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("train_ann", "out_dir")},
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load1_start": load_start,
        "load1_end": _load(),
        "data": data,
        "steps": summary["global_step"],
        "finished_schedule": summary["finished"],
        "train_wall_s_incl_eval": round(wall, 1),
        "final": {k: final.get(k) for k in (*KEYS, "step", "train_s", "load1")},
        "curve": evals,
    }
    outputs.write_text(out / "convergence.json", json.dumps(result, indent=1), overwrite=args.overwrite)
    title = (f"{recipe} on {args.device}, {torch.get_num_threads()} threads, load1 {load_start}->{result['load1_end']}, "
             f"{summary['global_step']} steps")
    outputs.write(out / "learning_curve.png", lambda tmp: plot_curve(evals, losses, tmp, title), overwrite=args.overwrite)
    print(f"{'step':>6} {'train min':>9} {'cpu min':>8} {'load1':>6} " + " ".join(f"{k:>13}" for k in KEYS))
    for e in evals:
        print(f"{e['step']:>6} {e['train_s'] / 60:>9.2f} {e.get('train_cpu_s', 0) / 60:>8.2f} {e.get('load1', -1):>6} "
              + " ".join(f"{e.get(k, float('nan')):>13.3f}" for k in KEYS))
    print(json.dumps({"final": result["final"], "out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
