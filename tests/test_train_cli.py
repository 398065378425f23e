"""The ``train/`` scripts follow the error policy of every cartoonseg command: bad input and out-of-range option
values give one ``error: ...`` line and status 2 (never a traceback), options are checked before anything is read,
built or created, ``--refiner none`` means no refiner, and progress bars appear only on a terminal."""

from __future__ import annotations

import importlib
import io
import json
import sys

import pytest
import torch

import cartoonseg
from cartoonseg.config import detector_config

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _one_error_line(capsys, main, argv) -> str:
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 2, (status, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


TRAIN = ["--data", "no_such_data", "--out", "OUT"]
EVAL = ["--gt", "no_such_gt.json", "--pred", "no_such_pred.json"]
CHROMA = ["no_such_video.mp4", "--out", "OUT"]
BAD_VALUES = [
    *[(script, [*TRAIN, *bad], option) for script in ("train_detector", "train_refiner") for bad, option in [
        (["--epochs", "0"], "--epochs"), (["--batch-size", "0"], "--batch-size"), (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr"), (["--lr", "inf"], "--lr"), (["--weight-decay", "-1"], "--weight-decay"),
        (["--workers", "-1"], "--workers"), (["--log-interval", "0"], "--log-interval"),
        (["--ckpt-interval", "-1"], "--ckpt-interval"), (["--device", "banana"], "--device")]],
    ("train_detector", [*TRAIN, "--img-size", "33"], "--img-size"),
    ("train_detector", [*TRAIN, "--img-size", "0"], "--img-size"),
    ("train_detector", [*TRAIN, "--warmup-iters", "-1"], "--warmup-iters"),
    ("train_refiner", [*TRAIN, "--size", "8"], "--size"),
    ("train_refiner", [*TRAIN, "--gt-epochs", "-1"], "--gt-epochs"),
    ("train_refiner", [*TRAIN, "--rect-prob", "1.5"], "--rect-prob"),
    ("train_refiner", [*TRAIN, "--morph-prob", "nan"], "--morph-prob"),
    ("evaluate", [*EVAL, "--score-thr", "nan"], "--score-thr"),
    ("evaluate", [*EVAL, "--mask-thr", "5"], "--mask-thr"),
    ("evaluate", [*EVAL, "--types", "foo"], "--types"),
    ("evaluate", [*EVAL, "--types", ""], "--types"),
    ("evaluate", [*EVAL, "--types", "segm,foo"], "--types"),
    ("evaluate", [*EVAL, "--batch-size", "0"], "--batch-size"),
    ("evaluate", [*EVAL, "--det-size", "33"], "--det-size"),
    ("evaluate", [*EVAL, "--dilation-ratio", "nan"], "--dilation-ratio"),
    ("evaluate", [*EVAL, "--dilation-ratio", "-1"], "--dilation-ratio"),
    ("evaluate", [*EVAL, "--shard-size", "0"], "--shard-size"),
    ("evaluate", [*EVAL, "--threads", "-1"], "--threads"),
    ("evaluate", [*EVAL, "--threads", "0"], "--threads"),
    ("evaluate", [*EVAL, "--device", "banana"], "--device"),
    ("dump_predictions", ["--data", "no_such_data", "--detector", "d.ckpt", "--out", "OUT.json", "--score-thr", "2"],
     "--score-thr"),
    ("dump_predictions", ["--data", "no_such_data", "--detector", "d.ckpt", "--out", "OUT.json", "--batch-size", "0"],
     "--batch-size"),
    ("dump_predictions", ["--data", "no_such_data", "--detector", "d.ckpt", "--out", "OUT.json", "--device", "x"],
     "--device"),
    ("coco_person_boxes", ["no_such.json", "--out", "OUT.json", "--min-box-frac", "nan"], "--min-box-frac"),
    ("chroma_key", [*CHROMA, "--fps", "-1"], "--fps"),
    ("chroma_key", [*CHROMA, "--fps", "nan"], "--fps"),
    ("chroma_key", [*CHROMA, "--fps", "inf"], "--fps"),
    ("chroma_key", [*CHROMA, "--max-frames", "0"], "--max-frames"),
    ("chroma_key", [*CHROMA, "--max-frames", "-3"], "--max-frames"),
    ("chroma_key", [*CHROMA, "--dedup", "nan"], "--dedup"),
    ("chroma_key", [*CHROMA, "--dedup", "-1"], "--dedup"),
    ("make_fixtures", ["--out", "OUT", "--bg-size", "100000", "100000"], "--bg-size"),
    ("make_fixtures", ["--out", "OUT", "--bg-size", "8", "100"], "--bg-size"),
    ("make_fixtures", ["--out", "OUT", "--fg-height", "100000", "200000"], "--fg-height"),
    ("make_fixtures", ["--out", "OUT", "--fg-height", "100", "50"], "--fg-height"),
    ("make_fixtures", ["--out", "OUT", "--fg-height", "-5", "-1"], "--fg-height"),
]


@pytest.mark.parametrize("script,argv,option", BAD_VALUES, ids=[f"{s}{' '.join(a[-2:])}" for s, a, _ in BAD_VALUES])
def test_out_of_range_option_is_one_error_line_naming_it_before_any_work(script, argv, option, tmp_path, capsys,
                                                                         monkeypatch):
    """Checked first: the inputs named do not exist, so an error about them would mean the value was not."""
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"train.{script}").main
    err = _one_error_line(capsys, main, argv)
    assert option in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created (no OUT, no OUT/fg, OUT/bg)


def test_make_fixtures_refuses_sizes_before_creating_folders(tmp_path):
    from cartoonseg.data.fixtures import make_fixtures

    for kwargs in ({"bg_size": (100000, 100000)}, {"fg_height": (100000, 200000)}, {"fg_height": (80, 60)},
                   {"fg_height": (-5, -1)}, {"bg_size": (4, 4)}):
        with pytest.raises(ValueError, match="fg_height|bg_size"):
            make_fixtures(tmp_path / "mf", 1, 1, **kwargs)
        assert not (tmp_path / "mf").exists()
    assert len(make_fixtures(tmp_path / "mf", 1, 1, fg_height=(60, 60), bg_size=(64, 48))["fg"]) == 1  # low == high


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from cartoonseg.training.coco import find_annotation
    from cartoonseg.training.toy import make_toy_coco

    root = tmp_path_factory.mktemp("train_cli")
    make_toy_coco(root / "data", num_images=2, size=64, seed=3, name="val")
    ann = find_annotation(root / "data", "val")
    torch.manual_seed(0)
    det = cartoonseg.build_detector(detector_config("tiny", det_size=64, score_thr=0.0)).eval()
    return root, ann, cartoonseg.save_weights(det, root / "det.safetensors")


def test_bad_inputs_are_one_error_line_with_status_2(toy, tmp_path, capsys):
    from train import coco_person_boxes, dump_predictions, evaluate

    root, ann, det = toy
    images = ann.parent.parent / "val"
    assert "weights file not found" in _one_error_line(
        capsys, evaluate.main, ["--gt", ann, "--images", images, "--detector", tmp_path / "nonexist.ckpt"])
    assert "--images" in _one_error_line(capsys, evaluate.main, ["--gt", ann, "--images", tmp_path / "no",
                                                                 "--detector", det])
    assert "not found" in _one_error_line(capsys, evaluate.main, ["--gt", tmp_path / "no.json", "--pred", ann])
    (tmp_path / "bad.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert "JSON" in _one_error_line(capsys, evaluate.main, ["--gt", tmp_path / "bad.json", "--pred", ann])
    assert "COCO" in _one_error_line(capsys, dump_predictions.main, ["--data", tmp_path / "nonexist", "--detector",
                                                                     det, "--out", tmp_path / "x.json"])
    assert "weights file not found" in _one_error_line(capsys, dump_predictions.main, [
        "--data", ann, "--detector", tmp_path / "no.ckpt", "--out", tmp_path / "x.json"])
    _one_error_line(capsys, coco_person_boxes.main, [tmp_path / "nonexist.json", "--out", tmp_path / "pb.json"])
    assert "JSON" in _one_error_line(capsys, coco_person_boxes.main, [tmp_path / "bad.json", "--out",
                                                                      tmp_path / "pb.json"])
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "pb.json").exists()


def test_evaluate_refiner_none_is_no_refiner(toy, capsys):
    from train.evaluate import main

    root, ann, det = toy
    args = ["--gt", str(ann), "--images", str(ann.parent.parent / "val"), "--detector", str(det), "--det-size", "64",
            "--score-thr", "0", "--types", "segm", "--threads", "1"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for none in ("none", "None", ""):
        assert main([*args, "--refiner", none]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == plain


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_synthesize_shows_its_bar_on_a_terminal_only(tmp_path, monkeypatch):
    from cartoonseg.data.fixtures import make_fixtures
    from train.synthesize import main

    make_fixtures(tmp_path / "raw", num_fg=2, num_bg=1, seed=1, fg_height=(60, 80), bg_size=(160, 128))
    base = ["--fg", str(tmp_path / "raw" / "fg"), "--bg", str(tmp_path / "raw" / "bg"), "--num", "1",
            "--size", "96"]
    for n, (stream, extra, shown) in enumerate([(io.StringIO(), [], False), (_Terminal(), [], True),
                                                (_Terminal(), ["--no-progress"], False)]):
        monkeypatch.setattr(sys, "stderr", stream)
        assert main([*base, "--out", str(tmp_path / f"ds{n}"), *extra]) == 0
        assert ("synthesising" in stream.getvalue()) is shown, (extra, stream.getvalue())


@pytest.mark.parametrize("script,argv,words", [
    ("coco_person_boxes", ["no_such.json", "--out", "o.json", "--min-persons", "0"], "--min-persons"),
    ("make_fixtures", ["--out", "OUT", "--num-fg", "-1"], "--num-fg"),
    ("filter_danbooru", ["no_such_metadata", "--out", "OUT"], "METADATA not found"),
    ("evaluate", ["--gt", "gt.json"], "give --pred"),
])
def test_refusals_are_one_error_line_without_a_usage_block(script, argv, words, tmp_path, monkeypatch, capsys):
    """These refusals went through argparse's error(), which printed the usage block before `prog: error:`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gt.json").write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 0}]}))
    main = importlib.import_module(f"train.{script}").main
    assert words in _one_error_line(capsys, main, argv)


ONE_GPU = """
import importlib, os, sys
import torch
torch.cuda.is_available = lambda: True  # a one-GPU machine (this process has none: nothing may reach CUDA)
torch.cuda.device_count = lambda: 1
module, argv = sys.argv[1], sys.argv[2:]
main = importlib.import_module(module).main
sys.exit(main(argv))
"""


@pytest.mark.parametrize("command", ["evaluate", "dump_predictions", "annotate"])
def test_cuda_for_a_process_beyond_the_gpu_count_is_one_error_line(toy, tmp_path, command):
    """``--device cuda`` is ``cuda:LOCAL_RANK`` for each process of a torchrun run. ``train.evaluate``,
    ``train.dump_predictions`` and annotate mapped it without the GPU-count check the trainers have, so a second
    process on a one-GPU machine died in CUDA with a traceback when the models loaded. Now they share one rule
    (``cartoonseg._cli.rank_device``): one ``error:`` line naming the process and the GPU count, status 2. torch.cuda
    is patched in a subprocess (works on any machine; nothing reaches CUDA)."""
    import os
    import subprocess
    from pathlib import Path

    root, ann, det = toy
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               RANK="1", LOCAL_RANK="1", WORLD_SIZE="2")
    out = tmp_path / "out.json"
    if command == "evaluate":  # its process group starts first: one process (a group would wait)
        env.update(RANK="0", WORLD_SIZE="1")
        argv = ["train.evaluate", "--gt", ann, "--images", ann.parent.parent / "val", "--detector", det,
                "--det-size", "64", "--save-pred", out, "--device", "cuda"]
    elif command == "dump_predictions":  # its process group starts first: one process (a group would wait)
        env.update(RANK="0", WORLD_SIZE="1")
        argv = ["train.dump_predictions", "--data", ann, "--detector", det, "--out", out, "--device", "cuda"]
    else:  # the annotate rank's own process (one process: its process group would wait for rank 0)
        env.update(RANK="0", WORLD_SIZE="1")
        argv = ["cartoonseg.annotate.cli", "annotate", ann.parent.parent / "val", "--out", out, "--detector", det,
                "--refiner", "none", "--det-size", "64", "--device", "cuda", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", ONE_GPU, *map(str, argv)], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0] == ("error: --device cuda: process LOCAL_RANK=1 would use GPU 1 but this machine has 1; start "
                        "at most that many processes per node (torchrun --nproc-per-node)"), lines[0]
    assert not out.exists()


PER_RANK = """
import importlib, json, os, sys
from pathlib import Path
rank = int(os.environ["RANK"])
main = importlib.import_module(sys.argv[2]).main
rc = main(sys.argv[4:] + json.loads(sys.argv[3])[rank])  # this rank's own options (its node's files)
Path(sys.argv[1], f"rank{rank}.rc").write_text(str(rc))
"""


def _per_rank_driver(tmp_path):
    """The repository, the ranks' environment (one thread, the repository importable) and the :data:`PER_RANK`
    driver written into ``tmp_path``."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    driver = tmp_path / "driver.py"
    driver.write_text(PER_RANK)
    return repo, env, driver


@pytest.mark.parametrize("module", ["train.dump_predictions", "train.evaluate"])
def test_a_rank_that_cannot_read_its_detector_ends_every_rank_at_once(toy, tmp_path, module):
    """Under torchrun each rank of ``train.dump_predictions`` and of ``train.evaluate`` with models resolves the data
    (the ground truth) and loads the models itself (its node's storage). Rank 1 failing there exited alone while
    rank 0 predicted its shards and then polled for rank 1's forever. Now the group starts first and these steps go
    through ``sharding.every_rank``: both ranks of a real 2-process gloo group end within seconds with the same
    ``error: rank 1: ...`` line; nothing is written."""
    import time

    from _two_ranks import free_port, run_two_ranks, the_same_error_on_every_rank

    root, ann, det = toy
    repo, env, driver = _per_rank_driver(tmp_path)
    missing = tmp_path / "node1" / det.name
    own = [["--detector", str(det)], ["--detector", str(missing)]]
    out = tmp_path / "preds.json"
    if module == "train.dump_predictions":
        args = ["--data", str(ann), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    else:
        args = ["--gt", str(ann), "--images", str(ann.parent.parent / "val"), "--det-size", "64", "--save-pred",
                str(out), "--work-dir", str(tmp_path / "work"), "--threads", "1"]
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), module, json.dumps(own), *args],
                                env=env, port=free_port(), timeout=120, cwd=repo)
    assert time.monotonic() - start < 60
    line = the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: ")
    assert str(missing) in line
    assert not out.exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("module", ["train.dump_predictions", "train.evaluate"])
def test_a_device_one_rank_lacks_ends_every_rank_at_once_naming_it(toy, tmp_path, module):
    """``--device cuda`` on a node without CUDA was refused by the scripts' up-front check (``run_parser``), before
    the process group started: that rank exited alone and the other sat in ``init_process_group`` until its
    time-out (an hour). Under torchrun only the spelling is checked up front now, and each rank's device with its
    models (``every_rank``): both ranks of a real 2-process gloo group end within seconds with the same ``error:
    rank 1: ...`` line; nothing is written. CUDA is patched away in the ranks (holds on any machine)."""
    import time

    from _two_ranks import free_port, run_two_ranks, the_same_error_on_every_rank

    root, ann, det = toy
    repo, env, driver = _per_rank_driver(tmp_path)
    driver.write_text("import torch\ntorch.cuda.is_available = lambda: False\ntorch.cuda.device_count = lambda: 0\n"
                      + PER_RANK)
    own = [["--device", "cpu"], ["--device", "cuda"]]
    out = tmp_path / "preds.json"
    if module == "train.dump_predictions":
        args = ["--data", str(ann), "--detector", str(det), "--out", str(out), "--work-dir", str(tmp_path / "work")]
    else:
        args = ["--gt", str(ann), "--images", str(ann.parent.parent / "val"), "--detector", str(det), "--det-size",
                "64", "--save-pred", str(out), "--work-dir", str(tmp_path / "work"), "--threads", "1"]
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), module, json.dumps(own), *args],
                                env=env, port=free_port(), timeout=60, cwd=repo)
    assert time.monotonic() - start < 50
    the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: --device cuda: CUDA is not available here")
    assert not out.exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("theirs_on", [0, 1])
