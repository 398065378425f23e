"""A 2-process ``torchrun`` (gloo, CPU) run of stage-1 training: both ranks finish with identical weights,
and the ``train.train_detector`` command works under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cartoonseg.training.toy import make_toy_coco
from _two_ranks import free_port, output_lines, run_two_ranks

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


CHECK_DRIVER = """
import os, sys, threading
from pathlib import Path
import cv2
decoded = []
_imread = cv2.imread
def counting_imread(path, *args):
    decoded.append(str(path))
    return _imread(path, *args)
cv2.imread = counting_imread
from train.train_detector import main
rc = main(sys.argv[2:])
Path(sys.argv[1], "rank" + os.environ["RANK"] + ".json").write_text(json.dumps({"rc": rc, "decoded": decoded}))
""".replace("import os, sys, threading", "import json, os, sys")


def test_full_image_check_decodes_each_image_once_per_job_and_every_rank_names_the_bad_file(tmp_path):
    """``--check-images full`` decoded every image on every rank of a torchrun job (8x the work on an 8-GPU node).
    Now each rank decodes its share (every second image of 8 here) and the findings are gathered: the damaged PNG,
    in rank 1's share, ends both ranks with the same one-line error naming it, rank 0 included, which never
    decoded it. A real 2-process gloo group on CPU (torchrun's environment, no torchrun: its agent would kill
    rank 1 as soon as rank 0 exits and hide a rank left waiting)."""

    from cartoonseg.training.coco import load_coco

    ann = make_toy_coco(tmp_path / "data", num_images=8, size=64, seed=0, name="train")
    images = load_coco(ann).images
    bad = images[1].path  # index 1: rank 1's share
    data = bytearray(bad.read_bytes())
    start = data.index(b"IDAT") + 8  # the compressed pixels; header and end intact, the fast check passes
    data[start : start + 24] = bytes(b ^ 0x5A for b in data[start : start + 24])
    bad.write_bytes(bytes(data))
    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(CHECK_DRIVER)
    args = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--preset", "tiny", "--img-size", "64",
            "--epochs", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--check-images", "full"]
    procs, errs = run_two_ranks([str(driver), str(tmp_path), *args], env=_env(), port=port, timeout=240, cwd=REPO)
    expected = f"error: 1 of 8 training images cannot be used: {bad} cannot be decoded (damaged data inside the file)"
    for r, err in enumerate(errs):
        result = tmp_path / f"rank{r}.json"
        assert result.is_file(), err[-3000:]
        got = json.loads(result.read_text())
        lines = [ln for ln in err.splitlines() if not ln.startswith("libpng ")]  # the decoder's own words (C)
        assert got["rc"] == 2 and len(lines) == 1 and lines[0].startswith(expected), err[-3000:]
        assert sorted(got["decoded"]) == sorted(str(im.path) for im in images[r::2])  # its share, each once
    assert not list((tmp_path / "out").glob("detector_last*"))  # stopped before the first step


RANK0_FAIL_DRIVER = """
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import cartoonseg.training.detector as detector
import cartoonseg.training.engine as engine
import cartoonseg.training.refiner as refiner

def refuse(what):
    def fail(*args, **kwargs):
        path = kwargs.get("path", args[-1] if what == "gt_encoder" else args[0 if what == "checkpoint" else 1])
        name = f"{path}.safetensors" if what == "checkpoint" else str(path)
        raise OSError(28, "No space left on device", name)
    return fail

what, out = sys.argv[1], sys.argv[2]
if what == "checkpoint":
    engine.save_training_state = refuse(what)
elif what == "export":
    detector.save_weights = refuse(what)
elif what == "gt_encoder":
    refiner.save_gt_encoder = refuse(what)
elif what == "log":  # the log line of the first step cannot be written
    log = engine._log
    def refuse_log(ctx, out_dir, record):
        if ctx.is_main and record.get("step") == 1 and "event" not in record:
            raise OSError(28, "No space left on device", str(Path(out_dir, "log.jsonl")))
        log(ctx, out_dir, record)
    engine._log = refuse_log
