"""Kill-and-resume of training (issue 11, "Interruption"): real ``python -m train.train_*`` subprocesses are
killed with SIGKILL after a checkpoint was written, restarted with the same command, and must end exactly where an
uninterrupted run ends (same step count, same weights / EMA / optimizer state, every step logged once). Checkpoint
writes are atomic: a process killed at random moments while saving always leaves a loadable, consistent
checkpoint, and a save killed between its two renames is finished on the next load."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cartoonseg.training.coco import find_annotation
from cartoonseg.training.detector import DetectorTrainConfig, train_detector
from cartoonseg.training.engine import state_digest
from cartoonseg.training.refiner import RefinerTrainConfig, load_gt_encoder, train_refiner
from cartoonseg.training.state import checkpoint_exists, load_training_state, save_training_state
from cartoonseg.training.toy import make_toy_coco

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the subprocesses run with OMP_NUM_THREADS=1: same kernels, bit-identical results
    yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_coco(root, num_images=8, size=64, seed=0, box_only_every=5)
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _ckpt_step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_when(cmd: list[str], ckpt_json: Path, min_step: int, timeout: float = 120.0) -> int:
    """Start ``cmd``; SIGKILL it as soon as ``ckpt_json`` records step >= ``min_step`` (``min_step`` 0: as soon
    as the file exists, whatever it holds). Returns the step seen."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    step = -1
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            step = _ckpt_step(ckpt_json) if min_step > 0 else (0 if ckpt_json.exists() else -1)
            if step >= min_step:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")[-2000:]
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"run ended before it could be killed (rc {proc.returncode}): {err}"
    return step


def _run_to_end(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["summary"]


def _logged_steps(out: Path) -> list[int]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "event" not in r]


# ---------------------------------------------------------------------------------------------- detector
def test_detector_killed_twice_resumes_to_the_uninterrupted_result(toy, tmp_path):
    opts = {"preset": "tiny", "img_size": 64, "epochs": 2, "batch_size": 2, "lr": 2e-3, "warmup_iters": 2,
            "num_workers": 0, "log_interval": 1, "device": "cpu", "seed": 0, "ckpt_interval": 1}
    ref = train_detector(DetectorTrainConfig(train_ann=str(find_annotation(toy)), out_dir=str(tmp_path / "ref"),
                                             **opts))
    assert ref["finished"] and ref["global_step"] == 8

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "train.train_detector", "--data", str(toy), "--out", str(out), "--preset", "tiny",
           "--img-size", "64", "--epochs", "2", "--batch-size", "2", "--lr", "2e-3", "--warmup-iters", "2",
           "--workers", "0", "--log-interval", "1", "--device", "cpu", "--seed", "0", "--ckpt-interval", "1"]
    ckpt = out / "detector_last.json"
    first = _kill_when(cmd, ckpt, 1)  # killed in epoch 0
    second = _kill_when(cmd, ckpt, 5)  # resumed, then killed again in epoch 1
    assert 1 <= first < second < 8
    # leftovers of a save killed while writing its temporary files must be ignored
    (out / "detector_last.safetensors.partial").write_bytes(b"\x00" * 100)
    (out / "detector_last.json.partial").write_text('{"step": 9, "trunc')
    final = _run_to_end(cmd)

    assert final["finished"] and final["global_step"] == ref["global_step"] == 8
    assert final["state_digest"] == ref["state_digest"]
    a, b = load_training_state(tmp_path / "ref" / "detector_last"), load_training_state(out / "detector_last")
    assert a["progress"] == b["progress"]
    assert state_digest(a["ema"]) == state_digest(b["ema"])
    for idx, fields in a["optimizer"]["state"].items():
        for name, value in fields.items():
            other = b["optimizer"]["state"][idx][name]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (idx, name)
    assert (out / "detector.safetensors").read_bytes() == (tmp_path / "ref" / "detector.safetensors").read_bytes()
    # nothing lost or duplicated in the log either: steps 1..8 once each, two resume events
    assert _logged_steps(out) == list(range(1, 9))
    events = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"event"' in x]
    assert len(events) == 2 and first <= events[0]["step"] < second <= events[1]["step"] < 8