def test_dump_predictions_out_is_checked_on_rank_0_whose_verdict_every_rank_shares(toy, tmp_path, theirs_on):
    """Only rank 0 writes ``--out``, but every rank checked it: a file of someone else at that path on rank 1's node
    alone refused the whole run (``error: rank 1: refusing ...``). Now rank 0 checks it and every rank shares its
    verdict: a file on rank 1's node is left alone and the run writes rank 0's --out; one on rank 0's node ends both
    ranks with rank 0's one ``error:`` line. The user's file stays as it was."""

    from _two_ranks import free_port, output_lines, run_two_ranks

    root, ann, det = toy
    repo, env, driver = _per_rank_driver(tmp_path)
    outs = [tmp_path / f"node{r}" / "preds.json" for r in (0, 1)]
    for out in outs:
        out.parent.mkdir()
    outs[theirs_on].write_text("the user's own file")
    own = [["--out", str(outs[0])], ["--out", str(outs[1])]]
    args = ["--data", str(ann), "--detector", str(det), "--work-dir", str(tmp_path / "work")]
    procs, errs = run_two_ranks([str(driver), str(tmp_path), "train.dump_predictions", json.dumps(own), *args],
                                env=env, port=free_port(), timeout=120, cwd=repo)
    codes = [(tmp_path / f"rank{r}.rc").read_text() if (tmp_path / f"rank{r}.rc").is_file() else None
             for r in (0, 1)]
    assert outs[theirs_on].read_text() == "the user's own file"
    if theirs_on == 1:
        assert codes == ["0", "0"], errs
        assert all(output_lines(err) == [] for err in errs), errs
        assert "pred_segmentations" in outs[0].read_text()
    else:
        assert codes == ["2", "2"], errs
        for err in errs:
            got = output_lines(err)
            assert len(got) == 1 and got[0].startswith(f"error: refusing to replace {outs[0]}"), err[-3000:]
        assert not outs[1].exists()
    assert not (tmp_path / "work").exists()


