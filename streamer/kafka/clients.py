"""One place that turns the settings and the broker's profile into Kafka clients: aiokafka producers and consumers.

Security (SASL, TLS), group timing and delivery settings are built here once, for every client of
every worker and command. :meth:`KafkaClients.connect` waits for the broker and profiles it
(:mod:`streamer.kafka.broker_profile`), so the clients follow Apache Kafka's rules on Kafka and the
embedded broker's short timings only on the embedded broker.

>>> from streamer.settings import Settings
>>> clients = KafkaClients(Settings(broker="kafka://kafka:9092", sasl_mechanism="PLAIN", sasl_username="u",
...                                 sasl_password="p", security_protocol="SASL_PLAINTEXT"))
>>> clients.bootstrap, clients.security()["sasl_plain_username"]
('kafka:9092', 'u')
>>> KafkaClients(Settings()).security()
{'security_protocol': 'PLAINTEXT'}
>>> clients.timings  # not probed yet: Apache Kafka's client defaults
Timings(session_timeout=45.0, heartbeat_interval=3.0, fetch_max_wait=0.5)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamer.kafka.broker_profile import BrokerProfile, Timings, probe_broker, timing_problems
from streamer.kafka.partitioner import JavaPartitioner

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streamer.settings import Settings

log = logging.getLogger(__name__)

#: Producer batching every worker and command uses (measured: 35k msg/s on the embedded broker).
PRODUCER_LINGER_MS = 5
PRODUCER_MAX_BATCH_BYTES = 256 * 1024
#: How long past ``broker_timeout`` a record may wait in the producer for the broker: records are never given up
#: while the worker still waits for the broker (it exits first, uncommitted, and they are produced again).
DELIVERY_MARGIN_S = 30.0


class KafkaClients:
    """A typed connection config: bootstrap servers, security, the broker's profile and the timings that follow,
    turned into clients on demand."""

    def __init__(self, settings: "Settings", profile: BrokerProfile | None = None) -> None:
        self.settings = settings
        self.bootstrap = settings.bootstrap_servers
        self.profile = profile or BrokerProfile.assumed(settings.broker_kind)

    @classmethod
    async def connect(cls, settings: "Settings", timeout: float | None = None, *,
                      producing: bool = True) -> "KafkaClients":
        """Wait (up to ``timeout`` s, default ``broker_timeout``) for the broker, profile it and return the clients
        for it (``producing=False``: only consumers will be built, so idempotence is not asked about);
        :class:`~streamer.kafka.embedded_broker.BrokerError` when it does not answer."""
        clients = cls(settings)
        wait = max(settings.broker_timeout if timeout is None else timeout, 1.0)
        clients.profile = await probe_broker(clients.bootstrap, clients.security(), timeout=wait,
                                             broker_kind=settings.broker_kind, producing=producing)
        log.debug("broker %s is %s", settings.broker_url, clients.profile.describe())
        if clients.profile.kind == "kafka":
            for problem in timing_problems(clients.timings):
                log.warning("on Apache Kafka: %s (STREAMER_SESSION_TIMEOUT, STREAMER_HEARTBEAT_INTERVAL, "
                            "STREAMER_FETCH_MAX_WAIT)", problem)
        return clients

    @property
    def timings(self) -> Timings:
        """The group timing in force: what the settings set, the rest from the broker's profile."""
        s, default = self.settings, self.profile.timings()
        return Timings(session_timeout=s.session_timeout or default.session_timeout,
                       heartbeat_interval=s.heartbeat_interval or default.heartbeat_interval,
                       fetch_max_wait=s.fetch_max_wait or default.fetch_max_wait)

    def durability(self) -> tuple[int, int]:
        """Replication factor and ``min.insync.replicas`` of the topics this system creates: what the settings say,
        else min(3, brokers in the cluster) and all replicas but one (at most 2)."""
        factor = self.settings.replication_factor or self.profile.replication_factor()
        return factor, self.settings.min_insync_replicas or self.profile.min_insync_replicas(factor)

    def security(self) -> dict[str, Any]:
        """Security options for aiokafka clients (only the protocol for plain text)."""
        s = self.settings
        options: dict[str, Any] = {"security_protocol": s.security_protocol}
        if s.sasl_mechanism:
            options.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.sasl_username,
                           sasl_plain_password=s.sasl_password)
        if s.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=s.ssl_cafile, certfile=s.ssl_certfile,
                                                        keyfile=s.ssl_keyfile)
        return options

    @property
    def compression(self) -> str | None:
        """The producers' codec (``None``: uncompressed). Consumers read every codec whatever this says."""
        return None if self.settings.compression_type == "none" else self.settings.compression_type

    def producer_options(self) -> dict[str, Any]:
        """Every record acknowledged by all in-sync replicas (``acks=all``), idempotent where the broker supports
        it, and kept for the broker as long as the worker waits for it."""
        delivery_ms = int(1000 * (max(self.settings.broker_timeout, 10.0) + DELIVERY_MARGIN_S))
        return {"linger_ms": PRODUCER_LINGER_MS, "max_batch_size": PRODUCER_MAX_BATCH_BYTES,
                "compression_type": self.compression, "acks": "all", "enable_idempotence": self.profile.idempotence,
                "request_timeout_ms": delivery_ms, "partitioner": JavaPartitioner()}

    def producer(self, **overrides: Any) -> "AIOKafkaProducer":
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, **{**self.producer_options(), **overrides},
                                **self.security())

    def consumer(self, group_id: str | None = None, **overrides: Any) -> "AIOKafkaConsumer":
        """A consumer from the earliest offset with manual commits and the profile's fetch wait; in ``group_id``
        (with the profile's session timing) or, without one, outside any group (partitions assigned by hand)."""
        from aiokafka import AIOKafkaConsumer

        timings = self.timings
        options: dict[str, Any] = {"group_id": group_id, "enable_auto_commit": False,
                                   "auto_offset_reset": "earliest",
                                   "fetch_max_wait_ms": max(1, int(timings.fetch_max_wait * 1000))}
        if group_id is not None:
            options.update(session_timeout_ms=int(timings.session_timeout * 1000),
                           heartbeat_interval_ms=int(timings.heartbeat_interval * 1000))
        options.update(overrides)
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **options, **self.security())
