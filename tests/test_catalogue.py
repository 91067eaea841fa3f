import asyncio

import orjson
import pytest

from streamer.records.catalogue import REQUIRED_TOPICS, Catalogue, CatalogueError, ensure_topics
from streamer.settings import Settings


def test_catalogue_names_every_topic_with_schema(catalogue):
    for name in REQUIRED_TOPICS:
        spec = catalogue[name]
        assert spec.partitions >= 1 and spec.cleanup_policy in ("delete", "compact") and spec.value_schema


def test_event_schema(catalogue):
    events = catalogue["events"]
    assert events.validate({"id": "a", "text": "b", "extra": [1]}) is None
    assert "id" in events.validate({"text": "b"})
    assert events.validate({"id": "a", "text": 3}) is not None


def test_malformed_catalogue_is_a_clear_error(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_bytes(orjson.dumps({"topics": {"events": {"partitions": 1, "value_schema": {}}}}))
    with pytest.raises(CatalogueError, match="lacks required topics"):
        Catalogue.load(bad)
    with pytest.raises(CatalogueError, match="not found"):
        Catalogue.load(tmp_path / "missing.json")


def test_create_topics_on_a_real_broker_is_idempotent(broker, catalogue):
    # the fixture created them already
    result = asyncio.run(ensure_topics(Settings(broker=broker.url), catalogue))
    assert set(result) == set(REQUIRED_TOPICS) and set(result.values()) == {"exists"}


def test_partition_mismatch_is_refused(broker, catalogue, tmp_path):
    doc = orjson.loads(catalogue.path.read_bytes())
    doc["topics"]["events"]["partitions"] = 7
    other = tmp_path / "c.json"
    other.write_bytes(orjson.dumps(doc))
    with pytest.raises(CatalogueError, match="partitions"):
        asyncio.run(ensure_topics(Settings(broker=broker.url), Catalogue.load(other)))