def test_evaluate_refuses_save_pred_with_pred_instead_of_ignoring_it(toy, tmp_path, capsys):
    """``--save-pred`` with ``--pred`` was accepted and nothing was written: the predictions are already in
    ``--pred``, so the pair is one ``error:`` line naming both, and nothing is written."""
    from train.evaluate import main

    root, ann, det = toy
    pred = tmp_path / "pred.json"
    pred.write_text("[]")
    line = _one_error_line(capsys, main, ["--gt", ann, "--pred", pred, "--save-pred", tmp_path / "copy.json"])
    assert "--save-pred" in line and str(pred) in line
    assert not (tmp_path / "copy.json").exists()


def _two_rank_evaluate(tmp_path, own, args):
    """``train.evaluate`` as ranks 0 and 1 of a real 2-process gloo group, each with its own extra options ``own``
    (its node's files); returns the seconds taken, each rank's status and its stdout and stderr lines."""
    import subprocess
    import time

    from _two_ranks import free_port, output_lines

    repo, env, driver = _per_rank_driver(tmp_path)
    port, procs, start = free_port(), [], time.monotonic()
    for r in (0, 1):
        rank_env = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(driver), str(tmp_path), "train.evaluate",
                                       json.dumps(own), *map(str, args)], cwd=repo, env=rank_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.monotonic() - start
    ranks = []
    for r, (out, err) in enumerate(outs):
        rc = tmp_path / f"rank{r}.rc"
        assert rc.is_file(), err[-3000:]
        ranks.append((int(rc.read_text()), out.strip().splitlines(), output_lines(err)))
    return seconds, ranks


