"""Two real processes as ranks 0 and 1 of a gloo group (no torchrun: its agent would kill one rank when the other
ends and hide a rank left waiting), for the distributed tests of annotate, sharding and training."""

from __future__ import annotations

import socket
import subprocess
import sys

#: what a gloo teardown race can print after a rank's command has returned (pytorch#179291); the tests let this one
#: line follow the command's own output
TEARDOWN_ABORT = "terminate called without an active exception"


def free_port() -> int:
    """A TCP port on 127.0.0.1 free just now, for the group's MASTER_PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def output_lines(err: str) -> list[str]:
    """A rank's stderr lines, without the teardown abort line (:data:`TEARDOWN_ABORT`)."""
    return [line for line in err.strip().splitlines() if line != TEARDOWN_ABORT]


def run_two_ranks(argv: list[str], *, env: dict[str, str], port: int, timeout: float, cwd=None):
    """Run ``python argv`` as ranks 0 and 1 (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_*`` set over
    ``env``), wait up to ``timeout`` s and kill what is left. Returns the processes and their stderr texts."""
    procs = []
    for r in (0, 1):
        rank_env = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, *argv], cwd=cwd, env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return procs, errs


def the_same_error_on_every_rank(folder, errs: list[str], prefix: str) -> str:
    """Every rank ended with status 2 (its driver wrote ``rank<r>.rc`` into ``folder``) and printed one line, the
    same on every rank, starting with ``prefix`` (gloo's teardown abort line left out, see :func:`output_lines`).
    Returns that line."""
    lines = []
    for r, err in enumerate(errs):
        rc = folder / f"rank{r}.rc"
        assert rc.is_file() and rc.read_text() == "2", err[-3000:]
        got = output_lines(err)
        assert len(got) == 1 and got[0].startswith(prefix), err[-3000:]
        lines.append(got[0])
    assert all(line == lines[0] for line in lines), lines  # the same words on every rank
    return lines[0]
