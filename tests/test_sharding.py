"""The generic sharded-run helper (cartoonseg.sharding): shard assignment, atomic shard files, finished shards never
recomputed (also when the number of processes changes), refusal to mix runs, rank-0 wait and ordered results.
The multi-process ``torchrun`` path is exercised end to end by tests/test_annotate.py; agree_on with an error that
cannot be pickled by a real 2-process gloo group here."""

from __future__ import annotations

import json
import time

import pytest

from cartoonseg.sharding import RankInfo, ShardedRun, run_sharded, write_atomic
from _two_ranks import free_port, run_two_ranks

KEYS = [f"item{i:02d}" for i in range(11)]


def _square(calls):
    def fn(key):
        calls.append(key)
        return {"key": key, "value": int(key[4:]) ** 2}
    return fn


def test_shards_cover_items_once_and_assignment_is_round_robin(tmp_path):
    runs = [ShardedRun(tmp_path, KEYS, shard_size=3, rank=RankInfo(r, 2)) for r in range(2)]
    assert [len(s.keys) for s in runs[0].shards] == [3, 3, 3, 2]
    assert [s.index for s in runs[0].mine()] == [0, 2] and [s.index for s in runs[1].mine()] == [1, 3]
    covered = [k for run in runs for s in run.mine() for k in s.keys]
    assert sorted(covered) == KEYS


def test_two_ranks_then_resume_with_three_recomputes_nothing(tmp_path):
    calls: list[str] = []
    # rank 1 of 2 finishes its shards and exits; rank 0 computes its own and merges
    assert run_sharded(tmp_path, KEYS, _square(calls), shard_size=3, rank=RankInfo(1, 2), progress=False) is None
    results = run_sharded(tmp_path, KEYS, _square(calls), shard_size=3, rank=RankInfo(0, 2), progress=False,
                          wait_timeout=5)
    assert [r["key"] for r in results] == KEYS and sorted(calls) == KEYS
    assert [r["value"] for r in results] == [i * i for i in range(11)]
    # a restart with another world size finds every shard finished: fn is never called
    calls.clear()
    for r in (2, 1):
        run_sharded(tmp_path, KEYS, _square(calls), shard_size=3, rank=RankInfo(r, 3), progress=False)
    again = run_sharded(tmp_path, KEYS, _square(calls), shard_size=3, rank=RankInfo(0, 3), progress=False)
    assert calls == [] and again == results


def test_only_unfinished_shards_are_recomputed_and_stale_temp_files_go(tmp_path):
    run = ShardedRun(tmp_path, KEYS, shard_size=4)
    first = run.shards[0]
    run.save(first, [{"key": k} for k in first.keys])
    before = run.path(first).stat()
    stale = run.path(1).with_name(run.path(1).name + ".tmp-otherhost-999")
    stale.write_text('{"half": ')  # what a process killed mid-write could leave behind
    calls: list[str] = []
    results = run_sharded(tmp_path, KEYS, _square(calls), shard_size=4, progress=False)
    assert calls == KEYS[4:]  # shard 0 was finished
    assert results[0] == {"key": "item00"}  # ... and was read back, not recomputed
    after = run.path(first).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not stale.exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_folder_of_another_run_is_refused(tmp_path):
    ShardedRun(tmp_path, KEYS, shard_size=4, fingerprint={"thr": 0.3})
    with pytest.raises(ValueError, match="different run.*fingerprint"):
        ShardedRun(tmp_path, KEYS, shard_size=4, fingerprint={"thr": 0.5})
    with pytest.raises(ValueError, match="items_sha256"):
        ShardedRun(tmp_path, KEYS[::-1], shard_size=4, fingerprint={"thr": 0.3})
    with pytest.raises(ValueError, match="shard_size"):
        ShardedRun(tmp_path, KEYS, shard_size=5, fingerprint={"thr": 0.3})


