"""Student snapshots: what the learner publishes on the ``snapshots`` topic and predictors load.

A snapshot is the learner's triage as predictors need it (:meth:`Triage.serving`: the student
without its learning-only state, the threshold policy), its version (the labels the student has
learned), the ``labels`` offsets it has learned up to, and the words its tokenizer has met with
their ids (:class:`~streamer.models.word_cache.WordList`: a fresh predictor starts with a warm word
cache). It is pickled, compressed (zstd; snapshots of earlier learners, zlib, still load), and
authenticated with an HMAC-SHA256 checked before anything is unpickled, since a pickle runs code: a
record written by anyone without the key is refused. It travels as chunks of at most
``chunk_bytes`` (default 512 KiB, far below Kafka's 1 MiB record limit), keyed ``chunk-<i>`` so
a compacted topic keeps the newest chunk of each index. Each chunk carries the snapshot's id,
version and chunk count; :class:`SnapshotAssembler` puts a snapshot together from its chunks in
any order, whatever other snapshots interleave, and keeps only what can still become newer than
the newest complete one.

>>> from streamer.models.naive_bayes import NaiveBayesStudent
>>> from streamer.triage.policies import FixedPolicy
>>> from streamer.triage.router import Triage
>>> t = Triage(NaiveBayesStudent(), FixedPolicy(0.8), warmup_labels=0)
>>> t.learn("fine film", "pos", student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
>>> key = b"k" * 32
>>> records = pack_snapshot(pickle_snapshot(t, {0: 1}), version=1, student="nb", key=key, chunk_bytes=64)
>>> len(records) > 1, records[0][0]
(True, b'chunk-0')
>>> assembler = SnapshotAssembler()
>>> done = [assembler.add(decode_chunk(value)) for _, value in reversed(records)]
>>> snapshot = open_snapshot(done[-1], key)
>>> snapshot.version, snapshot.label_offsets, snapshot.triage.route("fine").label
(1, {0: 1}, 'pos')
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cramjam
import orjson

from streamer.models.embeddings import word_cache_of
from streamer.models.word_cache import WordList
from streamer.triage.router import Triage

if TYPE_CHECKING:
    from streamer.settings import Settings

MAGIC = b"babybear-snapshot 1\n"
FORMAT_VERSION = 1
#: Largest piece of a snapshot in one record: well below Kafka's default 1 MiB ``message.max.bytes``.
CHUNK_BYTES = 512 * 1024
#: zstd level 1 (cramjam, which aiokafka's codecs install): 1.93 MB for a 6.05 MB pickle of embed-nb at 100,000 labels
#: in 16 ms, against zlib level 1's 2.03 MB in 59 ms, and read back in 7 against 18 ms
CODEC = "zstd"
COMPRESSION_LEVEL = 1
#: what each codec a snapshot may carry is read back with (zlib: snapshots written before zstd)
_DECOMPRESS = {"zstd": cramjam.zstd.decompress, "zlib": zlib.decompress}
_DOMAIN = b"babybear-snapshot"


class SnapshotError(ValueError):
    """A snapshot record or snapshot that cannot be used (malformed, or failing authentication)."""


def snapshot_key(settings: "Settings") -> bytes:
    """The key snapshots are authenticated with: derived from ``STREAMER_LABEL_KEY`` when set (workers on several
    hosts share it), else from the checkpoint key of ``data_dir`` (workers on one host)."""
    from streamer.triage.checkpoint import checkpoint_key

    secret = (settings.label_key.encode() if settings.label_key
              else checkpoint_key(settings.data_dir / "checkpoints" / "snapshot"))
    return hmac.new(secret, _DOMAIN, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One record of the ``snapshots`` topic."""

    snapshot_id: str
    version: int
    student: str
    index: int
    count: int
    size: int
    mac: str
    created_ms: int
    data: bytes
    codec: str = "zlib"


@dataclass(frozen=True, slots=True)
class PackedSnapshot:
    """Every chunk of one snapshot, put together: still compressed and unauthenticated."""

    snapshot_id: str
    version: int
    student: str
    mac: str
    created_ms: int
    body: bytes
    codec: str = "zlib"


