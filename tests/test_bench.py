"""bench/run.py runs end to end in quick mode (tiny presets) and writes valid JSON; no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--instances", "1,2", "--sections",
           "segment,large", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["calibration"]) == {"fp32", "bf16"}
    rows = data["segment"]
    assert {(r["mode"], r["precision"], r["instances"]) for r in rows} == {
        (m, p, n) for m in ("reference", "fast") for p in ("fp32", "bf16") for n in (1, 2)}
    for r in rows:
        assert r["gflop"] > 0 and r["achieved_gflops"] > 0 and r["detector_s"]["best"] > 0
        assert r["refine_total_s"]["best"] >= 0 and r["paste_back_s"]["best"] >= 0
    assert [r["size"] for r in data["large"]] == [512]
    assert data["large"][0]["instances"] == 3 and data["large"][0]["peak_rss_mb"] > 0
    cmp = subprocess.run(cmd[:-2] + ["--sections", "segment", "--precision", "fp32", "--instances", "1",
                                     "--compare", str(out)], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    assert "speed-up" in cmp.stdout


def test_quick_app_benchmarks_run_and_report(tmp_path):
    """Tagger (fp32, bf16), depth, PatchMatch, Ken Burns and puppet benches run as subprocesses in quick mode and each
    leaves its JSON result; a failing app bench would show up as rc != 0."""
    out = tmp_path / "apps.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--sections", "apps", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    apps = json.loads(out.read_text())["apps"]
    assert set(apps) == {"tagger", "tagger_bf16", "depth", "inpaint_patchmatch", "kenburns", "puppet"}
    for name, res in apps.items():
        assert res["rc"] == 0 and "result" in res, (name, res.get("stderr_tail"))
    assert apps["depth"]["result"]["rows"][0]["output_shape"] == [160, 160]
    assert apps["tagger_bf16"]["result"]["precision"] == "bf16"
    assert {r["method"] for r in apps["inpaint_patchmatch"]["result"]["rows"]} == {"patchmatch", "telea"}
    assert apps["puppet"]["result"]["characters"] == 2 and apps["puppet"]["result"]["frame_ms_median"] > 0