# ---------------------------------------------------------------------------------------------- refiner
def test_refiner_killed_in_each_phase_resumes_to_the_uninterrupted_result(toy, tmp_path):
    opts = {"preset": "tiny", "size": 32, "epochs": 2, "gt_epochs": 2, "batch_size": 4, "num_workers": 0,
            "log_interval": 1, "device": "cpu", "seed": 0, "ckpt_interval": 1}
    ref = train_refiner(RefinerTrainConfig(train_ann=str(find_annotation(toy)), out_dir=str(tmp_path / "ref"),
                                           **opts))
    assert ref["finished"] and ref["global_step"] == 4 and ref["gt_encoder_steps"] == 4

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "train.train_refiner", "--data", str(toy), "--out", str(out), "--preset", "tiny",
           "--size", "32", "--epochs", "2", "--gt-epochs", "2", "--batch-size", "4", "--workers", "0",
           "--log-interval", "1", "--device", "cpu", "--seed", "0", "--ckpt-interval", "1"]
    _kill_when(cmd, out / "gt_encoder_last.json", 1)  # phase 1 (GT encoder)
    _kill_when(cmd, out / "gt_encoder.safetensors", 0)  # between the phases (phase 2 init must not depend on it)
    _kill_when(cmd, out / "refiner_last.json", 2)  # phase 2 (refiner)
    final = _run_to_end(cmd)

    assert final["finished"] and final["global_step"] == 4
    assert final["state_digest"] == ref["state_digest"]
    enc_a = load_gt_encoder(tmp_path / "ref" / "gt_encoder.safetensors")
    enc_b = load_gt_encoder(out / "gt_encoder.safetensors")
    assert state_digest(enc_a.state_dict()) == state_digest(enc_b.state_dict())
    assert (out / "refiner.safetensors").read_bytes() == (tmp_path / "ref" / "refiner.safetensors").read_bytes()


# ---------------------------------------------------------------------------------------------- atomic saves
_SAVER = r"""
import sys, torch
from cartoonseg.training.state import save_training_state
torch.set_num_threads(1)
model = torch.nn.Linear(1024, 1024)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.ones(1, 1024)).sum().backward()
opt.step()
step = int(sys.argv[2])
print("ready", flush=True)
while True:
    step += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    save_training_state(sys.argv[1], model_state=model.state_dict(), optimizer=opt,
                        progress={"epoch": 0, "iter": step, "global_step": step}, config={})
"""


def _check_consistent(prefix: Path) -> int:
    loaded = load_training_state(prefix)
    step = int(loaded["progress"]["global_step"])
    for k, v in loaded["model"].items():
        assert bool((v == float(step)).all()), f"{k} holds another step's values than the checkpoint's {step}"
    return step


def _wait_for_a_save_after(prefix: Path, step: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Block until the committed JSON of ``prefix`` names a step after ``step`` (the saver finished a save)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if _ckpt_step(prefix.with_suffix(".json")) > step:
            return
        time.sleep(0.01)
    raise AssertionError(f"no save after step {step} within {timeout} s")


def test_checkpoint_killed_while_saving_is_always_loadable(tmp_path):
    """SIGKILL a process that saves ~12 MB checkpoints in a loop at random moments: every time, the checkpoint on
    disk loads and its tensors belong to the step its JSON names, and the next process continues from it.

    Each saver is killed at a random moment after its first completed save: a fixed delay would assume how fast the
    machine saves (a busy disk's fsync can take seconds), and a kill before any save only repeats the previous run."""
    prefix = tmp_path / "ck" / "loop_last"
    rng = random.Random(0)
    step, steps = 0, []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(prefix), str(step)], cwd=REPO, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()[-2000:]
            _wait_for_a_save_after(prefix, step, proc)
            time.sleep(rng.random() * 0.7)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert checkpoint_exists(prefix)
        new = _check_consistent(prefix)
        assert new > step  # at least one save per run finished, and the newest complete one is what loads
        step = new
        steps.append(step)
    assert steps == sorted(steps)


def _stepper(model, opt, prefix):
    """``save(step)``: the model's weights all set to ``step``, then a checkpoint of that step at ``prefix``."""

    def save(step):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        save_training_state(prefix, model_state=model.state_dict(), optimizer=opt,
                            progress={"epoch": 0, "iter": step, "global_step": step}, config={})

    return save


def test_save_killed_between_its_two_renames_is_completed_on_load(tmp_path, monkeypatch):
    import cartoonseg.training.state as state_mod

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    prefix = tmp_path / "x_last"

    save = _stepper(model, opt, prefix)

    save(1)
    real_replace = os.replace
    calls = []

    class Killed(BaseException):
        pass

    def dying_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the process "dies" after the tensors were renamed, before the JSON
            raise Killed()
        real_replace(src, dst)

    monkeypatch.setattr(state_mod.os, "replace", dying_replace)
    with pytest.raises(Killed):
        save(2)
    monkeypatch.setattr(state_mod.os, "replace", real_replace)
    # on disk: step-2 tensors, step-1 JSON, complete step-2 JSON under its temporary name
    assert _ckpt_step(prefix.with_suffix(".json")) == 1
    assert _ckpt_step(prefix.with_name("x_last.json.partial")) == 2
    assert _check_consistent(prefix) == 2  # the interrupted save is finished, not mixed with step 1
    assert not prefix.with_name("x_last.json.partial").exists()

    # the same tear with a torn temporary JSON cannot be completed: refused, never loaded as a mixed pair
    monkeypatch.setattr(state_mod.os, "replace", dying_replace)
    calls.clear()
    with pytest.raises(Killed):
        save(3)
    monkeypatch.setattr(state_mod.os, "replace", real_replace)
    prefix.with_name("x_last.json.partial").write_text('{"format": "cartoonseg-train-state", "step": 3, "pro')
    with pytest.raises(RuntimeError, match="step 3 .* step 2"):
        load_training_state(prefix)