@dataclass(frozen=True)
class Snapshot:
    """An authenticated, loaded snapshot."""

    triage: Triage
    version: int
    label_offsets: dict[int, int]
    config: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    size: int = 0
    #: the learner's word cache (words and their token ids), for a predictor to start warm
    words: WordList | None = None


@dataclass
class SnapshotSchedule:
    """When the learner publishes its student.

    At each tick of its clock (every ``snapshot_interval``) a student that learned something is published when it
    grew by ``min_growth`` of its labels since the last snapshot, or ``max_skips`` ticks have passed without one:
    every tick while it is young, less often as it matures (a mature student changes little per label, and every
    predictor reads and loads every snapshot). Off the clock, it is published the moment it leaves warm-up:
    until predictors get a student past warm-up, every event they route goes to the teacher.

    >>> s = SnapshotSchedule(warmup_labels=100)
    >>> s.due(0), s.published_at(0), s.early(60), s.early(100)
    (True, None, False, True)
    >>> s.published_at(10_000); [s.due(10_000 + n) for n in (0, 50, 100)]
    [False, False, True]
    """

    warmup_labels: int
    min_growth: float = 0.01
    max_skips: int = 30
    published: int = -1
    skipped: int = 0

    def early(self, version: int) -> bool:
        """Whether to publish now, off the clock: the student has just left warm-up."""
        return self.published < self.warmup_labels <= version

    def due(self, version: int) -> bool:
        """Whether to publish at this tick of the clock."""
        if version == self.published:
            return False
        if (self.published < 0 or version - self.published >= self.min_growth * self.published
                or self.skipped >= self.max_skips or self.early(version)):
            return True
        self.skipped += 1
        return False

    def published_at(self, version: int) -> None:
        self.published, self.skipped = version, 0


def pickle_snapshot(triage: Triage, label_offsets: dict[int, int], config: dict[str, Any] | None = None) -> bytes:
    """The snapshot's body (run where the triage lives, between two learning steps: quick, a few ms), with the
    words the student's tokenizer has met and their ids when it has a word cache: a fresh predictor takes them
    instead of tokenising each anew (a fifth of its time in its first pass over a stream)."""
    cache = word_cache_of(triage.student)
    return pickle.dumps({"format": FORMAT_VERSION, "triage": triage.serving(), "label_offsets": dict(label_offsets),
                         "config": dict(config or {}), "words": cache.export() if cache is not None else None},
                        protocol=pickle.HIGHEST_PROTOCOL)


def _mac(key: bytes, snapshot_id: str, version: int, student: str, created_ms: int, body: bytes, codec: str) -> str:
    """The snapshot's HMAC: its header's fields and its compressed body (the codec too, but zlib's, which
    snapshots written before the codec was named were authenticated without)."""
    head = orjson.dumps([snapshot_id, version, student, created_ms] + ([codec] if codec != "zlib" else []))
    return hmac.new(key, head + b"\0" + body, hashlib.sha256).hexdigest()


