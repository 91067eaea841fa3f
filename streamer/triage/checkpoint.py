"""Student checkpoints: the learned triage state and the ``labels`` offsets it has learned up to.

A checkpoint is authenticated and written atomically. The file is a header, an HMAC-SHA256
of the body under a key kept beside it (``checkpoint.key``, mode 0600, created on first
use), and the body (a pickle). The HMAC is checked before anything is unpickled, so a file
written by someone without the key is refused instead of run. Files are created 0600,
never through a symbolic link, via a temporary file and a rename, so a crash mid-write
leaves the previous checkpoint intact. On start the worker restores it and replays only
the labels after the saved offsets, so a restart does not fall back to warm-up.

Checkpoints written before checkpoints were authenticated (format 1, the flat module
layout) carry no HMAC: they are refused unless ``trust_legacy`` is given
(``STREAMER_TRUST_LEGACY_CHECKPOINT=1``); their class paths are then mapped to where the
classes live now, and the next checkpoint is written authenticated.

>>> import tempfile
>>> from streamer.models.naive_bayes import NaiveBayesStudent
>>> from streamer.triage.policies import FixedPolicy
>>> from streamer.triage.router import Triage
>>> path = Path(tempfile.mkdtemp()) / "student.ckpt"
>>> t = Triage(NaiveBayesStudent(), FixedPolicy(0.8), warmup_labels=0)
>>> t.learn("fine film", "pos", student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
>>> size = write_checkpoint(path, Checkpoint(t, {0: 1, 3: 0}))
>>> restored = read_checkpoint(path)
>>> restored.triage.student.version, restored.label_offsets, oct(path.stat().st_mode & 0o777)
(1, {0: 1, 3: 0}, '0o600')
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import io
import os
import pickle
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streamer.triage.router import Triage

FORMAT_VERSION = 2
MAGIC = b"babybear-checkpoint 2\n"
MAC_BYTES = 32
KEY_FILE = "checkpoint.key"
#: Where format-1 checkpoints' classes and functions live now: (module, name) -> (module, name).
MOVED = {
    ("streamer.student", "Student"): ("streamer.models.naive_bayes", "NaiveBayesStudent"),
    ("streamer.student", "present"): ("streamer.models.naive_bayes", "present"),
    ("streamer.ner", "NERStudent"): ("streamer.models.tagger", "NERStudent"),
    ("streamer.triage", "Triage"): ("streamer.triage.router", "Triage"),
    **{("streamer.policies", name): ("streamer.triage.policies", name)
       for name in ("FixedPolicy", "PaperPolicy", "OnlinePolicy")},
}


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be used."""


@dataclass
class Checkpoint:
    """A triage (student, policy, audit RNG), per ``labels`` partition the next offset to learn, and the ids of
    the labels learned most recently (so a label the teacher sends again is not learned twice)."""

    triage: Triage
    label_offsets: dict[int, int]
    config: dict[str, Any] = field(default_factory=dict)
    written_time: float = field(default_factory=time.time)
    learned_ids: list[str] = field(default_factory=list)


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` with mode 0600 that refuses to follow a symbolic link at ``path``."""
    return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)


def checkpoint_key(path: Path) -> bytes:
    """The HMAC key of the checkpoints in ``path``'s folder, created (0600) on first use."""
    key_path = path.parent / KEY_FILE
    if not key_path.exists():  # written whole, then linked in: a worker starting beside never reads half a key
        key_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fh:
            fh.write(secrets.token_bytes(32))
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    fd = _open_private(key_path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        key = fh.read()
    if len(key) < 16:
        raise CheckpointError(f"the checkpoint key {key_path} is too short; remove it (and the checkpoints it signed)")
    return key


def lock_checkpoint(path: Path) -> IO[bytes]:
    """Hold ``path``'s lock file for this process's lifetime; :class:`CheckpointError` if another worker has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(_open_private(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT | os.O_APPEND),
                       "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise CheckpointError(f"another student worker is using the checkpoint {path}; give each worker its own "
                              f"(--checkpoint-path or STREAMER_CHECKPOINT_PATH)") from exc
    return handle


def serialize_checkpoint(checkpoint: Checkpoint) -> bytes:
    """The checkpoint's body (runs where the triage lives: the worker's event loop)."""
    return pickle.dumps({"format": FORMAT_VERSION, "triage": checkpoint.triage,
                         "label_offsets": dict(checkpoint.label_offsets), "config": checkpoint.config,
                         "written_time": time.time(), "learned_ids": list(checkpoint.learned_ids)},
                        protocol=pickle.HIGHEST_PROTOCOL)


def write_checkpoint_bytes(path: Path, body: bytes) -> int:
    """Authenticate ``body`` and write it to ``path`` atomically (safe to run in a thread); returns the size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mac = hmac.new(checkpoint_key(path), body, hashlib.sha256).digest()
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a leftover, or a link planted there: removed, never followed
    with os.fdopen(_open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fh:
        fh.write(MAGIC + mac + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(MAGIC) + len(mac) + len(body)


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> int:
    """Write ``checkpoint`` to ``path`` (authenticated, atomically); returns its size in bytes."""
    return write_checkpoint_bytes(path, serialize_checkpoint(checkpoint))


def read_checkpoint(path: Path, *, trust_legacy: bool = False) -> Checkpoint | None:
    """The checkpoint at ``path``, ``None`` when there is none; :class:`CheckpointError` when it is unreadable,
    fails authentication, or is an unauthenticated legacy file and ``trust_legacy`` is not given."""
    if not path.is_file():
        return None
    try:
        fd = _open_private(path, os.O_RDONLY)
    except OSError as exc:
        raise CheckpointError(f"cannot open the student checkpoint {path} ({exc}); it must be a regular file, "
                              f"not a symbolic link") from exc
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    if data.startswith(MAGIC):
        mac, body = data[len(MAGIC):len(MAGIC) + MAC_BYTES], data[len(MAGIC) + MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(checkpoint_key(path), body, hashlib.sha256).digest()):
            raise CheckpointError(f"the student checkpoint {path} fails authentication (changed since it was written, "
                                  f"or written with another {path.parent / KEY_FILE}); it was not loaded. Move it "
                                  f"away to start from scratch")
    elif trust_legacy:
        body = data
    else:
        raise CheckpointError(f"{path} was written before checkpoints were authenticated, so it cannot be checked. "
                              f"If you trust the file, start once with STREAMER_TRUST_LEGACY_CHECKPOINT=1 (it is "
                              f"rewritten authenticated); otherwise move it away to start from scratch")
    try:
        state = _CheckpointUnpickler(io.BytesIO(body)).load()  # noqa: S301 - authenticated or trusted above
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing
        raise CheckpointError(f"cannot read the student checkpoint {path}: {exc!r}; "
                              f"move it away to start from scratch") from exc
    if not isinstance(state, dict) or state.get("format") not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path} is not a student checkpoint this version reads; move it away to start "
                              f"from scratch")
    return Checkpoint(state["triage"], {int(p): int(o) for p, o in state["label_offsets"].items()},
                      state.get("config", {}), state["written_time"], list(state.get("learned_ids", [])))


class _CheckpointUnpickler(pickle.Unpickler):
    """Reads checkpoints of every readable format: classes that moved are looked up where they are now."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = MOVED.get((module, name), (module, name))
        return super().find_class(module, name)
