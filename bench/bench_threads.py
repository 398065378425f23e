"""Benchmark: torch thread count and OpenMP wait policy on a (possibly shared) CPU.

    python bench/bench_threads.py [--threads 1,2] [--repeats 5] [--json out.json]

For each OpenMP wait policy (the default, which spin-waits, and ``OMP_WAIT_POLICY=PASSIVE``) and each thread
count, a fresh process times the tiny detector: one inference forward at 256² and one training step
(forward + loss + backward, batch 4 at 192²). Each line also records the 1-minute load average. On a machine
whose cores are busy with other processes, spinning threads wait for descheduled siblings: 2 threads can be many
times slower than 1 unless the policy is PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _json_out import JSON_HELP, add_overwrite_argument, check_json, write_json  # bench/: --json FILE

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import torch
threads, repeats = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
from cartoonseg.build import build_detector
from cartoonseg.config import detector_config
from cartoonseg.training.rtmdet_loss import rtmdet_ins_loss
det = build_detector(detector_config("tiny", num_classes=1))
x = torch.randn(1, 3, 256, 256)
det.eval()
with torch.no_grad():
    det(x)
    t = time.perf_counter()
    for _ in range(repeats):
        det(x)
    infer = (time.perf_counter() - t) / repeats
det.train()
xb = torch.randn(4, 3, 192, 192)
masks = torch.zeros(2, 192, 192, dtype=torch.uint8)
masks[0, 20:90, 30:80] = 1
masks[1, 100:180, 90:170] = 1
tgt = {"boxes": torch.tensor([[30.0, 20.0, 80.0, 90.0], [90.0, 100.0, 170.0, 180.0]]),
       "labels": torch.zeros(2, dtype=torch.long), "masks": masks}
def step():
    out = rtmdet_ins_loss(det, det(xb), [tgt] * 4)
    out["loss"].backward()
step()
t = time.perf_counter()
for _ in range(repeats):
    step()
train = (time.perf_counter() - t) / repeats
print(json.dumps({"infer_256_s": round(infer, 4), "train_step_b4_192_s": round(train, 4)}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts (1,2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (5)")
    ap.add_argument("--json", default=None, help=JSON_HELP)
    add_overwrite_argument(ap)
    args = ap.parse_args(argv)
    check_json(args)  # a file that may not be written fails now, not after the run
    rows = []
    for policy in ("", "PASSIVE"):
        for threads in (int(t) for t in args.threads.split(",")):
            env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
            env.pop("OMP_WAIT_POLICY", None)
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            load = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.repeats)], env=env,
                                  capture_output=True, text=True, check=True)
            row = {"omp_wait_policy": policy or "default", "threads": threads, "load1": round(load, 2),
                   **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(args, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
