"""Kill-and-resume of dataset synthesis (issue 11, "Interruption"): ``python -m train.synthesize`` runs as a real
subprocess, is SIGKILLed mid-run (once with two worker processes, killing the whole process group, once with one),
and the same command is run again. The dataset must equal an uninterrupted run byte for byte (JPEGs and COCO
JSON), with no missing or duplicated image / annotation ids, and at no moment may a half-written image sit under
its final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cartoonseg.data.fixtures import make_fixtures
from cartoonseg.data.synthesis import SynthesisConfig, synthesize_dataset

REPO = Path(__file__).resolve().parents[1]
SIZE, NUM, SEED = 160, 14, 7
pytestmark = [
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    make_fixtures(root, num_fg=6, num_bg=3, seed=4, fg_height=(80, 140), bg_size=(256, 224))
    return root


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _cmd(raw: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "train.synthesize", "--fg", str(raw / "fg"), "--bg", str(raw / "bg"), "--out",
            str(out), "--num", str(NUM), "--size", str(SIZE), "--seed", str(SEED), "--workers", str(workers),
            "--no-progress"]


def _done(out: Path) -> int:
    state = out / ".synth_state" / "train"
    return len([p for p in state.glob("0*.json")]) if state.is_dir() else 0


def _kill_after(cmd: list[str], out: Path, min_done: int, timeout: float = 120.0) -> int:
    """Run ``cmd`` in its own process group and SIGKILL the whole group once ``min_done`` images are finished."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None and _done(out) < min_done:
            time.sleep(0.005)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")[-2000:]
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"run ended before it could be killed (rc {proc.returncode}): {err}"
    return _done(out)


def _images(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "train").glob("*.jpg"))}


def _no_torn_image(out: Path, ref_images: dict[str, bytes]) -> None:
    """Every file under a final image name is complete: it decodes and equals the uninterrupted run's file."""
    for name, data in _images(out).items():
        pic = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert pic is not None and pic.shape == (SIZE, SIZE, 3), name
        assert data == ref_images[name], f"{name} differs from the uninterrupted run"


def test_synthesis_killed_twice_resumes_to_the_uninterrupted_dataset(raw, tmp_path):
    ref_out = tmp_path / "ref"
    synthesize_dataset(raw / "fg", raw / "bg", ref_out, NUM, SynthesisConfig(size=SIZE), seed=SEED, workers=1,
                       progress=False)
    ref_json = json.loads((ref_out / "annotations" / "det_train.json").read_text())
    ref_images = _images(ref_out)
    assert len(ref_images) == NUM

    out = tmp_path / "killed"
    first = _kill_after(_cmd(raw, out, workers=2), out, 3)  # two worker processes, the whole group killed
    assert 3 <= first < NUM
    assert not (out / "annotations" / "det_train.json").exists()  # written only once every image is done
    _no_torn_image(out, ref_images)
    second = _kill_after(_cmd(raw, out, workers=1), out, first + 3)
    assert first < second < NUM
    _no_torn_image(out, ref_images)

    done = subprocess.run(_cmd(raw, out, workers=1), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["images"] == NUM and result["new"] == NUM - second  # finished images were not redone

    data = json.loads((out / "annotations" / "det_train.json").read_text())
    assert data == ref_json
    assert _images(out) == ref_images
    image_ids = [im["id"] for im in data["images"]]
    assert image_ids == list(range(NUM))  # no image missing or duplicated
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    assert {a["image_id"] for a in data["annotations"]} <= set(image_ids)
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert leftovers == []


def test_ctrl_c_is_one_line_and_status_130_also_with_workers(raw, tmp_path):
    """Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) ends the run with one
    `interrupted` line and status 130: no traceback from the main process or from each worker; the rerun resumes."""
    out = tmp_path / "syn"
    cmd = _cmd(raw, out, workers=2)
    cmd[cmd.index("--num") + 1] = "100000"  # far from finished when the signal comes
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _done(out) < 2:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err


def test_run_parser_reports_ctrl_c_and_a_closed_stdout(capsys):
    import argparse

    from cartoonseg._cli import EXIT_INTERRUPTED, EXIT_PIPE, run_parser

    def parser(exc: BaseException) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()

        def func(args):
            raise exc

        p.set_defaults(func=func)
        return p

    assert run_parser(parser(KeyboardInterrupt()), []) == EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert run_parser(parser(BrokenPipeError()), []) == EXIT_PIPE == 141  # `| head`: quiet, as tools killed by SIGPIPE
    assert capsys.readouterr().err == ""


def test_an_in_process_run_leaves_ctrl_c_alone(raw, tmp_path):
    """workers=1 synthesises in the caller's process: its Ctrl-C handler stays (the pool workers' SIG_IGN is theirs
    only; in the caller it was inherited by every later subprocess, which then ignored Ctrl-C)."""
    before = signal.getsignal(signal.SIGINT)
    synthesize_dataset(raw / "fg", raw / "bg", tmp_path / "syn", num=1, cfg=SynthesisConfig(size=SIZE), seed=SEED,
                       workers=1, progress=False)
    assert signal.getsignal(signal.SIGINT) is before