def test_results_and_wait_check_completeness(tmp_path):
    run = ShardedRun(tmp_path / "run", KEYS, shard_size=6)
    run.save(run.shards[0], list(range(6)))
    with pytest.raises(RuntimeError, match="1 shard"):
        run.results()
    with pytest.raises(TimeoutError, match="shard-000001"):
        run.wait(timeout=0.2, poll=0.05)
    with pytest.raises(ValueError, match="6 items but 2 results"):
        run.save(run.shards[0], [1, 2])
    # a shard file that does not hold this run's items is reported, not silently merged
    record = json.loads(run.path(0).read_text())
    record["keys"][0] = "intruder"
    run.path(0).write_text(json.dumps(record))
    run.save(run.shards[1], list(range(5)))
    with pytest.raises(ValueError, match="delete it to recompute"):
        run.results()
    run.remove()  # a shard file that does not hold this run's items is not known to be ours: it stays
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["shard-000000.json"]


def test_write_atomic_replaces_whole_file(tmp_path):
    target = tmp_path / "x.json"
    write_atomic(target, "old")
    write_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_rank_info_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert RankInfo.from_env() == RankInfo(3, 4, 1)
    with pytest.raises(ValueError, match="rank"):
        RankInfo(4, 4)


def test_remove_deletes_only_the_runs_own_files_and_never_the_users(tmp_path):
    """A work folder may hold files of the user's that merely look like ours (``manifest.jsonl``,
    ``manifest.json.bak``, ``shard-notes.json``, a ``shard-000000.json`` of another program): remove() deletes
    exactly the run's manifest, shard files and temporaries, and the folder only when the run created it."""
    work = tmp_path / "wd"
    work.mkdir()
    user = {"manifest.jsonl": "k", "manifest.json.bak": "k", "shard-notes.json": "k", "shard-000099.json": "k",
            "shard-000000.json.tmp-mine": "k", "result.json": "k"}
    for name, text in user.items():
        (work / name).write_text(text)
    results = run_sharded(work, KEYS, _square([]), shard_size=4, progress=False)
    assert len(results) == len(KEYS)
    run = ShardedRun(work, KEYS, shard_size=4)
    (work / (run.path(1).name + ".tmp-host-123")).write_text("{")  # what a killed write leaves
    run.remove()
    assert {p.name: p.read_text() for p in work.iterdir()} == user  # the folder existed before: it stays
    # a folder the run created goes once empty; one that still holds a file of someone else stays
    fresh = tmp_path / "fresh"
    run_sharded(fresh, KEYS, _square([]), shard_size=4, progress=False)
    ShardedRun(fresh, KEYS, shard_size=4).remove()
    assert not fresh.exists()
    run_sharded(fresh, KEYS, _square([]), shard_size=4, progress=False)
    (fresh / "notes.txt").write_text("keep")
    ShardedRun(fresh, KEYS, shard_size=4).remove()
    assert [p.name for p in fresh.iterdir()] == ["notes.txt"]


def test_a_manifest_of_someone_else_is_refused_without_advice_to_delete_the_folder(tmp_path):
    data = tmp_path / "ds"
    data.mkdir()
    (data / "manifest.json").write_text('{"images": 3}')
    (data / "a.png").write_text("x")
    for text in ('{"images": 3}', "not json"):
        (data / "manifest.json").write_text(text)
        with pytest.raises(ValueError, match="use another work folder") as err:
            ShardedRun(data, KEYS, shard_size=4)
        assert "delete" not in str(err.value)
    assert sorted(p.name for p in data.iterdir()) == ["a.png", "manifest.json"]
    ShardedRun(tmp_path / "run", KEYS, shard_size=4, fingerprint={"thr": 0.3})
    with pytest.raises(ValueError, match="different run") as err:
        ShardedRun(tmp_path / "run", KEYS, shard_size=4, fingerprint={"thr": 0.5})
    assert "delete" not in str(err.value)


def test_check_outside_refuses_outputs_in_the_work_folder(tmp_path):
    from cartoonseg.sharding import check_outside

    work = tmp_path / "wd"
    for out in (work / "shard-all.json", work / "manifest.json", work, work / "sub" / "x.json"):
        with pytest.raises(ValueError, match="inside the work folder"):
            check_outside(work, out)
    check_outside(work, tmp_path / "wd.json", tmp_path / "wd2" / "x.json", None)


