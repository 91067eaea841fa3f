"""Decoding and encoding of the records on every topic, and dead-letter records.

Decoding never raises: a record either decodes to a dict that matches its topic's
schema, or to a :class:`Rejection` that names the reason. Rejections go to the
dead-letter topic with the original bytes.

>>> from streamer.records.catalogue import Catalogue
>>> spec = Catalogue.load()["events"]
>>> decode(b'{"id": "7", "text": "great film", "lang": "en"}', spec, max_bytes=1000)
{'id': '7', 'text': 'great film', 'lang': 'en'}
>>> decode(b'[1, 2]', spec, max_bytes=1000).reason
'schema'
>>> decode(b'\\xff\\xfe', spec, max_bytes=1000).reason
'invalid_utf8'
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import orjson

from streamer.records.catalogue import TopicSpec

#: Why a record went to the dead-letter topic.
REJECTION_REASONS = ("empty", "too_large", "invalid_utf8", "invalid_json", "schema")


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be processed, and why."""

    reason: str
    error: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def decode(value: bytes | None, spec: TopicSpec, max_bytes: int) -> dict[str, Any] | Rejection:
    """Decode one record value of topic ``spec``; never raises."""
    if not value:
        return Rejection("empty", "record value is empty")
    if len(value) > max_bytes:
        return Rejection("too_large", f"record is {len(value)} bytes, the limit is {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"not valid UTF-8: {uexc}")
        return Rejection("invalid_json", f"not valid JSON: {exc}")
    except Exception as exc:  # noqa: BLE001 - the decoder must never raise
        return Rejection("invalid_json", f"could not decode JSON: {exc!r}")
    error = spec.validate(obj)
    if error is not None:
        return Rejection("schema", error)
    return obj


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def dead_letter(value: bytes | None, rejection: Rejection, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The dead-letter record for a rejected value: reason, source and the original bytes."""
    record: dict[str, Any] = {
        "reason": rejection.reason,
        "error": rejection.error,
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "dead_lettered_time": now_ms(),
    }
    if value:
        try:
            record["value_text"] = value.decode("utf-8")
        except UnicodeDecodeError:
            record["value_b64"] = base64.b64encode(value).decode("ascii")
    return record


def dead_letter_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}/{partition}/{offset}".encode()
