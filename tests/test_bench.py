"""bench/run.py runs end to end in quick mode (tiny presets) and writes valid JSON; no timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cartoonseg.device import capabilities

ROOT = Path(__file__).resolve().parents[1]


def test_isa_children_report_their_capabilities(tmp_path):
    """--isa runs one child per instruction set (avx2 = the oneDNN/ATen caps), each reporting its capabilities and
    its calibration; bf16 is listed as unsupported under the AVX2 caps whatever this CPU has."""
    out = tmp_path / "isa.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--precision", "fp32,bf16", "--sections=",
           "--isa", "native,avx2", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["isa_runs"]
    assert set(runs) == {"native", "avx2"}
    assert runs["avx2"]["onednn_max_isa"] == "AVX2" and runs["avx2"]["cpu_isa"] == "AVX2"
    assert runs["avx2"]["unsupported_precisions"] == {"bf16": runs["avx2"]["capabilities"]}
    assert runs["native"]["capabilities"] == capabilities("cpu").description
    assert all(run["calibration"]["fp32"]["gflops_best"] > 0 for run in runs.values())


def test_contention_section_times_threads_and_wait_policies(tmp_path):
    """1 and 2 threads, with and without a busy core, default and passive OpenMP waits (child processes)."""
    out = tmp_path / "contention.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--precision", "fp32", "--sections",
           "contention", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["contention"]
    assert {(r["busy_core"], r["omp_wait_policy"], r["threads"]) for r in rows} == {
        (b, w, t) for b in (False, True) for w in ("default", "PASSIVE") for t in (1, 2)}
    assert all(r["detector_s"]["best"] > 0 for r in rows), rows


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--instances", "1,2", "--sections",
           "segment,large", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    # every requested precision is either timed or listed as unsupported by this CPU (bf16 on AVX2-only CPUs)
    timed = set(data["calibration"])
    assert timed | set(data["unsupported_precisions"]) == {"fp32", "bf16"} and "fp32" in timed
    assert timed == {p for p in ("fp32", "bf16") if p in capabilities("cpu").supported}
    for cal in data["calibration"].values():
        assert cal["gflops_best"] == max(cal["nchw"]["gflops_best"], cal["channels_last"]["gflops_best"])
    assert data["capabilities"] == capabilities("cpu").description
    rows = data["segment"]
    assert {(r["mode"], r["precision"], r["instances"]) for r in rows} == {
        (m, p, n) for m in ("reference", "fast") for p in timed for n in (1, 2)}
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
    assert apps["tagger_bf16"]["result"]["requested_precision"] == "bf16"
    assert apps["tagger_bf16"]["result"]["precision"] == ("bf16" if "bf16" in capabilities("cpu").supported else "fp32")
    assert {r["method"] for r in apps["inpaint_patchmatch"]["result"]["rows"]} == {"patchmatch", "telea"}
    assert apps["puppet"]["result"]["characters"] == 2 and apps["puppet"]["result"]["frame_ms_median"] > 0


def test_preview_scripts_never_replace_a_file_they_did_not_write(tmp_path):
    """The README's preview makers wrote straight over --out / --thumbnail; now a file cartoonseg did not write is
    refused before the work (and replaced with --overwrite), while their own earlier output is refreshed."""
    import importlib.util

    import pytest

    from cartoonseg.outputs import OutputError

    def script(name):
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    kenburns, puppet = script("make_kenburns_preview"), script("make_puppet_preview")
    user = tmp_path / "user.webp"
    user.write_bytes(b"the user's clip")
    with pytest.raises(OutputError, match="cartoonseg did not write it"):
        kenburns.main(["--size", "48", "--frames", "2", "--out", str(user)])
    thumb = tmp_path / "user.jpg"
    thumb.write_bytes(b"the user's picture")
    with pytest.raises(OutputError, match="cartoonseg did not write it"):
        puppet.main(["--width", "64", "--frames", "2", "--out", str(tmp_path / "p.webp"), "--thumbnail", str(thumb)])
    assert user.read_bytes() == b"the user's clip" and thumb.read_bytes() == b"the user's picture"
    assert not (tmp_path / "p.webp").exists()
    assert kenburns.main(["--size", "48", "--frames", "2", "--out", str(tmp_path / "k.webp")]) == 0
    assert kenburns.main(["--size", "48", "--frames", "2", "--out", str(tmp_path / "k.webp")]) == 0  # its own: rerun
    assert kenburns.main(["--size", "48", "--frames", "2", "--out", str(user), "--overwrite"]) == 0
    assert user.read_bytes()[:4] == b"RIFF"


def test_bench_json_never_replaces_a_file_it_did_not_write(tmp_path):
    """Every bench script wrote ``--json FILE`` with ``Path.write_text`` after the run: ``--json README.md`` replaced
    the user's file, a folder failed with a traceback at the end. Now the file is checked before the benchmark (one
    ``error:`` line, status 2, the file untouched) and written under the output policy: a new file, then its own
    earlier result, or a user's file with --overwrite."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def tagger(*args):
        cmd = [sys.executable, str(ROOT / "bench" / "bench_tagger.py"), "--quick", "--repeat", "1", *map(str, args)]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)

    user = tmp_path / "notes.txt"
    user.write_text("the user's notes")
    for target in (user, tmp_path):  # a user's file, a folder
        proc = tagger("--json", target)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == \
            proc.stderr.strip().splitlines()[-1:]
        assert proc.stdout == ""  # refused before the benchmark ran
    assert user.read_text() == "the user's notes"
    fresh = tmp_path / "tagger.json"
    for _ in range(2):  # a new file, then its own earlier result
        proc = tagger("--json", fresh)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(fresh.read_text())["preset"] == "tiny"
    proc = tagger("--json", user, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(user.read_text())["preset"] == "tiny"
    # the training benchmark: its results and the log it deletes are checked before the minutes of work
    (tmp_path / "conv").mkdir()
    (tmp_path / "conv" / "convergence.json").write_text("the user's file")
    cmd = [sys.executable, str(ROOT / "bench" / "train_convergence.py"), "--out", str(tmp_path / "conv")]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: refusing to replace"), proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["convergence.json"]
    (tmp_path / "conv" / "convergence.json").unlink()
    (tmp_path / "conv" / "run_tiny-cpu").mkdir()
    (tmp_path / "conv" / "run_tiny-cpu" / "log.jsonl").write_text("the user's log")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "not a cartoonseg training run" in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "conv" / "run_tiny-cpu" / "log.jsonl").read_text() == "the user's log"