@pytest.mark.parametrize("drop", [("optimizer",), ("progress", "rng"), ("optimizer.scalars",), ("rng.numpy",),
                                  ("progress.global_step", "scaler")])
def test_a_checkpoint_json_with_missing_fields_is_one_checkpoint_error_naming_them(tmp_path, drop):
    """A training-state JSON of the right format but cut down or hand-edited (a field gone) raised a bare KeyError
    ('optimizer') from load_training_state: a traceback under the training CLIs, no file named. Now it is the
    one-line CheckpointError of every other unreadable checkpoint, naming the JSON file and the missing fields."""
    from cartoonseg.checkpoint import CheckpointError

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    prefix = tmp_path / "x_last"
    save_training_state(prefix, model_state=model.state_dict(), optimizer=opt,
                        progress={"epoch": 0, "iter": 1, "global_step": 1}, config={})
    js = prefix.with_suffix(".json")
    meta = json.loads(js.read_text())
    for field in drop:
        holder, _, key = field.rpartition(".")
        del (meta[holder] if holder else meta)[key]
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_training_state(prefix)
    message = str(info.value)
    assert str(js) in message and "\n" not in message
    assert message.split(" lacks ")[1].split(";")[0] == ", ".join(drop)


def _failing_save_file(code: int):
    """A ``safetensors.torch.save_file`` that writes half a file, then fails as the Rust writer does: a
    ``SafetensorError`` (no ``OSError``) whose message alone carries the OS error."""
    from safetensors import SafetensorError

    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError(f"Error while serializing: IoError(Os {{ code: {code}, kind: Other, message: "
                              f"\"{os.strerror(code)}\" }}) (os error {code})")

    return save_file


def test_a_failed_checkpoint_save_is_one_error_naming_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                                           capsys):
    """safetensors reports a full disk or a denied write as its own SafetensorError, which the training CLIs'
    one-line policy did not know: a traceback, and the half-written temporary stayed on the full disk. Now an
    OSError naming the checkpoint file and what was kept, the temporaries removed, the last checkpoint loading
    as before (resume-safety); the same for the GT encoder file and for the checkpoint's JSON half, and
    ``train.train_detector`` ends with one ``error:`` line."""
    import safetensors.torch

    import cartoonseg.training.state as state_mod
    from cartoonseg.models.isnet import ISNetGTEncoder
    from cartoonseg.training.refiner import save_gt_encoder
    from train import train_detector as det_cli

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters())
    prefix = tmp_path / "x_last"
    st_path = prefix.with_suffix(".safetensors")

    save = _stepper(model, opt, prefix)

    save(1)
    real_save_file = safetensors.torch.save_file
    for code, words in ((28, "no space left on the device"), (13, os.strerror(13))):
        monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(code))
        with pytest.raises(OSError) as err:
            save(2)
        assert err.value.errno == code and f"cannot write {st_path}: {words}" in str(err.value)
        assert f"{st_path} keeps its earlier content" in str(err.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x_last.json", "x_last.safetensors"]  # no temporary
        assert _check_consistent(prefix) == 1  # the last complete checkpoint, unchanged
    monkeypatch.setattr(safetensors.torch, "save_file", real_save_file)

    def full_disk(path, data):
        Path(path).write_bytes(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod, "_write_synced", full_disk)  # the JSON half fails after the tensors were written
    with pytest.raises(OSError, match=re.escape(f"cannot write {prefix.with_suffix('.json')}: no space left")):
        save(2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_last.json", "x_last.safetensors"]
    assert _check_consistent(prefix) == 1

    enc_path = tmp_path / "enc" / "gt_encoder.safetensors"
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save_file(13))
    with pytest.raises(OSError, match=re.escape(f"cannot write {enc_path}: {os.strerror(13)}")):
        save_gt_encoder(ISNetGTEncoder(1, 1, width=0.25), 0.25, enc_path)
    assert list(enc_path.parent.iterdir()) == []

    make_toy_coco(tmp_path / "data", num_images=4, size=64, seed=0, name="train")
    out = tmp_path / "run"
    assert det_cli.main(["--data", str(tmp_path / "data"), "--out", str(out), "--preset", "tiny", "--img-size", "64",
                         "--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu",
                         "--max-iters", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: [Errno 13] cannot write {out / 'detector_last.safetensors'}: "), err
    assert err.count("\n") == 1, err
    assert not [p.name for p in out.iterdir() if "partial" in p.name]
