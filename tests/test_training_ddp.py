"""A 2-process ``torchrun`` (gloo, CPU) run of stage-1 training: both ranks finish with identical weights,
and the ``train.train_detector`` command works under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cartoonseg.training.toy import make_toy_coco

REPO = Path(__file__).resolve().parents[1]

DRIVER = """
import json, os, sys
import torch
torch.set_num_threads(1)
from cartoonseg.training.detector import DetectorTrainConfig, train_detector
cfg = DetectorTrainConfig(train_ann=sys.argv[1], out_dir=sys.argv[2], preset="tiny", img_size=64, epochs=2,
                          batch_size=2, lr=1e-3, warmup_iters=0, num_workers=0, log_interval=1, device="cpu",
                          max_iters=int(sys.argv[3]))
summary = train_detector(cfg)
with open(os.path.join(sys.argv[2], f"rank{summary['rank']}.json"), "w") as fh:
    json.dump(summary, fh, default=str)
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _torchrun(args, cwd, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    ann = make_toy_coco(tmp_path / "data", num_images=8, size=64, seed=0)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    proc = _torchrun([str(driver), str(ann), str(out), "3"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] == 3
    assert r0["state_digest"] == r1["state_digest"]  # DDP kept the replicas in sync
    # rank 0 alone logs and checkpoints
    log = (out / "log.jsonl").read_text().splitlines()
    assert len(log) == 3
    assert (out / "detector_last.safetensors").is_file()


def test_train_detector_command_under_torchrun(tmp_path):
    make_toy_coco(tmp_path / "data", num_images=8, size=64, seed=1, name="train")
    out = tmp_path / "out"
    args = [
        "-m",
        "train.train_detector",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--warmup-iters",
        "1",
        "--log-interval",
        "1",
    ]
    proc = _torchrun(args, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads(line)["summary"] for line in proc.stdout.splitlines() if line.startswith('{"summary"')]
    assert len(summaries) == 1  # printed by rank 0 only
    s = summaries[0]
    assert s["finished"] and s["world_size"] == 2 and s["global_step"] == 2  # 8 images / (2 ranks x 2)
    assert Path(s["export"]).is_file()
