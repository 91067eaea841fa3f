import base64

import orjson
import pytest

from streamer.records import (Rejection, dead_letter, decode, escalation, label_record, student_prediction,
                              teacher_prediction)


@pytest.mark.parametrize("value, reason", [
    (b"", "empty"),
    (None, "empty"),
    (b"x" * 2000, "too_large"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"[1,2]", "schema"),
    (b'"just a string"', "schema"),
    (b'{"text": "no id"}', "schema"),
    (b'{"id": "", "text": "empty id"}', "schema"),
    (b'{"id": 5, "text": "number id"}', "schema"),
    (b'{"id": "1", "text": ""}', "schema"),
    (b'{"id": "1", "text": ["list"]}', "schema"),
])
def test_bad_events_are_rejected_with_a_reason(catalogue, value, reason):
    result = decode(value, catalogue["events"], max_bytes=1000)
    assert isinstance(result, Rejection) and result.reason == reason and result.error


def test_dead_letter_keeps_the_original_bytes(catalogue):
    raw = b"\xff\x00binary"
    rejection = decode(raw, catalogue["events"], max_bytes=1000)
    record = dead_letter(raw, rejection, "events", 2, 41)
    assert catalogue["dead-letter"].validate(record) is None
    assert base64.b64decode(record["value_b64"]) == raw
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == ("events", 2, 41)
    text_record = dead_letter(b"[1]", decode(b"[1]", catalogue["events"], 1000), "events", 0, 0)
    assert text_record["value_text"] == "[1]"


def test_records_match_their_schemas_and_pass_fields_through(catalogue):
    event = {"id": "e1", "text": "a fine film", "gold_label": "fresh", "meta": {"k": 1}}
    pred = student_prediction(event, "fresh", 0.97, 120, 0.9, 1000)
    assert catalogue["predictions"].validate(pred) is None
    assert pred["gold_label"] == "fresh" and pred["meta"] == {"k": 1} and "text" not in pred
    esc = escalation(event, "low_confidence", "rotten", 0.6, 120, 0.9, 1.0, 1000)
    assert catalogue["escalations"].validate(orjson.loads(orjson.dumps(esc))) is None
    tpred = teacher_prediction(esc, "fresh", 0.8, "t1")
    assert catalogue["predictions"].validate(tpred) is None
    assert tpred["source"] == "teacher" and tpred["meta"] == {"k": 1} and tpred["escalation_reason"] == "low_confidence"
    label = label_record(esc, "fresh", "t1")
    assert catalogue["labels"].validate(label) is None and label["student_label"] == "rotten"
