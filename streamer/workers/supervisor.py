"""Worker processes under supervision: start, wait until ready, crash on purpose, stop cleanly.

The demo, the benchmark and the integration tests run real ``streamer worker`` processes
through :class:`WorkerProcesses`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamer.settings import Settings


class WorkerProcessError(RuntimeError):
    """A worker process exited or did not become ready."""


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

    def start(self, role: str) -> None:
        """Start (or restart) ``role``; its log is appended to ``<run_dir>/<role>.log``."""
        ready = self.run_dir / f"{role}.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "streamer", "worker", role, "--broker", self.broker_url,
               "--ready-file", str(ready), "--data-dir", str(self.settings.data_dir)]
        if role == "teacher":
            cmd += ["--teacher-model", self.teacher_model]
        else:  # a checkpoint of this run only: the embedded broker forgets everything between runs
            cmd += ["--checkpoint-path", str(self.run_dir / "student.ckpt")]
        if role in self.metrics_ports:
            cmd += ["--metrics-port", str(self.metrics_ports[role])]
        log = open(self.run_dir / f"{role}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[role] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def kill(self, role: str) -> None:
        """SIGKILL ``role`` (a crash: no checkpoint, no commit, no flush)."""
        proc = self.procs[role]
        proc.kill()
        proc.wait()

    def wait_ready(self, timeout: float = 120.0, roles: tuple[str, ...] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for role, proc in self.procs.items():
            if roles is not None and role not in roles:
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

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