@pytest.mark.parametrize("case", ["report", "rank0-pred-missing"])
def test_evaluate_pred_under_two_ranks_is_rank_0s_work_and_every_rank_ends_with_its_result(toy, tmp_path, case):
    """``train.evaluate --pred`` (no models) started no process group under torchrun: every rank read the files,
    evaluated them and printed the report (N copies on the console), and a rank whose files were missing failed
    alone while the others reported success. Now rank 0 alone reads, evaluates and prints (there is nothing to
    share out), and every rank ends with its result (status 0, one report) or its error (the same line, status 2)."""
    root, ann, det = toy
    gt = json.loads(ann.read_text())
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                 "segmentation": a["segmentation"], "score": 0.9} for a in gt["annotations"]]))
    missing = tmp_path / "node0" / "pred.json"
    own = [["--pred", str(pred if case == "report" else missing)], ["--pred", str(pred)]]
    seconds, ranks = _two_rank_evaluate(tmp_path, own, ["--gt", ann, "--types", "segm"])
    assert seconds < 50
    if case == "report":
        assert ranks[0][0] == ranks[1][0] == 0, ranks
        assert len(ranks[0][1]) == 1 and json.loads(ranks[0][1][0])["segm_AP"] == 1.0, ranks
        assert ranks[1][1] == [] and ranks[0][2] == ranks[1][2] == [], ranks  # printed once, by rank 0
    else:
        for rc, out, err in ranks:
            assert rc == 2 and out == [] and err == [f"error: {missing} not found"], ranks


