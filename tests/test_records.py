import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.records import (REJECTION_REASONS, Rejection, dead_letter, decode, escalation, label_record,
                              student_prediction, teacher_prediction)


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


def test_an_event_cannot_forge_system_fields(catalogue):
    event = {"id": "e2", "text": "t", "provisional": True, "source": "teacher", "extra": 1}
    pred = student_prediction(event, "fresh", 0.97, 1, 0.9, 1000)
    assert "provisional" not in pred and pred["source"] == "student" and pred["extra"] == 1
    provisional = student_prediction(event, "fresh", 0.97, 1, 0.9, 1000, provisional=True)
    assert provisional["provisional"] is True and catalogue["predictions"].validate(provisional) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
candidate_events = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries({"id": st.text(max_size=10), "text": st.text(max_size=50)},
                          optional={"lang": json_values}).map(orjson.dumps),
)


@settings(max_examples=400, deadline=None)
@given(candidate_events)
def test_the_decoder_never_raises_and_every_value_is_an_event_or_a_dead_letter(catalogue, value):
    result = decode(value, catalogue["events"], max_bytes=200)
    if isinstance(result, Rejection):
        assert result.reason in REJECTION_REASONS and result.error
        record = dead_letter(value, result, "events", 0, 7)
        assert catalogue["dead-letter"].validate(orjson.loads(orjson.dumps(record))) is None
        kept = base64.b64decode(record["value_b64"]) if "value_b64" in record else record.get("value_text", "").encode()
        assert kept == value
    else:
        assert catalogue["events"].validate(result) is None
        assert isinstance(result["id"], str) and result["id"] and isinstance(result["text"], str) and result["text"]


def test_events_are_read_at_dotted_paths_with_the_key_as_fallback_id():
    from streamer.records import Catalogue
    from streamer.records.codec import decode_event

    spec = Catalogue.load()["events"]

    def event(value: dict, key: bytes | None = None, **fields):
        return decode_event(orjson.dumps(value), key, spec, 10_000, **fields)

    nested = event({"t": {"n": "T-1", "body": "help", "lang": "en"}}, id_field="t.n", text_field="t.body")
    assert nested == {"t": {"n": "T-1", "lang": "en"}, "id": "T-1", "text": "help"}
    assert event({"body": "hi"}, b"K-9", text_field="body") == {"id": "K-9", "text": "hi"}
    assert event({"id": "in-value", "text": "hi"}, b"in-key")["id"] == "in-value"  # the value's id wins
    assert event({"text": "hi"}).reason == "schema" and "no key" in event({"text": "hi"}).error
    assert event({"id": 7, "text": "hi"}).reason == "schema"  # ids are strings
    assert event({"id": "1", "body": ""}, text_field="body").reason == "schema"
    assert "text read from 'body'" in event({"id": "1"}, text_field="body").error
    assert event({"text": "hi"}, b"\xff").reason == "schema"
    assert decode_event(b"[1]", b"k", spec, 100).reason == "schema"
