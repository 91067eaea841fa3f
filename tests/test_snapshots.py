"""Student snapshots off the broker: chunks, assembly, authentication, and the learner's view of the stream."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import zlib
from dataclasses import replace

import cramjam
import orjson
import pytest

from streamer.models.naive_bayes import NaiveBayesStudent
from streamer.triage.policies import OnlinePolicy
from streamer.triage.router import Feedback, Triage
from streamer.triage.snapshot import (MAGIC, SnapshotAssembler, SnapshotError, decode_chunk, open_snapshot,
                                      pack_snapshot, pickle_snapshot)

KEY = b"k" * 32


def triage(labels: int = 40) -> Triage:
    t = Triage(NaiveBayesStudent(), OnlinePolicy(0.9, audit_rate=0.05), warmup_labels=0)
    t.learn_many([Feedback(f"fine film {i}" if i % 2 else f"dull film {i}", "pos" if i % 2 else "neg", None, 0.0,
                           1.0, "warmup") for i in range(labels)])
    return t


def chunks(t: Triage, chunk_bytes: int = 100, key: bytes = KEY):
    return [decode_chunk(value) for _, value in
            pack_snapshot(pickle_snapshot(t, {0: t.student.version}), version=t.student.version, student="nb",
                          key=key, chunk_bytes=chunk_bytes)]


def test_chunks_of_interleaved_snapshots_assemble_into_the_newest_only():
    old, new = chunks(triage(40)), chunks(triage(60))
    assert len(old) > 2 and len(new) > 2
    assembler = SnapshotAssembler()
    done = [assembler.add(c) for c in new[:-1] + old[:-1] + [new[-1], old[-1]]]
    complete = [d for d in done if d is not None]
    assert [d.version for d in complete] == [60]  # the older one, completed later, is no use any more
    assert open_snapshot(complete[0], KEY).triage.route("fine").label == "pos"


def test_an_incomplete_snapshot_never_loads():
    assembler = SnapshotAssembler()
    assert all(assembler.add(c) is None for c in chunks(triage())[:-1])


@pytest.mark.parametrize("tamper", ["body", "version", "key", "codec"])
def test_a_snapshot_that_fails_authentication_is_refused_before_unpickling(tamper):
    parts = chunks(triage(), key=b"x" * 32 if tamper == "key" else KEY)
    if tamper == "body":
        parts[1] = replace(parts[1], data=bytes([parts[1].data[0] ^ 1]) + parts[1].data[1:])
    if tamper == "version":  # an old snapshot passed off as the newest
        parts = [replace(c, version=c.version + 1000) for c in parts]
    if tamper == "codec":  # the body read with another codec than it was written with
        parts = [replace(c, codec="zlib") for c in parts]
    assembler = SnapshotAssembler()
    packed = [assembler.add(c) for c in parts][-1]
    with pytest.raises(SnapshotError, match="fails authentication"):
        open_snapshot(packed, KEY)


@pytest.mark.parametrize("value", [None, b"", b"{}", MAGIC + b"not json\n", MAGIC + b'{"id": "a"}\n',
                                   MAGIC + b'{"id":"a","version":1,"student":"nb","chunk":3,"chunks":2,"bytes":1,'
                                           b'"mac":"","created":0}\nx'])
def test_a_record_that_is_not_a_snapshot_chunk_says_so(value):
    with pytest.raises(SnapshotError):
        decode_chunk(value)


def test_the_learner_policy_sees_the_stream_through_the_labels_weights():
    t = Triage(NaiveBayesStudent(), OnlinePolicy(0.9, audit_rate=0.05), warmup_labels=0)
    labels = ([Feedback("a", "pos", "pos", 0.6, 1.0, "low_confidence")] * 100
              + [Feedback("b", "pos", "pos", 0.97, 20.0, "audit")] * 10
              + [Feedback("c", "pos", None, 0.0, 1.0, "warmup")] * 5)
    t.learn_many(labels, record_routes=True)
    confidences = list(t.policy.confidences)
    # every low-confidence label stands for itself, each audit for 1/audit rate events; warm-up says nothing
    assert confidences.count(0.6) == 100 and confidences.count(0.97) == 200 and len(confidences) == 300
    replica = Triage(NaiveBayesStudent(), OnlinePolicy(0.9, audit_rate=0.05), warmup_labels=0)
    replica.learn_many(labels)
    assert len(replica.policy.confidences) == 0  # a replica records its routes as it routes them


def test_a_zlib_snapshot_of_an_earlier_learner_still_loads():
    """Before the codec was named, snapshots were zlib-compressed, their header had no ``codec`` and their MAC
    covered [id, version, student, created] and the body: a predictor of today loads one of those."""
    t = triage()
    body = zlib.compress(pickle_snapshot(t, {0: t.student.version}), 1)
    head = orjson.dumps(["s1", t.student.version, "nb", 5])
    mac = hmac.new(KEY, head + b"\0" + body, hashlib.sha256).hexdigest()
    header = orjson.dumps({"id": "s1", "version": t.student.version, "student": "nb", "chunk": 0, "chunks": 1,
                           "bytes": len(body), "mac": mac, "created": 5})
    chunk = decode_chunk(MAGIC + header + b"\n" + body)
    assert chunk.codec == "zlib"
    snapshot = open_snapshot(SnapshotAssembler().add(chunk), KEY)
    assert snapshot.version == t.student.version and snapshot.triage.route("fine").label == "pos"


def test_snapshots_are_zstd_and_an_unknown_codec_is_refused_by_name():
    parts = chunks(triage(), chunk_bytes=1 << 20)
    assert [c.codec for c in parts] == ["zstd"]
    assert pickle.loads(cramjam.zstd.decompress(parts[0].data))["format"] == 1
    header = orjson.dumps({"id": "a", "version": 1, "student": "nb", "chunk": 0, "chunks": 1, "bytes": 1, "mac": "",
                           "created": 0, "codec": "brotli"})
    with pytest.raises(SnapshotError, match="'brotli'"):
        decode_chunk(MAGIC + header + b"\nx")
