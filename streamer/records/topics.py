"""Where one cascade's records live: the catalogue's topics under a namespace, or the user's own topics.

The workers' logic speaks of topics by their catalogue names (``events``, ``escalations``, ...);
:class:`TopicNames` turns those into the topics on the broker. A namespace prefixes every
topic the cascade owns and its consumer groups, so several cascades share one cluster; an
input topic (the user's, never created or altered) replaces ``events``, an output topic
replaces ``predictions``.

>>> names = TopicNames(namespace="tickets", input_topic="support.tickets")
>>> names["events"], names["labels"], names["predictions"], names.group("student")
('support.tickets', 'tickets.labels', 'tickets.predictions', 'tickets-student')
>>> TopicNames()["dead-letter"], TopicNames().group("teacher")
('dead-letter', 'babybear-teacher')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamer.records.catalogue import EVENTS, PREDICTIONS

#: What Kafka allows in a topic name (a namespace must also fit in one).
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True)
class TopicNames:
    """Catalogue name -> topic on the broker, and role -> consumer group, for one cascade."""

    namespace: str | None = None
    input_topic: str | None = None
    output_topic: str | None = None

    def __post_init__(self) -> None:
        for what in ("namespace", "input_topic", "output_topic"):
            value = getattr(self, what)
            if value is not None and not TOPIC_NAME.match(value):
                raise ValueError(f"{what} must be letters, digits, '.', '_' or '-' (at most 200), got {value!r}")

    def __getitem__(self, name: str) -> str:
        if name == EVENTS and self.input_topic:
            return self.input_topic
        if name == PREDICTIONS and self.output_topic:
            return self.output_topic
        return f"{self.namespace}.{name}" if self.namespace else name

    def resolve(self, topic: str, catalogue_names: set[str]) -> str:
        """``topic`` as given on a command line: a catalogue name is this cascade's topic, anything else is used
        as it is."""
        return self[topic] if topic in catalogue_names else topic

    def owned(self, name: str) -> bool:
        """Whether the cascade owns (creates) the topic behind catalogue ``name``: not the user's input topic."""
        return not (name == EVENTS and self.input_topic)

    def group(self, role: str) -> str:
        """The consumer group of ``role`` (``student``, ``teacher``)."""
        return f"{self.namespace}-{role}" if self.namespace else f"babybear-{role}"