def test_evaluate_save_pred_refused_on_rank_0_ends_every_rank_at_once(toy, tmp_path):
    """``--save-pred`` was checked by every rank before the process group started; where rank 0's node held a file
    cartoonseg did not write there, rank 0 exited at once and rank 1 waited in ``init_process_group`` until its
    time-out (an hour). Rank 0 writes the file, so rank 0 checks it once the group runs: both ranks end within
    seconds with its one ``error:`` line, and the file stays as it was."""
    root, ann, det = toy
    theirs = tmp_path / "node0" / "preds.json"
    theirs.parent.mkdir()
    theirs.write_text("the user's own file")
    own = [["--save-pred", str(theirs)], ["--save-pred", str(tmp_path / "node1" / "preds.json")]]
    args = ["--gt", ann, "--images", ann.parent.parent / "val", "--detector", det, "--det-size", "64", "--work-dir",
            tmp_path / "work", "--threads", "1"]
    seconds, ranks = _two_rank_evaluate(tmp_path, own, args)
    assert seconds < 50
    for rc, out, err in ranks:
        assert rc == 2 and out == [] and len(err) == 1 and err[0].startswith(f"error: refusing to replace {theirs}")
    assert theirs.read_text() == "the user's own file"
    assert not (tmp_path / "work").exists() and not (tmp_path / "node1").exists()


