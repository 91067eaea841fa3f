"""Clean stops: SIGTERM stops ``streamer demo`` as Ctrl-C does, and no broker or worker outlives it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.workers.supervisor import stop_processes

STOP_WITHIN_S = 30.0


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or ``None`` if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` if it is gone or a zombie."""
    fields = proc_stat(pid)
    return None if fields is None or fields[0] in ("Z", "X") else fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``: pid -> start time (to tell a reused pid apart)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out and (started := start_time(child)) is not None:
                out[child] = started
                todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_survivors(procs: dict[int, str]) -> list[str]:
    """The command lines of the processes of ``procs`` still running, which are then SIGKILLed (a failing
    test leaves nothing behind either)."""
    alive = [pid for pid, started in procs.items() if start_time(pid) == started]
    lines = [cmdline(pid) for pid in alive]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return lines


def wait_until(condition, demo: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert demo.poll() is None, f"the demo exited early ({demo.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for the demo:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def default_sigint() -> None:
    """In the child before it runs: SIGINT back to its default, whatever the test run was started with."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.integration
@pytest.mark.parametrize(("when", "signals", "status"), [
    ("streaming", (signal.SIGTERM,), 143),
    ("streaming", (signal.SIGINT,), 130),
    ("streaming", (signal.SIGTERM, signal.SIGINT), 143),  # the second lands in the cleanup (workers take ~1 s)
    ("starting", (signal.SIGTERM,), 143),  # the broker is up, the workers are starting
], ids=["sigterm-streaming", "sigint-streaming", "sigterm-then-ctrl-c-in-cleanup", "sigterm-starting"])
def test_demo_stops_its_broker_and_workers(tmp_path, quick_teacher, when, signals, status):
    data, log = tmp_path / "data", tmp_path / "demo.log"
    with log.open("wb") as out:  # --rate keeps the 300 events streaming for 30 s: the signal lands mid-stream
        # Ctrl-C as in a terminal: a shell starts background jobs with SIGINT ignored, and a child inherits that
        demo = subprocess.Popen([sys.executable, "-m", "streamer", "demo", "--events", "300", "--rate", "10",
                                 "--teacher-model", quick_teacher, "--data-dir", str(data)],
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    try:
        if when == "streaming":
            wait_until(lambda: all(list(data.glob(f"runs/*/{role}.ready")) for role in ("student", "teacher")),
                       demo, log)
            wait_until(lambda: "Streaming" in log.read_text(), demo, log)
        else:  # the broker is up and a worker is starting
            wait_until(lambda: any(" worker " in cmdline(pid) for pid in descendants(demo.pid)), demo, log)
        children = descendants(demo.pid)
        roles = " | ".join(cmdline(pid) for pid in children)
        assert "tansu" in roles and " worker student " in roles, roles
        started = time.monotonic()
        for sig in signals:
            demo.send_signal(sig)
            time.sleep(0.2)
        code = demo.wait(timeout=STOP_WITHIN_S)
    finally:
        stop_processes([demo], timeout=1.0)
    assert reap_survivors(children) == [], log.read_text()[-3000:]
    assert code == status, log.read_text()[-3000:]
    assert time.monotonic() - started < STOP_WITHIN_S


def test_stop_processes_kills_what_ignores_sigterm_and_is_idempotent():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    stop_processes([stubborn, polite, None], timeout=1.0)
    assert time.monotonic() - started < 10
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL
    stop_processes([stubborn, polite], timeout=1.0)  # again: nothing to do, no error
    stubborn.stdout.close()
