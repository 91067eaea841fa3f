"""One place that turns the settings into Kafka clients: aiokafka producers and consumers.

Security (SASL, TLS) is built here once, for every client of every worker and command.

>>> from streamer.settings import Settings
>>> clients = KafkaClients(Settings(broker="kafka://kafka:9092", sasl_mechanism="PLAIN", sasl_username="u",
...                                 sasl_password="p", security_protocol="SASL_PLAINTEXT"))
>>> clients.bootstrap, clients.security()["sasl_plain_username"]
('kafka:9092', 'u')
>>> KafkaClients(Settings()).security()
{'security_protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streamer.settings import Settings

#: Producer batching every worker and command uses (measured: 35k msg/s on the embedded broker).
PRODUCER_LINGER_MS = 5
PRODUCER_MAX_BATCH_BYTES = 256 * 1024


class KafkaClients:
    """A typed connection config: bootstrap servers, security and timings, turned into clients on demand."""

    def __init__(self, settings: "Settings") -> None:
        self.settings = settings
        self.bootstrap = settings.bootstrap_servers

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

    def producer(self, **overrides: Any) -> "AIOKafkaProducer":
        from aiokafka import AIOKafkaProducer

        options = {"linger_ms": PRODUCER_LINGER_MS, "max_batch_size": PRODUCER_MAX_BATCH_BYTES,
                   "compression_type": self.compression, **overrides}
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, **options, **self.security())

    def consumer(self, group_id: str | None = None, **overrides: Any) -> "AIOKafkaConsumer":
        """A consumer from the earliest offset with manual commits and the short fetch wait; in ``group_id``
        (with the settings' session timing) or, without one, outside any group (partitions assigned by hand)."""
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        options: dict[str, Any] = {"group_id": group_id, "enable_auto_commit": False,
                                   "auto_offset_reset": "earliest", "fetch_max_wait_ms": s.fetch_max_wait_ms}
        if group_id is not None:
            options.update(session_timeout_ms=int(s.session_timeout * 1000),
                           heartbeat_interval_ms=int(s.heartbeat_interval * 1000))
        options.update(overrides)
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **options, **self.security())