def pack_snapshot(body: bytes, *, version: int, student: str, key: bytes,
                  chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """Compress and authenticate a pickled snapshot and cut it into ``(key, value)`` records (safe in a thread:
    the compression is most of the time and releases the GIL)."""
    compressed = bytes(cramjam.zstd.compress(body, level=COMPRESSION_LEVEL))
    snapshot_id, created_ms = uuid.uuid4().hex, int(time.time() * 1000)
    mac = _mac(key, snapshot_id, version, student, created_ms, compressed, CODEC)
    pieces = [compressed[i:i + chunk_bytes] for i in range(0, len(compressed), chunk_bytes)] or [b""]
    records = []
    for index, piece in enumerate(pieces):
        header = orjson.dumps({"id": snapshot_id, "version": version, "student": student, "chunk": index,
                               "chunks": len(pieces), "bytes": len(compressed), "mac": mac, "created": created_ms,
                              "codec": CODEC})
        records.append((f"chunk-{index}".encode(), MAGIC + header + b"\n" + piece))
    return records


def decode_chunk(value: bytes | None) -> SnapshotChunk:
    """One ``snapshots`` record; :class:`SnapshotError` when it is not one."""
    if not value or not value.startswith(MAGIC):
        raise SnapshotError("not a snapshot record (no babybear-snapshot header)")
    end = value.find(b"\n", len(MAGIC))
    try:
        h = orjson.loads(value[len(MAGIC):end])
        chunk = SnapshotChunk(str(h["id"]), int(h["version"]), str(h["student"]), int(h["chunk"]), int(h["chunks"]),
                              int(h["bytes"]), str(h["mac"]), int(h["created"]), value[end + 1:],
                              str(h.get("codec", "zlib")))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed snapshot record header ({exc!r})") from exc
    if end < 0 or not 0 <= chunk.index < chunk.count or chunk.version < 0:
        raise SnapshotError("malformed snapshot record header (chunk index out of range)")
    if chunk.codec not in _DECOMPRESS:
        raise SnapshotError(f"snapshot record compressed with {chunk.codec!r}: this worker reads "
                            f"{' and '.join(_DECOMPRESS)} (a newer learner? upgrade the predictors first)")
    return chunk


class SnapshotAssembler:
    """Puts snapshots together from their chunks; :meth:`add` returns one when its last chunk arrives."""

    def __init__(self) -> None:
        self.newest: tuple[int, int] = (-1, -1)  # (version, created) of the newest complete snapshot
        self._parts: dict[str, dict[int, SnapshotChunk]] = {}
        self._age: dict[str, tuple[int, int]] = {}  # (version, created) of each snapshot still being put together

    def add(self, chunk: SnapshotChunk) -> PackedSnapshot | None:
        if (chunk.version, chunk.created_ms) <= self.newest:
            return None  # an older snapshot: nothing to gain
        parts = self._parts.setdefault(chunk.snapshot_id, {})
        self._age[chunk.snapshot_id] = (chunk.version, chunk.created_ms)
        parts[chunk.index] = chunk
        if len(parts) < chunk.count:
            return None
        del self._parts[chunk.snapshot_id], self._age[chunk.snapshot_id]
        ordered = [parts[i] for i in range(chunk.count)]
        body = b"".join(c.data for c in ordered)
        if len(body) != chunk.size or any(c.mac != chunk.mac or c.codec != chunk.codec for c in ordered):
            return None  # chunks of different writes under one id: never complete
        self.newest = (chunk.version, chunk.created_ms)
        for snapshot_id in [i for i, age in self._age.items() if age <= self.newest]:  # can no longer be newer
            del self._parts[snapshot_id], self._age[snapshot_id]
        return PackedSnapshot(chunk.snapshot_id, chunk.version, chunk.student, chunk.mac, chunk.created_ms, body,
                              chunk.codec)


def open_snapshot(packed: PackedSnapshot, key: bytes) -> Snapshot:
    """Authenticate, decompress and load a snapshot (seconds of CPU at most: run it in a thread);
    :class:`SnapshotError` when it fails authentication or does not load."""
    expected = _mac(key, packed.snapshot_id, packed.version, packed.student, packed.created_ms, packed.body,
                    packed.codec)
    if not hmac.compare_digest(expected, packed.mac):
        raise SnapshotError(f"snapshot {packed.version} fails authentication: the learner and this worker must share "
                            f"STREAMER_LABEL_KEY (or, without one, the data directory's checkpoint key); not loaded")
    try:
        state = pickle.loads(_DECOMPRESS[packed.codec](packed.body))  # noqa: S301 - authenticated above
        words = state.get("words")
        snapshot = Snapshot(state["triage"], packed.version,
                            {int(p): int(o) for p, o in state["label_offsets"].items()},
                            dict(state.get("config", {})), packed.created_ms, len(packed.body),
                            words if isinstance(words, WordList) else None)
    except Exception as exc:  # noqa: BLE001 - any failure to load means the same thing
        raise SnapshotError(f"snapshot {packed.version} does not load ({exc!r})") from exc
    if not isinstance(snapshot.triage, Triage):
        raise SnapshotError(f"snapshot {packed.version} holds no triage")
    return snapshot
