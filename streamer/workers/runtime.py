"""What every worker process shares, around its transport.

* ``Send``: how decision logic hands a record to a producer, so the same logic runs on the
  broker and in process against a collecting ``send`` (tests, ``streamer evaluate``);
* :func:`send_dead_letter`: every rejected record goes to ``dead-letter`` the same way;
* :class:`WorkerRuntime`: stop signals, the ready file, the consumer-lag gauge, the broker
  watchdog and the periodic summary line, run as one background task.

>>> import asyncio
>>> from streamer.observability.metrics import WorkerMetrics
>>> from streamer.records import Rejection
>>> sent = []
>>> async def send(topic, key, value, headers=()): sent.append((topic, key))
>>> m = WorkerMetrics("student")
>>> asyncio.run(send_dead_letter(m, send, b"{oops", Rejection("invalid_json", "bad"), "events", 2, 7))
>>> sent, m.value("streamer_dead_letters_total", topic="events", reason="invalid_json")
([('dead-letter', b'events/2/7')], 1.0)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from streamer.kafka.clients import KafkaClients
from streamer.observability.metrics import WorkerMetrics
from streamer.records import DEAD_LETTER, Rejection, dead_letter, dead_letter_key, encode
from streamer.settings import Settings
from streamer.workers.watchdog import watch_broker

log = logging.getLogger(__name__)

#: Kafka headers of a record, carried from an event to its escalation and its prediction unchanged.
Headers = Sequence[tuple[str, bytes]]


class Send(Protocol):
    """Hands one record to the producer (resolves once it is queued). ``topic`` is a catalogue name; the
    transport maps it to the cascade's topic on the broker (:class:`~streamer.records.topics.TopicNames`)."""

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None: ...

SUMMARY_INTERVAL = 10.0


class RetryBatch(Exception):
    """Raised by a worker's logic that cannot handle a batch now (a teacher outage) and has sent nothing for it:
    the worker hands the same records over again after ``delay`` seconds, waiting outside its batch lock."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry the batch in {delay:.1f} s")
        self.delay = delay


class Partition(Protocol):
    topic: str
    partition: int


async def send_dead_letter(metrics: WorkerMetrics, send: Send, value: bytes | None, rejection: Rejection,
                           topic: str, partition: int, offset: int) -> None:
    """Send a rejected record to ``dead-letter`` with its reason and source, and count it."""
    metrics.dead_letters.labels(topic=topic, reason=rejection.reason).inc()
    log.debug("dead-lettered %s/%d@%d: %s", topic, partition, offset, rejection.error)
    await send(DEAD_LETTER, dead_letter_key(topic, partition, offset),
               encode(dead_letter(value, rejection, topic, partition, offset)))


async def every(seconds: float, fn: Callable[[], Any]) -> None:
    """Call ``fn`` every ``seconds`` (awaiting it when it returns an awaitable)."""
    while True:
        await asyncio.sleep(seconds)
        result = fn()
        if asyncio.iscoroutine(result):
            await result


class WorkerRuntime:
    """The lifecycle services of one worker process.

    ``summary`` is logged every :data:`SUMMARY_INTERVAL` seconds; ``on_broker_lost`` runs
    before the watchdog exits the process (the student writes its checkpoint there).
    """

    def __init__(self, settings: Settings, metrics: WorkerMetrics, *, ready_file: Path | None = None,
                 summary: Callable[[], None] | None = None, on_broker_lost: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ready_file = ready_file
        self.summary = summary
        self.on_broker_lost = on_broker_lost

    def partitions_assigned(self, assigned: Iterable[Partition]) -> None:
        """Log the new assignment and touch the ready file (supervisors wait for it)."""
        log.info("partitions assigned: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))
        if self.ready_file is not None:
            Path(self.ready_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.ready_file).touch()

    def stop_on_signals(self) -> asyncio.Event:
        """An event set on SIGTERM or Ctrl-C: the worker then stops consuming, commits and exits."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return stop

    def record_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Set the lag gauge from ``(topic, partition, records behind)`` of each assigned partition."""
        for topic, partition, lag in lags:
            self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(lag, 0))

    def forget_lag(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag gauge (its new owner reports it)."""
        try:
            self.metrics.consumer_lag.remove(topic, str(partition))
        except KeyError:
            pass

    async def run_background(self, timers: Mapping[str, tuple[float, Callable[[], Any]]] | None = None) -> None:
        """The watchdog, the summary and ``timers`` ({name: (seconds, fn)}); fails as soon as one of them fails."""
        jobs: list[Awaitable[None]] = []
        if self.settings.broker_timeout > 0:
            jobs.append(watch_broker(self.settings.bootstrap_servers, self.settings.broker_timeout,
                                     on_give_up=self.on_broker_lost,
                                     client_options=KafkaClients(self.settings).security()))
        if self.summary is not None:
            jobs.append(every(SUMMARY_INTERVAL, self.summary))
        jobs += [self._named(name, every(seconds, fn)) for name, (seconds, fn) in (timers or {}).items()]
        await asyncio.gather(*jobs)

    @staticmethod
    async def _named(name: str, job: Awaitable[None]) -> None:
        try:
            await job
        except Exception as exc:
            raise RuntimeError(f"worker timer {name!r} failed") from exc
