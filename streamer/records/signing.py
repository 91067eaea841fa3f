"""Signatures on escalations and labels, so a student learns only the teacher's label for an event it escalated.

With ``STREAMER_LABEL_KEY`` set on students and teachers:

* the student signs each escalation (id, text, reason, its guess and confidence, the weight);
* the teacher answers only escalations whose signature matches, and signs its label over the
  same fields *plus the label and its version*;
* the student learns a label only when that label signature matches.

Someone who can write to ``escalations`` or ``labels`` without the key cannot make a student learn
an event it never escalated, change a weight or a confidence (which steer the threshold policy),
or replay a signed label with another label. The two signatures are computed over different
messages (a domain tag leads each), so an escalation's signature is never a valid label signature.
A signature that is not a string of hexadecimal digits (any other character, a number) is simply
invalid. Kafka ACLs remain the first line (README, Label integrity).

>>> esc = {"id": "7", "text": "fine", "reason": "audit", "student_label": "pos", "student_confidence": 0.97,
...        "weight": 20.0}
>>> esc["signature"] = sign_escalation(b"k", esc)
>>> verify_escalation(b"k", esc), verify_escalation(b"k", {**esc, "weight": 1e300}), verify_escalation(b"x", esc)
(True, False, False)
>>> label = {**esc, "label": "neg", "teacher_version": "t1"}
>>> label["signature"] = sign_label(b"k", label)
>>> verify_label(b"k", label), verify_label(b"k", {**label, "label": "pos"}), verify_label(b"k", esc)
(True, False, False)
>>> verify_label(b"k", {**label, "signature": "é" * 64}), verify_label(b"k", {**label, "signature": 7})
(False, False)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from streamer.records.catalogue import TopicSpec
from streamer.records.codec import Rejection, decode

#: The fields an escalation's signature covers.
ESCALATION_FIELDS = ("id", "text", "reason", "student_label", "student_confidence", "weight")
#: The fields a label's signature covers: the escalation's and the teacher's answer.
LABEL_FIELDS = (*ESCALATION_FIELDS, "label", "teacher_version")


def _signature(key: bytes, domain: str, fields: tuple[str, ...], record: Mapping[str, Any]) -> str:
    return hmac.new(key, orjson.dumps([domain, *(record.get(name) for name in fields)]), hashlib.sha256).hexdigest()


def _matches(signature: Any, expected: str) -> bool:
    # compare_digest refuses str holding non-ASCII characters (TypeError): such a signature is just invalid
    return isinstance(signature, str) and signature.isascii() and hmac.compare_digest(signature, expected)


def sign_escalation(key: bytes, record: Mapping[str, Any]) -> str:
    """The student's hex HMAC-SHA256 of an escalation's :data:`ESCALATION_FIELDS`."""
    return _signature(key, "escalation", ESCALATION_FIELDS, record)


def sign_label(key: bytes, record: Mapping[str, Any]) -> str:
    """The teacher's hex HMAC-SHA256 of a label's :data:`LABEL_FIELDS`."""
    return _signature(key, "label", LABEL_FIELDS, record)


def verify_escalation(key: bytes, record: Mapping[str, Any]) -> bool:
    """Whether an escalation carries a valid student signature."""
    return _matches(record.get("signature"), sign_escalation(key, record))


def verify_label(key: bytes, record: Mapping[str, Any]) -> bool:
    """Whether a label carries a valid teacher signature (the label itself included)."""
    return _matches(record.get("signature"), sign_label(key, record))


UNAUTHENTICATED = {
    "escalation": "the escalation carries no valid signature of the student that escalated it "
                  "(STREAMER_LABEL_KEY is set)",
    "label": "the label carries no valid signature of the teacher's answer to an escalated event "
             "(STREAMER_LABEL_KEY is set)",
}


def decode_signed(value: bytes | None, spec: TopicSpec, max_bytes: int, key: bytes | None,
                  kind: str) -> dict[str, Any] | Rejection:
    """An ``escalations`` (``kind="escalation"``) or ``labels`` (``kind="label"``) record decoded and, when a
    ``key`` is set, checked for a valid signature; never raises.

    Students learn only labels that pass and teachers answer only escalations that pass; the teacher group reports
    what does not on ``dead-letter`` (each partition has one owner there, so every bad record is reported once).
    """
    record = decode(value, spec, max_bytes)
    if isinstance(record, Rejection) or key is None:
        return record
    valid = verify_label(key, record) if kind == "label" else verify_escalation(key, record)
    return record if valid else Rejection("unauthenticated", UNAUTHENTICATED[kind])
