"""The records the workers publish: predictions, escalations and labels.

>>> esc = escalation({"id": "7", "text": "fine", "lang": "en"}, "audit", "pos", 0.97, 12, 0.9, 20.0, 1000)
>>> esc["event"], esc["weight"]
({'lang': 'en'}, 20.0)
>>> answer = teacher_prediction(esc, "neg", 0.8, "t1")
>>> answer["lang"], answer["source"], answer["student_label"]
('en', 'teacher', 'pos')
"""

from __future__ import annotations

from typing import Any

from streamer.records.codec import now_ms

#: Fields the system writes on a prediction; an event's own fields of these names are replaced.
PREDICTION_FIELDS = ("id", "label", "confidence", "source", "student_version", "teacher_version",
                     "escalation_reason", "student_label", "student_confidence", "threshold",
                     "event_time", "decided_time", "provisional", "final", "entities")
_SYSTEM_FIELDS = frozenset(PREDICTION_FIELDS)


def passthrough(event: dict[str, Any]) -> dict[str, Any]:
    """The event's own fields, less ``text`` and the fields a prediction sets, carried into its prediction."""
    return {k: v for k, v in event.items() if k != "text" and k not in _SYSTEM_FIELDS}


def student_prediction(event: dict[str, Any], label: str, confidence: float, student_version: int,
                       threshold: float, event_time: int, *, provisional: bool = False) -> dict[str, Any]:
    """The student's answer; ``provisional`` when it stands in for a late teacher (a final answer follows).

    Every prediction says whether it is ``final``: a consumer keeps the final answer per id whatever order the
    records arrive in, and a provisional one only until the final one is seen.
    """
    record = passthrough(event)
    record.update(id=event["id"], label=label, confidence=confidence, source="student",
                  student_version=student_version,
                  teacher_version=None, threshold=threshold, event_time=event_time, decided_time=now_ms(),
                  final=not provisional)
    if provisional:
        record["provisional"] = True
    return record


def escalation(event: dict[str, Any], reason: str, student_label: str | None, student_confidence: float,
               student_version: int, threshold: float, weight: float, event_time: int) -> dict[str, Any]:
    return {
        "id": event["id"], "text": event["text"], "event": passthrough(event), "reason": reason,
        "student_label": student_label, "student_confidence": student_confidence,
        "student_version": student_version, "threshold": threshold, "weight": weight,
        "event_time": event_time, "escalated_time": now_ms(),
    }


def teacher_prediction(esc: dict[str, Any], label: str, confidence: float, teacher_version: str) -> dict[str, Any]:
    record = dict(esc["event"])
    record.update(id=esc["id"], label=label, confidence=confidence, source="teacher",
                  student_version=esc["student_version"], teacher_version=teacher_version,
                  escalation_reason=esc["reason"], student_label=esc["student_label"],
                  student_confidence=esc["student_confidence"], threshold=esc["threshold"],
                  event_time=esc["event_time"], decided_time=now_ms(), final=True)
    return record


def label_record(esc: dict[str, Any], label: str, teacher_version: str) -> dict[str, Any]:
    """The teacher's label for an escalation (unsigned: the teacher signs it with the label key, when set)."""
    return {
        "id": esc["id"], "text": esc["text"], "label": label, "teacher_version": teacher_version,
        "reason": esc["reason"], "student_label": esc["student_label"],
        "student_confidence": esc["student_confidence"], "weight": esc["weight"], "labelled_time": now_ms(),
    }