@pytest.mark.parametrize("module", ["train.dump_predictions", "train.evaluate"])
def test_a_rank_whose_ground_truth_differs_from_rank_0s_ends_every_rank_at_once(toy, tmp_path, module):
    """The images are shared out from rank 0's list while each rank predicts from its own copy of the ground truth
    (its node's storage). Where rank 1's copy was an older one lacking an image, rank 1 died with a ``KeyError``
    traceback and rank 0 waited for its shards for ever. Now every rank's file is compared with rank 0's first:
    both ranks of a real 2-process gloo group end within seconds with the same ``error: rank 1: ...`` line, nothing
    written."""
    import time

    from _two_ranks import free_port, run_two_ranks, the_same_error_on_every_rank

    root, ann, det = toy
    repo, env, driver = _per_rank_driver(tmp_path)
    older = json.loads(ann.read_text())
    older["images"] = older["images"][:1]
    older["annotations"] = [a for a in older["annotations"] if a["image_id"] == older["images"][0]["id"]]
    copy = tmp_path / "node1" / ann.name
    copy.parent.mkdir()
    copy.write_text(json.dumps(older))
    images = ann.parent.parent / "val"
    out = tmp_path / "preds.json"
    option = "--data" if module == "train.dump_predictions" else "--gt"
    own = [[option, str(ann)], [option, str(copy)]]
    args = ["--detector", str(det), "--work-dir", str(tmp_path / "work"), "--shard-size", "1", "--images", str(images)]
    if module == "train.dump_predictions":
        args += ["--out", str(out)]
    else:
        args += ["--det-size", "64", "--save-pred", str(out), "--threads", "1"]
    start = time.monotonic()
    procs, errs = run_two_ranks([str(driver), str(tmp_path), module, json.dumps(own), *args],
                                env=env, port=free_port(), timeout=60, cwd=repo)
    assert time.monotonic() - start < 50
    the_same_error_on_every_rank(tmp_path, errs, f"error: rank 1: {option} {copy} differs from rank 0's copy")
    assert not out.exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("module", ["train.dump_predictions", "train.evaluate"])
