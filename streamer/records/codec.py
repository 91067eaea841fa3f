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
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from streamer.records.catalogue import TopicSpec

#: Why :func:`decode` rejects a record.
DECODE_REASONS = ("empty", "too_large", "invalid_utf8", "invalid_json", "schema")
#: Why a record went to the dead-letter topic: a decode reason, or a failure while processing it
#: (``processing_error``: the student or an encoder raised; ``teacher_error``: the teacher raised on this record
#: alone; ``unauthenticated``: a label without a valid signature while ``label_key`` is set).
REJECTION_REASONS = (*DECODE_REASONS, "processing_error", "teacher_error", "unauthenticated")
#: Most bytes of the original value a dead-letter record carries (its length and SHA-256 always come along),
#: so a dead-letter record stays far below any producer's request size whatever the input.
DEAD_LETTER_VALUE_BYTES = 64 * 1024
DEAD_LETTER_ERROR_CHARS = 2000
#: What an escalation, a label or a prediction adds to the event it is made from (field names, the student's guess,
#: versions, times, a signature), with room to spare.
INTERNAL_RECORD_OVERHEAD = 16 * 1024
#: Largest ``max_text_bytes`` allowed: every record made from an accepted event (at most
#: :func:`internal_record_limit` bytes) then stays below Kafka's default message limit (``message.max.bytes``, 1 MiB).
MAX_TEXT_BYTES_LIMIT = 400_000


def internal_record_limit(max_text_bytes: int) -> int:
    """Largest escalation, label or prediction made from an event of at most ``max_text_bytes``: the event's text
    and fields once more (JSON re-encoding can lengthen numbers, ``1e5`` -> ``100000.0``) plus the overhead. The
    workers decode ``escalations`` and ``labels`` against it, so an event accepted at the door is never refused
    as too large on the way to its answer.

    >>> internal_record_limit(100_000)
    216384
    """
    return 2 * max_text_bytes + INTERNAL_RECORD_OVERHEAD


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be processed, why, and the type of the exception behind it (if one was raised)."""

    reason: str
    error: str
    exception: str | None = None

    @classmethod
    def from_exception(cls, reason: str, exc: BaseException) -> "Rejection":
        """``Rejection("teacher_error", "ValueError: ...", "ValueError")`` for ``exc``."""
        return cls(reason, f"{type(exc).__name__}: {exc}", type(exc).__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def decode(value: bytes | None, spec: TopicSpec, max_bytes: int) -> dict[str, Any] | Rejection:
    """Decode one record value of topic ``spec``; never raises."""
    obj = _parse(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    error = spec.validate(obj)
    return obj if error is None else Rejection("schema", error)


def _parse(value: bytes | None, max_bytes: int) -> Any:
    """The JSON value of a record, or the :class:`Rejection` that says why it has none."""
    if not value:
        return Rejection("empty", "record value is empty")
    if len(value) > max_bytes:
        return Rejection("too_large", f"record is {len(value)} bytes, the limit is {max_bytes}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"not valid UTF-8: {uexc}")
        return Rejection("invalid_json", f"not valid JSON: {exc}")
    except Exception as exc:  # noqa: BLE001 - the decoder must never raise
        return Rejection("invalid_json", f"could not decode JSON: {exc!r}")


def field_at(obj: Any, path: str) -> Any:
    """The value at dotted ``path`` in nested JSON objects, ``None`` where there is none.

    >>> field_at({"ticket": {"body": "hi"}}, "ticket.body"), field_at({"ticket": 3}, "ticket.body")
    ('hi', None)
    """
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _without(obj: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of ``obj`` without the value at dotted ``path`` (only the objects along the path are copied)."""
    head, _, rest = path.partition(".")
    out = dict(obj)
    if not rest:
        out.pop(head, None)
    elif isinstance(out.get(head), dict):
        out[head] = _without(out[head], rest)
    return out


def decode_event(value: bytes | None, key: bytes | None, spec: TopicSpec, max_bytes: int, *,
                 id_field: str = "id", text_field: str = "text") -> dict[str, Any] | Rejection:
    """An input record as an event ``{"id", "text", ...its other fields}``; never raises.

    The id and the text are read at dotted paths of the JSON value; without an id there, the Kafka key is the
    id. The text is not carried again at its own path (it never rides into predictions).

    >>> from streamer.records.catalogue import Catalogue
    >>> spec = Catalogue.load()["events"]
    >>> decode_event(b'{"ticket": {"body": "printer on fire"}, "team": "it"}', b"T-7", spec, 1000,
    ...              id_field="ticket.id", text_field="ticket.body")
    {'ticket': {}, 'team': 'it', 'id': 'T-7', 'text': 'printer on fire'}
    >>> decode_event(b'{"body": "no id anywhere"}', None, spec, 1000, text_field="body").error
    "no id: the value has no 'id' and the record has no key"
    """
    obj = _parse(value, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    if not isinstance(obj, dict):
        return Rejection("schema", f"an event must be a JSON object, got {type(obj).__name__}")
    ident = field_at(obj, id_field)
    if ident is None and key:
        try:
            ident = key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("schema", "no id: the value has none and the key is not UTF-8")
    if ident is None:
        return Rejection("schema", f"no id: the value has no {id_field!r} and the record has no key")
    text = field_at(obj, text_field)
    event = _without(obj, text_field)
    event["id"] = ident
    if text is not None:
        event["text"] = text
    error = spec.validate(event)
    if error is not None:
        return Rejection("schema", error if text_field == "text" else f"{error} (text read from {text_field!r})")
    return event


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def dead_letter(value: bytes | None, rejection: Rejection, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The dead-letter record for a rejected value: reason, source, and the original bytes, bounded.

    At most :data:`DEAD_LETTER_VALUE_BYTES` of the value ride along (``value_text`` when that prefix is
    UTF-8, else ``value_b64``), with the value's full length and SHA-256 so it can be found and matched.

    >>> big = dead_letter(b"x" * 2_000_000, Rejection("too_large", "too big"), "events", 0, 5)
    >>> len(big["value_text"]), big["value_bytes"], big["value_truncated"], len(encode(big)) < 100_000
    (65536, 2000000, True, True)
    """
    record: dict[str, Any] = {
        "reason": rejection.reason,
        "error": rejection.error[:DEAD_LETTER_ERROR_CHARS],
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "dead_lettered_time": now_ms(),
    }
    if rejection.exception:
        record["exception"] = rejection.exception
    if value:
        prefix = value[:DEAD_LETTER_VALUE_BYTES]
        record.update(value_bytes=len(value), value_sha256=hashlib.sha256(value).hexdigest(),
                      value_truncated=len(prefix) < len(value))
        text = _utf8_prefix(prefix, truncated=len(prefix) < len(value))
        if text is not None:
            record["value_text"] = text
        else:
            record["value_b64"] = base64.b64encode(prefix).decode("ascii")
    return record


def _utf8_prefix(prefix: bytes, truncated: bool) -> str | None:
    """``prefix`` as text when it is UTF-8 (a character cut by the truncation is left out), else ``None``."""
    for cut in range(4 if truncated else 1):
        try:
            return prefix[:len(prefix) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def dead_letter_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}/{partition}/{offset}".encode()