elif what == "eval":  # an evaluator (library only) that fails on rank 0, where it runs
    def bad_evaluator(model):
        raise ValueError("evaluation failed: no validation images")
    train = detector.train_detector
    detector.train_detector = lambda cfg, ctx=None: train(cfg, ctx, evaluator=bad_evaluator)
if what == "gt_encoder":
    from train.train_refiner import main
else:
    from train.train_detector import main
rc = main(sys.argv[3:])
Path(out, "rank" + os.environ["RANK"] + ".json").write_text(json.dumps({"rc": rc}))
"""


@pytest.mark.parametrize("what", ["checkpoint", "export", "gt_encoder", "folder", "eval", "log"])
def test_a_failing_rank0_step_ends_every_rank_at_once_with_its_error(tmp_path, what):
    """Rank 0 alone writes the checkpoints, the log, the GT encoder and the export, checks the output folder and
    runs the evaluator, while the other ranks waited at a barrier: when that step failed (full disk, unwritable or
    foreign folder) they waited until the launcher killed them or for the process group's time-out (30-60 min; NCCL,
    or a rank 0 still alive), at best died with a traceback about a lost connection, and never said why. Now each
    such step goes through ``agree_on``: both ranks of a real 2-process gloo group end promptly with rank 0's
    one-line error (no torchrun: its agent would kill rank 1 as soon as rank 0 exits and hide a rank left waiting)."""
    import time

    data = tmp_path / "data"
    make_toy_coco(data, num_images=8, size=64, seed=0, name="train")
    out = tmp_path / "out"
    if what == "folder":  # a folder of someone else's files: rank 0 refuses it
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"not ours")
    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(RANK0_FAIL_DRIVER)
    args = ["--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--check-images", "none", "--log-interval", "1"]
    if what == "gt_encoder":
        args += ["--size", "64", "--gt-epochs", "1"]
    else:
        args += ["--img-size", "64", "--warmup-iters", "0"]
    if what == "checkpoint":
        args += ["--max-iters", "1"]  # stops after one step: the checkpoint is the last thing written
    procs, logs = [], []
    for r in (0, 1):
        env = dict(_env(), RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        logs.append(tmp_path / f"stderr{r}.txt")
        with open(logs[-1], "w") as err:
            procs.append(subprocess.Popen([sys.executable, str(driver), what, str(tmp_path), *args], cwd=REPO,
                                          env=env, stdout=subprocess.DEVNULL, stderr=err))
    try:
        procs[0].wait(timeout=240)
        ended = time.monotonic()
        procs[1].wait(timeout=30)  # not left waiting for a rank 0 that is gone
        assert time.monotonic() - ended < 30
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    expected = {"checkpoint": f"{out / 'detector_last.safetensors'}", "export": f"{out / 'detector.safetensors'}",
                "gt_encoder": f"{out / 'gt_encoder.safetensors'}", "folder": f"training output folder {out} holds",
                "eval": "evaluation failed: no validation images", "log": f"{out / 'log.jsonl'}"}
    errors = []
    for r in (0, 1):
        err = logs[r].read_text()
        result = tmp_path / f"rank{r}.json"
        assert result.is_file(), err[-3000:]
        assert json.loads(result.read_text())["rc"] == 2, err[-3000:]
        # after the command has returned 2 (recorded above), gloo's C++ threads can still abort the interpreter's
        # teardown now and then ("terminate called without an active exception", pytorch#179291): that line, and
        # only it, may follow; the command's own output is the one error line
        lines = output_lines(err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected[what] in lines[0], err[-3000:]
        errors.append(lines[0])
    assert errors[0] == errors[1]  # rank 0's words on every rank
    if what == "folder":
        assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]  # nothing written into it


PER_RANK_DRIVER = """
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from train.train_detector import main
rank = int(os.environ["RANK"])
result, own = sys.argv[1], json.loads(sys.argv[2])[rank]  # this rank's own --out / --data (its node's storage)
rc = main(sys.argv[3:] + own)
Path(result, f"rank{rank}.json").write_text(json.dumps({"rc": rc}))
"""


@pytest.mark.parametrize("what", ["checkpoint-missing", "checkpoint-damaged", "checkpoint-stale", "annotations-damaged",
                                  "data-missing"])
def test_a_step_failing_on_rank1_alone_ends_every_rank_at_once_naming_it(tmp_path, what):
    """Every rank reads the checkpoint on a resume and the annotation file itself; on per-node storage a copy can be
    missing or damaged on one node only. That rank failed alone while the others went on into their next collective
    and waited for it until the group's time-out (minutes), and a damaged checkpoint was a safetensors traceback.
    Now those steps go through ``sharding.every_rank``: both ranks of a real 2-process gloo group end at once with
    the same one ``error:`` line naming rank 1 and its reason. A stale copy (rank 1's node holds an older checkpoint
    of the run, step 1 where rank 0's is step 2) loaded fine, so rank 1 resumed from another step than rank 0: its
    optimizer state and step count differed, the ranks ran different numbers of steps and their collectives
    crossed. Now every rank's checkpoint is compared with rank 0's (step and JSON digest) and a mismatch is refused
    naming both steps."""
    import shutil
    import time

    from cartoonseg.hub import sha256_of
    from train.train_detector import main

    data = tmp_path / "data"
    ann = make_toy_coco(data, num_images=8, size=64, seed=0, name="train")
    args = ["--preset", "tiny", "--img-size", "64", "--epochs", "1", "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--check-images", "none", "--warmup-iters", "0", "--log-interval", "1"]
    out0, out1 = tmp_path / "out0", tmp_path / "out1"  # the same --out on two nodes' storage
    own = [["--out", str(out0), "--data", str(ann)], ["--out", str(out1), "--data", str(ann)]]
    if what.startswith("checkpoint"):
        assert main([*args, "--max-iters", "1", "--out", str(out0), "--data", str(ann)]) == 0  # a run to resume
        shutil.copytree(out0, out1)
        st = out1 / "detector_last.safetensors"
        if what == "checkpoint-stale":  # rank 0's node trains on to step 2; rank 1's copy stays at step 1
            assert main([*args, "--max-iters", "2", "--out", str(out0), "--data", str(ann)]) == 0
            expected = (f"error: rank 1: training checkpoint {out1 / 'detector_last'} is step 1 (JSON sha256 "
                        f"{sha256_of(out1 / 'detector_last.json')[:12]}...) but rank 0's is step 2 (JSON sha256 "
                        f"{sha256_of(out0 / 'detector_last.json')[:12]}...)")
        elif what == "checkpoint-missing":
            st.unlink()
            (out1 / "detector_last.json").unlink()
            expected = f"error: rank 1: training checkpoint {out1 / 'detector_last'}(.safetensors/.json) not found"
        else:
            st.write_bytes(b"\0" * 64)
            expected = f"error: rank 1: cannot read the training checkpoint {st} ("
        args += ["--max-iters", "3", "--allow-changes"]  # resumed by 2 processes: another world size
    elif what == "data-missing":  # --data resolved (find_annotation) by each rank: rank 1's node lacks it
        # (it failed before the process group started, leaving rank 0 in init_process_group until its time-out)
        own[1] = ["--out", str(out0), "--data", str(tmp_path / "node1")]
        expected = f"error: rank 1: {tmp_path / 'node1'} is neither a COCO JSON file nor a dataset folder"
    else:
        copy = tmp_path / "node1" / "det_train.json"
        copy.parent.mkdir()
        copy.write_text(ann.read_text()[:100])  # cut short on rank 1's node
        own[1] = ["--out", str(out0), "--data", str(copy)]
        expected = "error: rank 1: "
    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(PER_RANK_DRIVER)
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), json.dumps(own), *args], env=_env(), port=port,
                                timeout=120, cwd=REPO)
    assert time.monotonic() - start < 90
    lines = []
    for r, err in enumerate(errs):
        result = tmp_path / f"rank{r}.json"
        assert result.is_file(), err[-3000:]
        assert json.loads(result.read_text())["rc"] == 2, err[-3000:]
        got = output_lines(err)  # see the rank-0 failure test
        assert len(got) == 1 and got[0].startswith(expected), err[-3000:]
        lines.append(got[0])
    assert lines[0] == lines[1]  # the same words on every rank
    if what == "annotations-damaged":
        assert str(tmp_path / "node1" / "det_train.json") in lines[0]
    if what.startswith("checkpoint"):  # nothing trained or written over: rank 0's checkpoint is still its step
        assert json.loads((out0 / "detector_last.json").read_text())["step"] == (2 if what == "checkpoint-stale" else 1)
    if what == "checkpoint-stale":
        assert json.loads((out1 / "detector_last.json").read_text())["step"] == 1


REFINER_DRIVER = """
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import cartoonseg.training.refine_data as refine_data
import train.train_refiner as command
seen = []  # the images this rank's training samples came from (--workers 0: loaded in this process)
getitem = refine_data.RefineTrainSet.__getitem__
def recording_getitem(self, index):
    seen.append(self.items[index][0])
    return getitem(self, index)
refine_data.RefineTrainSet.__getitem__ = recording_getitem
summaries = []
train = command.train_refiner
command.train_refiner = lambda cfg, ctx=None: summaries.append(train(cfg, ctx)) or summaries[-1]
rank = int(os.environ["RANK"])
rc = command.main(sys.argv[3:] + json.loads(sys.argv[2])[rank])  # this rank's own --data (its node's storage)
Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps({"rc": rc, "seen": seen, "summaries": summaries},
                                                            default=str))
