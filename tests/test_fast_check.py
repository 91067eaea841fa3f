"""The quick schema check says yes only where the full validator (fastjsonschema) does: on every catalogue topic's
records and thousands of altered copies of them, and on schemas that use each keyword it covers."""

from __future__ import annotations

import itertools
import random

import fastjsonschema
import pytest

from streamer.records import dead_letter, escalation, label_record
from streamer.records.codec import Rejection
from streamer.records.fast_check import compile_check

ODD_VALUES = ["", "x", "audit", "teacher", 0, -1, 1, 2, 0.0, 0.5, 1.0, 1.5, -0.5, 3.0, 10**20, 1e300, True, False,
              None, [], ["x"], {}, {"a": 1}]


def accepted(validator, value) -> bool:
    try:
        validator(value)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def altered(record: dict, rng: random.Random, n: int) -> list:
    """``record`` with one field dropped, replaced by an odd value, or added; then random mixes of those."""
    out = [None, "x", 7, [record]]
    for key in record:
        out.append({k: v for k, v in record.items() if k != key})
        out += [{**record, key: odd} for odd in ODD_VALUES]
    out += [{**record, "unknown_field": 1}, {**record, "signature": 5}, {**record, "signature": "ab"}]
    keys = [*record, "unknown_field", "signature", "event"]
    for _ in range(n):
        mixed = dict(record)
        for key in rng.sample(keys, rng.randint(1, 3)):
            if rng.random() < 0.2:
                mixed.pop(key, None)
            else:
                mixed[key] = rng.choice(ODD_VALUES)
        out.append(mixed)
    return out


def records() -> dict[str, dict]:
    esc = escalation({"id": "e1", "text": "fine film", "lang": "en"}, "audit", "pos", 0.97, 12, 0.8, 20.0, 1000)
    return {"events": {"id": "e1", "text": "fine film", "lang": "en"}, "escalations": esc,
            "labels": label_record(esc, "neg", "t1"),
            "dead-letter": dead_letter(b"\xff", Rejection("invalid_utf8", "not UTF-8"), "events", 0, 5)}


@pytest.mark.parametrize("topic", ["events", "escalations", "labels", "dead-letter"])
def test_the_quick_check_says_yes_only_where_the_schema_does(catalogue, topic):
    spec = catalogue[topic]
    check = compile_check(spec.value_schema)
    assert check is not None, f"the catalogue's {topic} schema should compile to a quick check"
    record = records()[topic]
    assert accepted(spec._validator, record) and check(record), "a well-formed record is taken on the quick path"
    values = altered(record, random.Random(topic), 3000)
    quick = [check(v) for v in values]
    wrong = [v for v, yes in zip(values, quick) if yes and not accepted(spec._validator, v)]
    assert not wrong, f"said yes to values the schema refuses: {wrong[:3]}"
    assert sum(quick) > 5 and not all(quick)  # both answers were exercised
    for value in values:  # and validate() gives the full validator's verdict either way
        assert (spec.validate(value) is None) == accepted(spec._validator, value)


def test_every_keyword_covered_keeps_to_the_schema():
    schemas = [
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "exclusiveMaximum": 10}}},
        {"type": "object", "required": ["s"], "additionalProperties": False,
         "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 3}, "o": {"type": "object"}}},
        {"type": "object", "properties": {"x": {"type": ["number", "null"]}, "b": {"type": "boolean"},
                                          "a": {"type": "array"}, "e": {"enum": ["a", "b"]}, "any": {}}},
        {"type": "object", "properties": {"f": {"type": "number", "exclusiveMinimum": -1.5, "maximum": 2.5}},
         "$comment": "annotations are ignored", "description": "d"},
    ]
    values = [*ODD_VALUES, "ab", "abcd", "b", 9, 10, -1.5, 2.5, 9.999]
    for schema in schemas:
        check, validator = compile_check(schema), fastjsonschema.compile(schema)
        assert check is not None
        keys = list(schema["properties"])
        tried = yes = 0
        for key, value in itertools.product(keys, values):
            for record in ({key: value}, {"s": "abc", key: value}, {"s": "ab", "o": {}, key: value}):
                tried += 1
                if check(record):
                    yes += 1
                    assert accepted(validator, record), (schema, record)
        assert 0 < yes < tried


@pytest.mark.parametrize("schema", [
    {"type": "string"},  # not an object
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}},
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}},
    {"type": "object", "properties": {"e": {"enum": [1, True]}}},  # 1 == True: left to the full validator
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"n": {"minimum": 0}}},  # a bound without a numeric type
])
def test_schemas_beyond_the_keywords_covered_get_no_quick_check(schema):
    assert compile_check(schema) is None
