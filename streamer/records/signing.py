"""Signatures on escalations, so a student learns only labels for events a student escalated.

With ``STREAMER_LABEL_KEY`` set, the student signs the fields of each escalation that its
learning uses (id, text, reason, the student's guess and confidence, the weight) with
HMAC-SHA256; the teacher carries the signature into the label; the student learns a label
only when the signature matches those fields. Someone who can write to ``labels`` but does
not hold the key cannot make the student learn an event it never escalated, nor change a
weight or a confidence (which steer the threshold policy). Kafka ACLs remain the first line
(README, Label integrity).

>>> esc = {"id": "7", "text": "fine", "reason": "audit", "student_label": "pos", "student_confidence": 0.97,
...        "weight": 20.0}
>>> esc["signature"] = sign(b"k", esc)
>>> verify(b"k", {**esc, "label": "neg"}), verify(b"k", {**esc, "weight": 1e300}), verify(b"other", esc)
(True, False, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from streamer.records.catalogue import TopicSpec
from streamer.records.codec import Rejection, decode

#: The fields a signature covers.
SIGNED_FIELDS = ("id", "text", "reason", "student_label", "student_confidence", "weight")


def _message(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps([record.get(name) for name in SIGNED_FIELDS])


def sign(key: bytes, record: Mapping[str, Any]) -> str:
    """The hex HMAC-SHA256 of ``record``'s :data:`SIGNED_FIELDS`."""
    return hmac.new(key, _message(record), hashlib.sha256).hexdigest()


def verify(key: bytes, record: Mapping[str, Any]) -> bool:
    """Whether ``record`` carries a valid signature of its :data:`SIGNED_FIELDS`."""
    signature = record.get("signature")
    return isinstance(signature, str) and hmac.compare_digest(signature, sign(key, record))


def decode_label(value: bytes | None, spec: TopicSpec, max_bytes: int, key: bytes | None) -> dict[str, Any] | Rejection:
    """A ``labels`` record decoded and, when a ``key`` is set, checked for a valid signature.

    The students learn only what passes; the teacher group reports what does not on ``dead-letter`` (each
    ``labels`` partition has one owner there, so every bad label is reported once).
    """
    record = decode(value, spec, max_bytes)
    if isinstance(record, Rejection) or key is None or verify(key, record):
        return record
    return Rejection("unauthenticated", "the label carries no valid signature of the escalation it answers "
                                        "(STREAMER_LABEL_KEY is set)")
