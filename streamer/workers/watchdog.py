"""Broker watchdog: bounded backoff while the broker is away, a clear exit when it stays away.

The Kafka clients reconnect on their own; the watchdog decides when to stop waiting.
It probes the bootstrap servers with a Kafka request (a metadata request, with the
workers' own TLS and SASL options), so a broker that accepts connections but does not
answer (frozen, overloaded) counts as away as much as one that refuses them; a cluster
counts as there while any of its bootstrap servers answers. It logs one line per failed
probe with the next delay, and once the broker has been unreachable for ``give_up_after``
seconds calls ``on_give_up`` (the student writes its checkpoint there) and exits the
process with :data:`EXIT_BROKER_LOST`.

>>> [backoff_delay(attempt) for attempt in range(5)]
[0.5, 1.0, 2.0, 4.0, 5.0]
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Exit status of a worker that gave up on the broker.
EXIT_BROKER_LOST = 3
MAX_DELAY = 5.0
#: Seconds a probe waits for an answer (a frozen broker accepts the connection and never answers).
PROBE_TIMEOUT = 5.0


def backoff_delay(attempt: int, first: float = 0.5, cap: float = MAX_DELAY) -> float:
    """Exponential backoff: ``first`` doubled ``attempt`` times, capped at ``cap``."""
    return min(first * 2 ** attempt, cap)


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"a:9092,b:9093"`` -> ``[("a", 9092), ("b", 9093)]``."""
    out = []
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        out.append((host or "127.0.0.1", int(port)))
    return out


async def reachable(servers: list[tuple[str, int]], timeout: float = PROBE_TIMEOUT,
                    client_options: dict[str, Any] | None = None) -> bool:
    """Whether any of ``servers`` answers a Kafka metadata request within ``timeout`` seconds."""
    from aiokafka import AIOKafkaClient

    for host, port in servers:
        client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=int(timeout * 1000),
                                **(client_options or {}))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means: not answering
            continue
        finally:
            try:
                await asyncio.wait_for(client.close(), timeout)
            except Exception:  # noqa: BLE001
                pass
    return False


async def watch_broker(bootstrap: str, give_up_after: float, *, interval: float = 2.0,
                       on_give_up: Callable[[], None] | None = None,
                       exit: Callable[[int], None] = os._exit, client_options: dict[str, Any] | None = None) -> None:
    """Probe the broker forever; exit the process once it has been away for ``give_up_after`` s."""
    servers = parse_bootstrap(bootstrap)
    down_since: float | None = None
    attempt = 0
    while True:
        if await reachable(servers, client_options=client_options):
            if down_since is not None:
                log.warning("broker %s reachable again after %.0f s", bootstrap, time.monotonic() - down_since)
            down_since, attempt = None, 0
            await asyncio.sleep(interval)
            continue
        now = time.monotonic()
        down_since = down_since or now
        down = now - down_since
        if down >= give_up_after:
            log.error("broker %s unreachable for %.0f s (limit %.0f s, STREAMER_BROKER_TIMEOUT); exiting with "
                      "status %d", bootstrap, down, give_up_after, EXIT_BROKER_LOST)
            if on_give_up is not None:
                on_give_up()
            logging.shutdown()
            exit(EXIT_BROKER_LOST)
            return
        delay = min(backoff_delay(attempt), max(give_up_after - down, 0.1))
        attempt += 1
        log.warning("broker %s unreachable (attempt %d, down %.0f s); retrying in %.1f s, giving up after %.0f s",
                    bootstrap, attempt, down, delay, give_up_after)
        await asyncio.sleep(delay)
