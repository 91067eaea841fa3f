"""Worker processes under supervision: start, wait until ready, crash on purpose, stop cleanly.

The demo, the benchmark and the integration tests run real ``streamer worker`` processes
through :class:`WorkerProcesses`; :func:`shutdown` stops them and the broker so that none
outlives the command, even when SIGINT or SIGTERM arrives again during the cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from streamer.settings import Settings

if TYPE_CHECKING:
    from streamer.kafka import EmbeddedBroker

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SignalHandler = Callable[[int, FrameType | None], None]


class WorkerProcessError(RuntimeError):
    """A worker process exited or did not become ready."""


@contextmanager
def stop_signals_call(handler: SignalHandler) -> Iterator[None]:
    """Within the block SIGINT and SIGTERM call ``handler`` instead of their own handlers (which come back
    afterwards). Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (starting a child: a KeyboardInterrupt inside
    ``Popen`` would lose the child's handle), then deliver them to the usual handlers."""
    pending: list[int] = []
    with stop_signals_call(lambda signum, frame: pending.append(signum)):
        yield
    for signum in dict.fromkeys(pending):
        signal.raise_signal(signum)


def stop_processes(procs: Iterable[subprocess.Popen | None], timeout: float = 10.0) -> None:
    """SIGTERM every live process of ``procs``, give them ``timeout`` seconds in all, then SIGKILL the rest.

    Idempotent: processes that already exited are only reaped."""
    live = [proc for proc in procs if proc is not None]
    for proc in live:
        proc.terminate()  # a no-op once it has exited
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_processes(procs: Iterable[subprocess.Popen | None]) -> None:
    """SIGKILL every live process of ``procs`` at once (safe in a signal handler; a no-op for exited ones)."""
    for proc in procs:
        if proc is not None:
            proc.kill()


class WorkerProcesses:
    """The student and teacher workers as child processes, logging to files.

    The children get ``settings`` (as ``STREAMER_*`` variables), then ``env`` on top.
    """

    def __init__(self, settings: Settings, broker_url: str, teacher_model: str, run_dir: Path,
                 env: dict[str, str] | None = None, metrics_ports: dict[str, int] | None = None) -> None:
        self.settings = settings
        self.broker_url = broker_url
        self.teacher_model = teacher_model
        self.run_dir = run_dir
        self.env = {**os.environ, **settings.to_env(), **(env or {})}
        self.metrics_ports = metrics_ports or {}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, role: str, name: str | None = None) -> None:
        """Start (or restart) a ``role`` worker called ``name`` (default: the role); its log is appended to
        ``<run_dir>/<name>.log``, and a student checkpoints to ``<run_dir>/<name>.ckpt``."""
        name = name or role
        ready = self.run_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "streamer", "worker", role, "--broker", self.broker_url,
               "--ready-file", str(ready), "--data-dir", str(self.settings.data_dir),
               "--teacher-model", self.teacher_model]  # students read the teacher's distilled embeddings
        if role != "teacher":  # a checkpoint of this run only: the embedded broker forgets everything between runs
            cmd += ["--checkpoint-path", str(self.run_dir / f"{name}.ckpt")]
        if name in self.metrics_ports:
            cmd += ["--metrics-port", str(self.metrics_ports[name])]
        with open(self.run_dir / f"{name}.log", "ab") as log, stop_signals_deferred():
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def kill(self, name: str) -> None:
        """SIGKILL worker ``name`` (a crash: no checkpoint, no commit, no flush)."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def terminate(self, name: str, timeout: float = 30.0) -> int:
        """Stop worker ``name`` cleanly (SIGTERM: it commits, checkpoints and flushes); its exit status."""
        proc = self.procs.pop(name)
        proc.terminate()
        return proc.wait(timeout)

    def wait_ready(self, timeout: float = 120.0, names: tuple[str, ...] | None = None) -> None:
        """Wait until every worker (or those in ``names``) has its partitions."""
        deadline = time.monotonic() + timeout
        for role, proc in self.procs.items():
            if names is not None and role not in names:
                continue
            ready = self.run_dir / f"{role}.ready"
            while not ready.exists():
                if proc.poll() is not None:
                    raise WorkerProcessError(f"the {role} worker exited with code {proc.returncode}; "
                                    f"see {self.run_dir / (role + '.log')}")
                if time.monotonic() > deadline:
                    raise WorkerProcessError(f"the {role} worker was not ready within {timeout:.0f} s; "
                                    f"see {self.run_dir / (role + '.log')}")
                time.sleep(0.1)

    def peak_memory_mb(self) -> dict[str, float | None]:
        """Peak resident memory (VmHWM) of each running worker, in MB; ``None`` where unavailable."""
        out: dict[str, float | None] = {}
        for role, proc in self.procs.items():
            out[role] = None
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        out[role] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                pass
        return out

    def check_alive(self) -> None:
        for role, proc in self.procs.items():
            if proc.poll() is not None:
                raise WorkerProcessError(f"the {role} worker exited with code {proc.returncode}; "
                                f"see {self.run_dir / (role + '.log')}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every worker (they commit, checkpoint and flush), SIGKILL those still running after
        ``timeout`` seconds. Idempotent."""
        stop_processes(self.procs.values(), timeout)


def shutdown(workers: WorkerProcesses, broker: EmbeddedBroker | None = None) -> None:
    """Stop ``workers``, then ``broker`` (the workers commit to it on their way out), and leave neither running.

    A SIGINT or SIGTERM during this (a second Ctrl-C, an impatient process manager) SIGKILLs them all at
    once instead of interrupting the cleanup half-way."""
    def children() -> list[subprocess.Popen | None]:
        return [*workers.procs.values(), broker.process if broker is not None else None]

    with stop_signals_call(lambda signum, frame: kill_processes(children())):
        workers.stop()
        if broker is not None:
            broker.stop()