"""


@pytest.mark.parametrize("what", ["trains", "data-missing", "annotations-damaged", "annotations-differ"])
def test_train_refiner_data_under_two_ranks(tmp_path, what):
    """``python -m train.train_refiner --data`` by a real 2-process gloo group (torchrun's environment; no torchrun,
    whose agent would kill one rank when the other ends and hide a rank left waiting). Both ranks resolve --data
    themselves: with good data each trains on its own half of the images in both phases (GT encoder, refiner),
    they end with the same weights and rank 0 alone writes the run's files; when rank 1's copy is missing, cut
    short or another version (then the ranks' step counts differed and their collectives crossed: gloo aborted),
    both end within seconds with the same one ``error: rank 1: ...`` line and nothing is written."""
    import time

    from cartoonseg.training.coco import load_coco

    data = tmp_path / "data"
    ann = make_toy_coco(data, num_images=8, size=64, seed=0, name="train")
    out = tmp_path / "out"
    own = [["--data", str(data)], ["--data", str(data)]]
    if what == "data-missing":
        own[1] = ["--data", str(tmp_path / "node1")]
        expected = f"error: rank 1: {tmp_path / 'node1'} is neither a COCO JSON file nor a dataset folder"
    elif what == "annotations-damaged":
        copy = tmp_path / "node1" / "train.json"
        copy.parent.mkdir()
        copy.write_text(ann.read_text()[:100])
        own[1] = ["--data", str(copy)]
        expected = f"error: rank 1: --data {copy} differs from rank 0's copy (sha256 "  # found before it is read
    elif what == "annotations-differ":  # an older copy on rank 1's node: 4 of the 8 images (other step counts)
        older = json.loads(ann.read_text())
        older["images"] = older["images"][:4]
        keep = {im["id"] for im in older["images"]}
        older["annotations"] = [a for a in older["annotations"] if a["image_id"] in keep]
        copy = tmp_path / "node1" / "train.json"
        copy.parent.mkdir()
        copy.write_text(json.dumps(older))
        own[1] = ["--data", str(copy), "--images", str(data / "train")]
        expected = f"error: rank 1: --data {copy} differs from rank 0's copy (sha256 "
    args = ["--out", str(out), "--preset", "tiny", "--size", "32", "--epochs", "1", "--gt-epochs", "1",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--log-interval", "1"]
    driver = tmp_path / "driver.py"
    driver.write_text(REFINER_DRIVER)
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), json.dumps(own), *args], env=_env(), port=free_port(),
                                timeout=120, cwd=REPO)
    assert time.monotonic() - start < 90
    got = []
    for r, err in enumerate(errs):
        result = tmp_path / f"rank{r}.json"
        assert result.is_file(), err[-3000:]
        got.append(json.loads(result.read_text()))
        if what == "trains":
            assert got[r]["rc"] == 0 and len(got[r]["summaries"]) == 1, err[-3000:]
        else:
            lines = output_lines(err)
            assert got[r]["rc"] == 2 and len(lines) == 1 and lines[0].startswith(expected), err[-3000:]
            assert got[r]["seen"] == [] and got[r]["summaries"] == []
    if what != "trains":
        assert output_lines(errs[0]) == output_lines(errs[1])  # the same words on every rank
        assert not out.exists()  # refused before anything was written
        return
    s0, s1 = got[0]["summaries"][0], got[1]["summaries"][0]
    assert s0["world_size"] == s1["world_size"] == 2 and s0["finished"] and s1["finished"]
    assert s0["gt_encoder_steps"] == s1["gt_encoder_steps"] == 2 and s0["global_step"] == s1["global_step"] == 2
    assert s0["state_digest"] == s1["state_digest"]  # DDP kept the replicas in sync
    # each phase is one epoch of 8 images, 4 per rank: the ranks' shares are disjoint and cover every image
    per_phase = [(got[r]["seen"][:4], got[r]["seen"][4:]) for r in (0, 1)]
    n_images = len(load_coco(ann).images)
    for phase in (0, 1):
        mine, theirs = per_phase[0][phase], per_phase[1][phase]
        assert len(mine) == len(theirs) == 4 and not set(mine) & set(theirs)
        assert sorted(mine + theirs) == list(range(n_images))
    assert len(got[0]["seen"]) == len(got[1]["seen"]) == 8
    assert {"gt_encoder.safetensors", "refiner.safetensors"} <= {p.name for p in out.iterdir()}
    assert s0["export"] == s1["export"] == str(out / "refiner.safetensors")


def test_a_device_refused_on_one_rank_ends_every_rank_at_once_naming_it(tmp_path):
    """``distributed.setup`` checked ``--device`` (``cuda`` on a node without CUDA, more processes than GPUs) before
    the process group started, so the refused rank exited alone and the others sat in ``init_process_group``
    until its time-out (30 minutes). Now every rank's verdict travels over the rendezvous store first: both ranks of
    a real 2-process gloo group end within seconds with the same ``error: rank 1: --device cuda: ...`` line (rank 1
    asks for CUDA where CUDA is hidden, rank 0 for the CPU; the command's own up-front check of ``--device`` under
    torchrun is now its spelling only, the same verdict on every rank), and nothing is written."""
    import time

    data = tmp_path / "data"
    ann = make_toy_coco(data, num_images=8, size=64, seed=0, name="train")
    out = tmp_path / "out"
    args = ["--data", str(ann), "--out", str(out), "--preset", "tiny", "--img-size", "64", "--epochs", "1",
            "--batch-size", "2", "--workers", "0", "--check-images", "none", "--warmup-iters", "0"]
    own = [["--device", "cpu"], ["--device", "cuda"]]
    driver = tmp_path / "driver.py"
    hidden = "import torch\ntorch.cuda.is_available = lambda: False\n"  # no CUDA for either rank, on any machine
    driver.write_text(PER_RANK_DRIVER.replace("import torch\n", hidden))
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), json.dumps(own), *args], env=_env(), port=free_port(),
                                timeout=60, cwd=REPO)
    assert time.monotonic() - start < 50
    lines = []
    for r, err in enumerate(errs):
        result = tmp_path / f"rank{r}.json"
        assert result.is_file(), err[-3000:]
        assert json.loads(result.read_text())["rc"] == 2, err[-3000:]
        got = output_lines(err)
        expected = "error: rank 1: --device cuda: CUDA is not available here"
        assert len(got) == 1 and got[0].startswith(expected), err[-3000:]
        lines.append(got[0])
    assert lines[0] == lines[1]
    assert not out.exists()
