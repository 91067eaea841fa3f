"""The Faust application each worker runs, configured for the embedded broker's quirks.

* short group session timeout (Tansu holds JoinGroup for half of it);
* no leader topic, no topic declaration: topics come from the catalogue;
* raw bytes in and out: records are JSON through orjson, validated by the catalogue;
* the producer compresses with ``compression_type`` like every other producer of the system;
* earliest offset reset, at-least-once processing (no transactions on Tansu).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust

from streamer.kafka.clients import KafkaClients
from streamer.observability.logs import logging_config
from streamer.settings import Settings

log = logging.getLogger(__name__)


def _use_app_fetch_wait() -> None:
    """Let each app set its consumer's fetch wait (Faust hard-codes 1.5 s).

    Tansu answers a fetch only when the wait expires, even when records are there, so the
    wait is a floor on the latency of every hop (measured: 1.5 s wait gives 0.62 s median
    latency for one record, 0.05 s gives 1 ms).
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "streamer_fetch_wait", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    create_worker_consumer.streamer_fetch_wait = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


def make_app(settings: Settings, role: str) -> faust.App:
    """A Faust app whose id (and so consumer group) is the cascade's group of ``role`` (``babybear-<role>``, or
    ``<namespace>-<role>``)."""
    _use_app_fetch_wait()
    datadir = Path(settings.data_dir) / "faust" / settings.topics.group(role)
    datadir.parent.mkdir(parents=True, exist_ok=True)
    clients = KafkaClients(settings)
    app = faust.App(
        settings.topics.group(role),
        broker=settings.broker_url,
        broker_credentials=clients.faust_credentials(),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        store="memory://",
        datadir=str(datadir),
        topic_disable_leader=True,
        topic_allow_declare=False,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_linger=0.005,
        producer_compression_type=clients.compression,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    return app


def raw_topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def consumer_lags(app: faust.App) -> Iterator[tuple[str, int, int]]:
    """``(topic, partition, high watermark - committed offset)`` of each assigned partition (none while the
    consumer is not started or rebalancing, or before a partition's first fetch response)."""
    try:
        consumer = app.consumer
        assigned = consumer.assignment()
    except Exception:  # noqa: BLE001 - not started or rebalancing: try again next tick
        return
    committed = getattr(consumer, "_committed_offset", {})
    for tp in assigned:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch response yet for this partition
            continue
        if highwater is not None:
            yield tp.topic, tp.partition, highwater - (committed.get(tp) or 0)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Run ``app`` until SIGTERM or Ctrl-C (Faust handles the signals, commits and producer flush)."""

    @app.on_before_shutdown.connect
    async def _stopping(sender: Any, **kwargs: Any) -> None:
        log.info("shutting down: consumer stopped and offsets committed, flushing the producer")

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False,
                          logging_config=logging_config(settings.log_level, settings.log_format))
    worker.execute_from_commandline()