def test_evaluate_and_dump_predictions_refuse_an_output_inside_their_work_folder(tmp_path, capsys):
    from train import dump_predictions, evaluate

    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 0, "name": "object"}]}))
    work = tmp_path / "wd"
    for main, args in ((evaluate.main, ["--gt", str(gt), "--images", str(tmp_path), "--save-pred"]),
                       (dump_predictions.main, ["--data", str(gt), "--out"])):
        code = main([*args, str(work / "shard-all.json"), "--detector", str(tmp_path / "det.safetensors"),
                     "--work-dir", str(work)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "inside the work folder" in err
    assert not work.exists()


def test_a_work_folder_that_is_a_file_is_a_clear_error(tmp_path):
    from cartoonseg.sharding import ShardedRun

    (tmp_path / "wd").write_text("user")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        ShardedRun(tmp_path / "wd", ["a", "b"])
    assert (tmp_path / "wd").read_text() == "user"


UNSENDABLE_DRIVER = """
import argparse, os, sys, threading, time
from pathlib import Path
from cartoonseg._cli import run_parser
from cartoonseg.hub import WeightsUnavailableError
from cartoonseg.sharding import agree_on, init_distributed


class UnsendableValueError(ValueError):  # a one-line error whose attribute cannot be pickled
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class UnsendableBug(RuntimeError):  # a bug (not a CLI error) that cannot be pickled either
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def make():
    what = sys.argv[2]
    if what == "value":
        raise UnsendableValueError("folder /data/x holds 3 files of someone else")
    if what == "weights":
        exc = WeightsUnavailableError("detector.safetensors is not on disk and downloading is disabled")
        exc.lock = threading.Lock()
        raise exc
    raise UnsendableBug("internal state broken")


def run(args):
    agree_on(make, init_distributed())
    return 0


parser = argparse.ArgumentParser()
parser.set_defaults(func=run)
try:
    rc = run_parser(parser, [])
finally:
    Path(sys.argv[1], "rank" + os.environ["RANK"] + ".done").write_text("")
    if os.environ["RANK"] == "0":  # stay alive: a rank left waiting would hang, not crash
        deadline = time.monotonic() + 30
        while not Path(sys.argv[1], "rank1.done").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
sys.exit(rc)
"""


@pytest.mark.parametrize("what, line", [
    ("value", "error: folder /data/x holds 3 files of someone else"),
    ("weights", "error: detector.safetensors is not on disk and downloading is disabled"),
    ("bug", None),
])
def test_agree_on_sends_an_exception_that_cannot_be_pickled_as_the_same_kind_of_error(tmp_path, what, line):
    """When rank 0's error could not be pickled (an attribute holding a lock, a file, a model), the other ranks got
    ``RuntimeError("rank 0 failed: ...")``: not one of the CLI's one-line errors, so rank 0 printed ``error: ...``
    and exited 2 while every other rank printed a traceback of a RuntimeError. Now they get an exception of the
    nearest class that can travel with rank 0's exact message: every rank prints the same ``error:`` line and exits
    2, and a bug (not a one-line error) stays a traceback on every rank. A real 2-process gloo group on CPU."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    port = free_port()
    driver = tmp_path / "driver.py"
    driver.write_text(UNSENDABLE_DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs, errs = run_two_ranks([str(driver), str(tmp_path), what], env=env, port=port, timeout=120, cwd=repo)
    if line is not None:
        for p, err in zip(procs, errs):
            assert p.returncode == 2 and err == line + "\n", err[-3000:]
    else:  # a bug keeps its traceback on every rank, with rank 0's message (the exit status is the interpreter's)
        for p, err in zip(procs, errs):
            assert p.returncode not in (0, 2) and "Traceback" in err and "internal state broken" in err, err[-3000:]
        assert "UnsendableBug" in errs[1]  # rank 1's traceback names what rank 0 raised


def test_an_exception_that_cannot_be_pickled_travels_as_its_nearest_picklable_class():
    """The stand-in keeps rank 0's exact message (also where a subclass's ``str`` differs, as KeyError's quotes) and
    the nearest base class the CLI policy knows; a note names the class rank 0 raised."""
    import pickle
    import threading

    from cartoonseg.hub import WeightsUnavailableError
    from cartoonseg.sharding import _sendable

    class Local(ValueError):  # a class defined in a function cannot be pickled at all
        pass

    weights = WeightsUnavailableError("no weights", reason="offline")
    weights.lock = threading.Lock()
    missing = KeyError("image_id")
    missing.handle = threading.Lock()
    denied = PermissionError(13, "Permission denied", "/x/y.png")
    denied.handle = threading.Lock()
    for exc, expected in [(Local("bad --size 3"), ValueError), (weights, WeightsUnavailableError),
                          (missing, LookupError), (denied, PermissionError)]:
        sent = pickle.loads(pickle.dumps(_sendable(exc)))
        assert type(sent) is expected and str(sent) == str(exc)
    fine = ValueError("picklable")
    assert _sendable(fine) is fine
    assert "Local" in pickle.loads(pickle.dumps(_sendable(Local("x")))).__notes__[0]


def _fail_on(bad):
    def fn(key):
        if key == bad:
            raise FileNotFoundError(f"{key}.png: no such file on this node")
        return {"key": key}
    return fn


def test_a_rank_that_fails_leaves_a_marker_and_rank_0_stops_with_its_error(tmp_path):
    """Rank 0 polled for the shards of a rank that had failed with no time limit (a hang under any launcher but
    torchrun's agent). The failing rank now leaves ``failed-rank-<r>.json``; rank 0's wait() raises naming the
    rank and its error; a resumed run is not stopped by that old marker, and remove() deletes it."""
    from cartoonseg.sharding import RankFailedError

    work = tmp_path / "wd"
    with pytest.raises(FileNotFoundError):
        run_sharded(work, KEYS, _fail_on("item04"), shard_size=3, rank=RankInfo(1, 2), progress=False)
    marker = json.loads((work / "failed-rank-1.json").read_text())
    assert marker["rank"] == 1 and "item04.png: no such file" in marker["error"]
    with pytest.raises(RankFailedError, match=r"rank 1 \(host .*\) failed: item04.png: no such file on this node"):
        run_sharded(work, KEYS, _square([]), shard_size=3, rank=RankInfo(0, 2), progress=False, wait_timeout=5)
    # the resumed rank 1 clears its old marker; rank 0 then merges
    assert run_sharded(work, KEYS, _square([]), shard_size=3, rank=RankInfo(1, 2), progress=False) is None
    assert not (work / "failed-rank-1.json").exists()
    results = run_sharded(work, KEYS, _square([]), shard_size=3, rank=RankInfo(0, 2), progress=False, wait_timeout=5)
    assert [r["key"] for r in results] == KEYS
    # remove() deletes a marker of this run (an old attempt's rank 3 of 4, say) but not a user's look-alike file
    run = ShardedRun(work, KEYS, shard_size=3, rank=RankInfo(0, 2))
    run.rank = RankInfo(3, 4)
    run.fail("old attempt")
    (work / "failed-rank-7.json").write_text("mine")
    run.remove()
    assert [p.name for p in work.iterdir()] == ["failed-rank-7.json"]


def test_a_stalled_run_ends_with_a_timeout_and_progress_resets_the_clock(tmp_path, monkeypatch):
    import threading

    run = ShardedRun(tmp_path / "a", KEYS, shard_size=3, rank=RankInfo(0, 2))
    for shard in run.pending():
        run.save(shard, list(shard.keys))
    with pytest.raises(TimeoutError, match=r"no shard finished .* for 0s and no rank reported a failure.*rank\(s\) "
                                           r"\[1\].*CARTOONSEG_STALL_TIMEOUT"):
        run.wait(stall=0.3, poll=0.05)
    monkeypatch.setenv("CARTOONSEG_STALL_TIMEOUT", "0.3")
    with pytest.raises(TimeoutError, match="no shard finished"):
        run.wait(poll=0.05)
    for bad in ("0", "-1", "soon", "nan", "inf"):
        monkeypatch.setenv("CARTOONSEG_STALL_TIMEOUT", bad)
        with pytest.raises(ValueError, match="CARTOONSEG_STALL_TIMEOUT must be"):
            run.wait(poll=0.05)
    monkeypatch.delenv("CARTOONSEG_STALL_TIMEOUT")
    # a slow rank that keeps finishing shards is not stalled, however long the whole wait takes
    other = ShardedRun(tmp_path / "a", KEYS, shard_size=3, rank=RankInfo(1, 2))

    def slow():
        for shard in other.pending():
            time.sleep(0.25)
            other.save(shard, list(shard.keys))

    worker = threading.Thread(target=slow)
    worker.start()
    run.wait(stall=0.4, poll=0.02)
    worker.join()
    assert run.results() == KEYS


FAILING_RANK_DRIVER = """
import argparse, os, sys
from pathlib import Path
from cartoonseg._cli import run_parser
from cartoonseg.sharding import init_distributed, run_sharded


def fn(key):
    if os.environ["RANK"] == sys.argv[2] and key == "item02":
        raise FileNotFoundError("item02.png: no such file on this node")
    return key


def run(args):
    rank = init_distributed()
    out = run_sharded(sys.argv[1], [f"item{i:02d}" for i in range(11)], fn, shard_size=2, rank=rank, progress=False)
    if out is not None:
        Path(sys.argv[1]).with_name("merged.txt").write_text(",".join(out))
    return 0


parser = argparse.ArgumentParser()
parser.set_defaults(func=run)
sys.exit(run_parser(parser, []))
"""


def test_two_ranks_one_fails_in_its_share_rank_0_reports_it_then_the_rerun_resumes(tmp_path):
    """Two real processes (gloo group): rank 1 raises while computing its share. Rank 0 used to wait for its shards
    forever; now it ends at once with one ``error:`` line naming rank 1 and its error (status 2, as rank 1). The
    same command run again (nothing failing) resumes, unhindered by the old marker, and merges every item."""
    import os
    from pathlib import Path

    from _two_ranks import output_lines

    repo = Path(__file__).resolve().parents[1]
    driver = tmp_path / "driver.py"
    driver.write_text(FAILING_RANK_DRIVER)
    work = tmp_path / "wd"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs, errs = run_two_ranks([str(driver), str(work), "1"], env=env, port=free_port(), timeout=60, cwd=repo)
    assert [p.returncode for p in procs] == [2, 2], errs
    assert output_lines(errs[1]) == ["error: item02.png: no such file on this node"]
    lines = output_lines(errs[0])
    assert len(lines) == 1 and lines[0].startswith("error: rank 1 (host "), lines
    assert "failed: item02.png: no such file on this node" in lines[0] and "run the same command again" in lines[0]
    procs, errs = run_two_ranks([str(driver), str(work), "none"], env=env, port=free_port(), timeout=60, cwd=repo)
    assert [p.returncode for p in procs] == [0, 0], errs
    assert (tmp_path / "merged.txt").read_text() == ",".join(KEYS)
    assert not (work / "failed-rank-1.json").exists()


# The end of the two-rank drivers below: run the driver's ``run`` through the CLI wrapper, record its status, and
# stay alive until both ranks are done (a rank left waiting would hang instead of seeing a lost connection).
_RANK_DRIVER_TAIL = """
parser = argparse.ArgumentParser()
parser.set_defaults(func=run)
rc = run_parser(parser, [])
Path(sys.argv[1], f"rank{rank_id}.rc").write_text(str(rc))
Path(sys.argv[1], f"rank{rank_id}.done").write_text("")
deadline = time.monotonic() + 20
while not all(Path(sys.argv[1], f"rank{r}.done").exists() for r in (0, 1)) and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(rc)
"""


def _build_drivers_errors(tmp_path, source: str, *args: str) -> list[str]:
    """Run the two-rank driver ``source`` (one of the ShardedRun build drivers below, ending in
    :data:`_RANK_DRIVER_TAIL`) with ``tmp_path`` and ``args`` in a real 2-process gloo group; both ranks must end
    within 45 s. Returns each rank's stderr."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    driver = tmp_path / "driver.py"
    driver.write_text(source)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.monotonic()
    _, errs = run_two_ranks([str(driver), str(tmp_path), *args], env=env, port=free_port(), timeout=60, cwd=repo)
    assert time.monotonic() - start < 45
    return errs


REFUSED_FOLDER_DRIVER = """
import argparse, json, os, sys, time
from pathlib import Path
from cartoonseg._cli import run_parser
from cartoonseg.sharding import init_distributed, run_sharded

rank_id = int(os.environ["RANK"])
folder = json.loads(sys.argv[2])[rank_id]  # this rank's view of the work folder (its node's storage)


def run(args):
    run_sharded(folder, [f"item{i:02d}" for i in range(5)], str, shard_size=1, rank=init_distributed(),
                progress=False)
    return 0

""" + _RANK_DRIVER_TAIL


@pytest.mark.parametrize("refused_on", [0, 1])
def test_a_rank_refused_while_building_the_run_ends_every_rank_with_its_error(tmp_path, refused_on):
    """A rank whose work folder was refused while it built its ShardedRun (here: the path is a file on its node)
    exited alone: the other rank then waited for the attempt token (refused on rank 0) or, having got it, computed
    its shards and waited for the refused rank's shards, which never came and left no failure marker (refused on
    rank 1). Now the run is built through every_rank: both ranks of a real 2-process gloo group end within seconds
    with the same ``error: rank N: ...`` line, and the user's file stays."""
    from _two_ranks import the_same_error_on_every_rank

    user = tmp_path / "node-file"
    user.write_text("user")
    # the other rank's view: a work folder under a parent that does not exist yet on its node
    folders = [str(tmp_path / "node" / "wd"), str(tmp_path / "node" / "wd")]
    folders[refused_on] = str(user)
    errs = _build_drivers_errors(tmp_path, REFUSED_FOLDER_DRIVER, json.dumps(folders))
    line = the_same_error_on_every_rank(tmp_path, errs, f"error: rank {refused_on}: work folder {user} exists and "
                                                        f"is not a folder")
    assert "choose another work folder (--work-dir)" in line
    assert user.read_text() == "user"
    # the rank that was not refused created nothing (it made the folder, its parent, marker and manifest before)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["driver.py", "node-file", "rank0.done", "rank0.rc",
                                                                 "rank1.done", "rank1.rc"])


BUILD_FAILS_DRIVER = """
import argparse, json, os, sys, time, uuid
from pathlib import Path
from cartoonseg._cli import run_parser
import cartoonseg.sharding as sharding

rank_id = int(os.environ["RANK"])
where = sys.argv[2]


class NotJSON:
    pass


def no_entropy():
    raise OSError("no entropy source on this node")


def run(args):
    rank = sharding.init_distributed()
    fingerprint = {"model": "m"}
    if rank_id == 1 and where == "before":  # a fingerprint this rank cannot describe (fails before the folder)
        fingerprint["weights"] = NotJSON()
    if rank_id == 1 and where == "token":  # fails after the folder is open, when making the attempt token
        sharding.uuid = type("U", (), {"uuid4": staticmethod(no_entropy)})
    sharding.run_sharded(sys.argv[3], [f"item{i:02d}" for i in range(5)], str, shard_size=1, rank=rank,
                         fingerprint=fingerprint, progress=False)
    return 0

""" + _RANK_DRIVER_TAIL


@pytest.mark.parametrize("where,words", [("before", "TypeError: "), ("token", "no entropy source on this node")])
def test_a_rank_failing_anywhere_while_building_the_run_ends_every_rank_with_its_error(tmp_path, where, words):
    """Only opening the folder went through every_rank: a rank failing elsewhere while it built its ShardedRun (its
    fingerprint that cannot be written as JSON, before the folder; making the attempt token, after it) ended alone
    and left rank 0 in the folder's exchange or in the token's broadcast until the other process exited (then a
    lost-connection error). Now the whole build is one every_rank step: both ranks of a real 2-process gloo group end
    within seconds with the same ``error: rank 1: ...`` line, and the run folder rank 0 made is gone again."""
    from _two_ranks import the_same_error_on_every_rank

    errs = _build_drivers_errors(tmp_path, BUILD_FAILS_DRIVER, where, str(tmp_path / "wd"))
    line = the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: ")
    assert words in line or (where == "before" and "not JSON serializable" in line), line
    assert not (tmp_path / "wd").exists()


OTHER_RUN_DRIVER = """
import argparse, os, sys, time
from pathlib import Path
from cartoonseg._cli import run_parser
import cartoonseg.sharding as sharding

rank_id = int(os.environ["RANK"])
case = sys.argv[2]


def run(args):
    rank = sharding.init_distributed()
    keys = [f"item{i:02d}" for i in range(5)]
    fingerprint = {"model": "m", "precision": "fp32"}
    if rank_id == 1 and case == "item":  # another listing of the images on this node
        keys[2] = "other"
    if rank_id == 1 and case == "count":  # a node with fewer images
        keys = keys[:3]
    if rank_id == 1 and case == "fingerprint":  # this node's CPU runs another precision
        fingerprint["precision"] = "bf16"
    sharding.run_sharded(sys.argv[3], keys, str, shard_size=1, rank=rank, fingerprint=fingerprint, progress=False)
    return 0

""" + _RANK_DRIVER_TAIL


@pytest.mark.parametrize("case,words", [
    ("item", "the items differ from rank 0's: item 2 is 'other' here, 'item02' on rank 0"),
    ("count", "the items differ from rank 0's: 3 here, 5 on rank 0 (the first 3 agree)"),
    ("fingerprint", "the fingerprint differs from rank 0's in 'precision': 'bf16' here, 'fp32' on rank 0"),
])
def test_a_rank_whose_run_is_not_rank_0s_is_refused_on_every_rank_naming_what_differs(tmp_path, case, words):
    """Ranks that built their ShardedRun from other items (another listing of the images on their node) or another
    fingerprint (another precision on their CPU) raced on a new folder's manifest: each rank wrote its own, the last
    one won, and the shards held results of different runs (or the later rank was refused alone with a vague
    'different run' line). Now every rank's description is compared with rank 0's before anything is created: both
    ranks of a real 2-process gloo group end at once with the same ``error: rank 1: ...`` line naming the first item
    or fingerprint entry that differs, and no run folder is made."""
    from _two_ranks import the_same_error_on_every_rank

    errs = _build_drivers_errors(tmp_path, OTHER_RUN_DRIVER, case, str(tmp_path / "wd"))
    line = the_same_error_on_every_rank(tmp_path, errs, "error: rank 1: ")
    assert line.startswith(f"error: rank 1: {words}; every rank must run over rank 0's items"), line
    assert not (tmp_path / "wd").exists()


def test_a_rank_failing_while_it_lists_its_pending_shards_leaves_a_marker(tmp_path, monkeypatch):
    """pending() (which also removes the temporary files a killed run left) ran outside reporting_failures in every
    caller: a rank that failed there exited without a failure marker and rank 0 waited for its shards until the
    stall time-out (an hour). Now rank 0 stops at once with that rank's error. A folder that merely has the name
    of one of our temporary files is not ours: pending() and remove() leave it (remove() raised IsADirectoryError)."""
    import pathlib

    from cartoonseg.sharding import RankFailedError

    work = tmp_path / "wd"
    run = ShardedRun(work, KEYS, shard_size=3, rank=RankInfo(1, 2))
    odd = work / (run.path(1).name + ".tmp-host-123")
    odd.mkdir()
    (odd / "notes.txt").write_text("user")
    stale = work / (run.path(3).name + ".tmp-host-456")
    stale.write_text("{")
    real_unlink = pathlib.Path.unlink

    def unlink(self, missing_ok=False):
        if self == stale:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    with pytest.raises(PermissionError):
        run_sharded(work, KEYS, str, shard_size=3, rank=RankInfo(1, 2), progress=False)
    with pytest.raises(RankFailedError, match=r"rank 1 \(host .*\) failed: .*Permission denied"):
        run_sharded(work, KEYS, str, shard_size=3, rank=RankInfo(0, 2), progress=False, wait_timeout=5)
    monkeypatch.undo()
    assert run_sharded(work, KEYS, str, shard_size=3, rank=RankInfo(1, 2), progress=False) is None
    assert run_sharded(work, KEYS, str, shard_size=3, rank=RankInfo(0, 2), progress=False, wait_timeout=5) == KEYS
    assert not stale.exists()
    ShardedRun(work, KEYS, shard_size=3).remove()
    assert [p.name for p in work.iterdir()] == [odd.name] and (odd / "notes.txt").read_text() == "user"


def test_a_run_folder_whose_manifest_cannot_be_written_is_taken_back(tmp_path, monkeypatch):
    """One process: the folder (and its missing parent) was created, then writing the manifest failed (a full disk):
    the folder, its parent and the created-mark stayed behind as a stray run folder. Now what the build created is
    taken back; a folder that existed before stays, with the user's file in it."""
    from pathlib import Path

    import cartoonseg.sharding as sharding

    real = sharding.write_atomic

    def full_disk(path, text):
        if Path(path).name == sharding.MANIFEST:
            raise OSError(28, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(sharding, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ShardedRun(tmp_path / "new" / "wd", KEYS, shard_size=3)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("user")
    with pytest.raises(OSError, match="No space left"):
        ShardedRun(kept, KEYS, shard_size=3)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"] and (kept / "notes.txt").read_text() == "user"
