"""The topic catalogue: names, partitions, retention and value schemas of every topic.

The catalogue lives in ``topics/catalogue.json`` at the top of the repository
(installed copies carry it under ``share/babybear-streamer/topics``).

>>> cat = Catalogue.load()
>>> cat["events"].partitions >= 1
True
>>> cat["events"].validate({"id": "1", "text": "fine"}) is None
True
>>> cat["events"].validate({"id": "", "text": "x"})
'data.id must be longer than or equal to 1 characters'
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema
import orjson

from streamer.records.fast_check import compile_check

if TYPE_CHECKING:
    from streamer.kafka.clients import KafkaClients
    from streamer.records.topics import TopicNames
    from streamer.settings import Settings

log = logging.getLogger(__name__)

EVENTS = "events"
ESCALATIONS = "escalations"
LABELS = "labels"
PREDICTIONS = "predictions"
DEAD_LETTER = "dead-letter"
SNAPSHOTS = "snapshots"
REQUIRED_TOPICS = (EVENTS, ESCALATIONS, LABELS, PREDICTIONS, DEAD_LETTER, SNAPSHOTS)


class CatalogueError(RuntimeError):
    """The catalogue file is missing or malformed, or the broker disagrees with it."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the catalogue."""

    name: str
    partitions: int
    key: str
    cleanup_policy: str
    retention_ms: int
    value_schema: dict[str, Any]
    description: str = ""
    _validator: Callable[[Any], Any] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    #: says yes to a value the schema accepts, fast (:mod:`streamer.records.fast_check`); ``None``: none compiled
    _accepts: Callable[[Any], bool] | None = field(repr=False, compare=False, default=None)

    def validate(self, value: Any) -> str | None:
        """``None`` when ``value`` matches the schema, else the first error as text."""
        if self._accepts is not None and self._accepts(value):
            return None
        try:
            self._validator(value)
        except fastjsonschema.JsonSchemaException as exc:
            return str(exc.message)
        return None

    def topic_configs(self, min_insync_replicas: int = 1) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms),
                "min.insync.replicas": str(min_insync_replicas)}


class Catalogue:
    """All topics, loaded from the catalogue file."""

    def __init__(self, specs: dict[str, TopicSpec], path: Path) -> None:
        missing = [name for name in REQUIRED_TOPICS if name not in specs]
        if missing:
            raise CatalogueError(f"{path}: the catalogue lacks required topics {missing}")
        self.specs = specs
        self.path = path

    @classmethod
    def load(cls, path: Path | None = None) -> "Catalogue":
        path = path or default_catalogue_path()
        try:
            doc = orjson.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise CatalogueError(f"topic catalogue not found at {path}") from exc
        except orjson.JSONDecodeError as exc:
            raise CatalogueError(f"{path} is not valid JSON: {exc}") from exc
        specs = {}
        for name, raw in doc.get("topics", {}).items():
            try:
                specs[name] = TopicSpec(
                    name=name,
                    partitions=int(raw["partitions"]),
                    key=str(raw.get("key", "")),
                    cleanup_policy=str(raw.get("cleanup_policy", "delete")),
                    retention_ms=int(raw.get("retention_ms", 604800000)),
                    value_schema=raw["value_schema"],
                    description=str(raw.get("description", "")),
                    _validator=fastjsonschema.compile(raw["value_schema"]),
                    _accepts=compile_check(raw["value_schema"]),
                )
            except (KeyError, TypeError, ValueError, fastjsonschema.JsonSchemaDefinitionException) as exc:
                raise CatalogueError(f"{path}: topic {name!r} is malformed: {exc!r}") from exc
        return cls(specs, path)

    def __getitem__(self, name: str) -> TopicSpec:
        return self.specs[name]

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self.specs.values())


def default_catalogue_path() -> Path:
    """``topics/catalogue.json`` of the checkout, else the installed copy."""
    candidates = [
        Path(__file__).resolve().parents[2] / "topics" / "catalogue.json",
        Path(sys.prefix) / "share" / "babybear-streamer" / "topics" / "catalogue.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


async def create_topics(catalogue: Catalogue, clients: "KafkaClients", timeout: float = 30.0,
                        names: "TopicNames | None" = None) -> dict[str, str]:
    """Create every catalogue topic the cascade owns (``names``: its namespace and own input/output topics)
    that the broker lacks, replicated as ``clients.durability()`` says; check those that exist. The user's input
    topic is never created or altered.

    Returns ``{topic: "created" | "exists"}``. Raises :class:`CatalogueError` when an existing topic has a
    partition count other than the catalogue's; an existing topic with fewer replicas than asked for is reported
    with a warning (Kafka cannot add replicas at creation time; ``kafka-reassign-partitions.sh`` can).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from streamer.records.topics import TopicNames

    names = names or TopicNames()
    factor, min_insync = clients.durability()
    owned = {names[spec.name]: spec for spec in catalogue if names.owned(spec.name)}
    admin = AIOKafkaAdminClient(bootstrap_servers=clients.bootstrap, request_timeout_ms=int(timeout * 1000),
                                **clients.security())
    await asyncio.wait_for(admin.start(), timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in owned if topic not in existing]
        if missing:
            await admin.create_topics([NewTopic(topic, owned[topic].partitions, factor,
                                                topic_configs=owned[topic].topic_configs(min_insync))
                                       for topic in missing])
            log.info("created %s with replication factor %d and min.insync.replicas %d", ", ".join(missing), factor,
                     min_insync)
        described = await admin.describe_topics(list(owned))
        for topic in described:
            name = topic["topic"]
            want = owned[name].partitions
            partitions = topic.get("partitions", [])
            if len(partitions) != want:
                raise CatalogueError(
                    f"topic {name!r} has {len(partitions)} partitions on the broker but the catalogue says {want}; "
                    "delete it or use a fresh broker"
                )
            replicas = min((len(p.get("replicas") or []) for p in partitions), default=0)
            if name not in missing and 0 < replicas < factor:
                log.warning("topic %s exists with replication factor %d, below the %d asked for: losing a broker "
                            "can lose its records", name, replicas, factor)
        return {topic: ("created" if topic in missing else "exists") for topic in owned}
    finally:
        await admin.close()


async def ensure_topics(settings: "Settings", catalogue: Catalogue | None = None, timeout: float = 30.0
                        ) -> dict[str, str]:
    """:func:`create_topics` for the cascade ``settings`` name, on the broker they name (waited for and profiled
    first, so the replication factor fits the cluster)."""
    from streamer.kafka.clients import KafkaClients

    clients = await KafkaClients.connect(settings, timeout=timeout)
    return await create_topics(catalogue or Catalogue.load(settings.catalogue_path), clients, timeout=timeout,
                               names=settings.topics)