def test_per_node_copies_of_the_weights_share_one_work_folder(toy, tmp_path, module):
    """Each rank described the run (the manifest of the shared ``--work-dir``) with its own copy of the weights: path,
    size and time stamp, so per-node copies (copied at another time) gave the ranks different manifests; the rank
    that came second was refused alone ("holds the shards of a different run", rank 0 included, then rank 1 reported
    success) and every rerun was refused the same way. Now rank 0's description is every rank's: the run ends with
    status 0 on both ranks, one output and no work folder left."""
    import os
    import shutil

    from _two_ranks import free_port, output_lines, run_two_ranks

    root, ann, det = toy
    repo, env, driver = _per_rank_driver(tmp_path)
    copy = tmp_path / "node1" / det.name
    copy.parent.mkdir()
    shutil.copyfile(det, copy)
    os.utime(copy, ns=(det.stat().st_mtime_ns + 10**9,) * 2)  # copied a second later
    own = [["--detector", str(det)], ["--detector", str(copy)]]
    out = tmp_path / "preds.json"
    work = tmp_path / "work"
    if module == "train.dump_predictions":
        args = ["--data", str(ann), "--out", str(out)]
    else:
        args = ["--gt", str(ann), "--images", str(ann.parent.parent / "val"), "--det-size", "64", "--save-pred",
                str(out), "--threads", "1"]
    # whichever rank writes the manifest first, the other checks its own description against it
    args += ["--work-dir", str(work), "--shard-size", "1"]
    procs, errs = run_two_ranks([str(driver), str(tmp_path), module, json.dumps(own), *args],
                                env=env, port=free_port(), timeout=60, cwd=repo)
    for r, err in enumerate(errs):
        rc = tmp_path / f"rank{r}.rc"
        assert rc.is_file() and rc.read_text() == "0" and output_lines(err) == [], err[-3000:]
    assert out.is_file() and not work.exists()


@pytest.mark.parametrize("script", ["train_detector", "train_refiner"])
@pytest.mark.parametrize("device,words", [("banana", "--device 'banana' is not a device"),
                                          ("mps", "--device mps: training runs on auto, cpu, cuda or cuda:N")])
def test_under_torchrun_a_misspelt_device_is_still_refused_before_any_group(script, device, words, tmp_path, capsys,
                                                                            monkeypatch):
    """Under torchrun the trainers leave whether CUDA is on this node to ``distributed.setup`` (which shares each
    rank's verdict); a value that is no training device on any node is still one ``error:`` line up front, the same
    on every rank, before a process group (no ``MASTER_ADDR`` here: a group start would fail otherwise)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    err = _one_error_line(capsys, importlib.import_module(f"train.{script}").main, [*TRAIN, "--device", device])
    assert words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
