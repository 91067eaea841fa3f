"""One frozen settings object for every command and worker.

Environment variables are read in exactly one place, :meth:`Settings.from_env`,
and only when a command starts (never at import time). Command-line flags
override them through :meth:`Settings.replace`.

>>> s = Settings.from_env({"STREAMER_BROKER": "kafka://kafka:9092", "STREAMER_THRESHOLD": "0.8"})
>>> s.broker, s.threshold, s.bootstrap_servers
('kafka://kafka:9092', 0.8, 'kafka:9092')
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.kafka.broker_profile import BROKER_KINDS
from streamer.records.codec import MAX_TEXT_BYTES_LIMIT, internal_record_limit
from streamer.records.topics import TopicNames
from streamer.tasks import get_task
from streamer.triage.policies import POLICIES

ENV_PREFIX = "STREAMER_"
SECRET_FIELDS = frozenset({"sasl_password", "label_key"})
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
LEARNING_MODES = ("replica", "learner")
PATH_FIELDS = ("data_dir", "catalogue_path", "checkpoint_path")


def _default_data_dir() -> Path:
    return Path.home() / ".cache" / "babybear-streamer"


@dataclass(frozen=True)
class Settings:
    """Everything a command or worker can be configured with.

    Each field maps to an environment variable ``STREAMER_<FIELD>`` (upper case).
    """

    # Broker and topics
    broker: str | None = None  # unset: the local broker on 127.0.0.1:broker_port
    namespace: str | None = None  # prefixes every topic (NAME.events ...) and consumer group (NAME-student ...)
    input_topic: str | None = None  # read events from this existing topic instead of (NAMESPACE.)events
    output_topic: str | None = None  # write predictions here instead of (NAMESPACE.)predictions
    id_field: str = "id"  # dotted path to an event's id in its JSON value; absent: the Kafka key is the id
    text_field: str = "text"  # dotted path to an event's text
    broker_port: int = 9092
    # where `streamer broker` keeps its data: memory (lost when it stops) or s3://BUCKET/ (AWS_ENDPOINT, AWS_* set)
    broker_storage: str = "memory://tansu/"
    catalogue_path: Path | None = None
    # auto: ask the broker (the embedded broker is told apart by its cluster id); kafka; embedded
    broker_kind: str = "auto"
    # Consumer-group timing in s; unset: the broker's profile (Apache Kafka's client defaults 45 / 3 / 0.5 on Kafka,
    # 4 / 1 / 0.05 on the embedded broker, which holds a join for half the session and every fetch for the wait)
    session_timeout: float | None = None
    heartbeat_interval: float | None = None
    fetch_max_wait: float | None = None
    broker_timeout: float = 60.0  # workers exit (status 3) when the broker stays away this long
    # Durability of the topics `topics create` makes; unset: min(3, brokers in the cluster) and all replicas but one
    replication_factor: int | None = None
    min_insync_replicas: int | None = None
    # Kafka security (passed through to the clients, never logged)
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    compression_type: str = "none"  # codec of every record this system produces: none, gzip, snappy, lz4, zstd
    # Label integrity: with a key, students sign escalations and learn only labels that carry a valid signature
    label_key: str | None = field(default=None, repr=False)
    # Storage
    data_dir: Path = field(default_factory=_default_data_dir)
    # Student (BabyBear)
    student_batch_size: int = 500
    warmup_labels: int = 100
    warm_start: bool = True  # a fresh student first learns the texts the teacher labelled offline, where it has them
    max_text_bytes: int = 100_000
    task: str = "classify"  # classify | ner
    student: str | None = None  # unset: the task's default (nb; ner)
    checkpoint_path: Path | None = None  # unset: <data_dir>/checkpoints/student-<hostname>.ckpt
    checkpoint_interval: float = 30.0
    # learner: one `streamer worker learner` learns the labels and publishes snapshots, which student workers load
    # (predictors: they never learn); replica: every student worker learns every label itself
    learning: str = "learner"
    snapshot_interval: float = 1.0  # the learner publishes its student at most this often (seconds), when changed
    # a learner with more labels than this waiting learns them catch_up_step a step (the embedding student) until it
    # has caught up; 0: always
    catch_up_labels: int = 2000
    catch_up_step: int = 64
    trust_legacy_checkpoint: bool = False  # load a checkpoint written before checkpoints were authenticated, once
    # Triage
    policy: str = "online"
    threshold: float = 0.9
    target: float = 0.9
    audit_rate: float = 0.05
    calibration_events: int = 1000
    seed: int = 0
    # Teacher (Mamabear)
    teacher_model: str | None = None
    teacher_class: str | None = None  # "module:Class" of your own Teacher subclass; unset: the task's teacher
    teacher_device: str = "auto"
    teacher_batch_size: int = 64
    teacher_max_wait: float = 0.05
    teacher_max_length: int = 128
    teacher_timeout: float = 0.0  # > 0: publish the student's answer as provisional after this many seconds
    # a teacher that fails on every text (model server down, device lost) is retried with backoff this long, then
    # the worker exits uncommitted (status 4) so the escalations wait for a healthy teacher
    teacher_retry_timeout: float = 120.0
    # Logging and monitoring
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one JSON object per line)
    metrics_port: int = 0  # > 0: serve Prometheus metrics on this port
    metrics_host: str = "127.0.0.1"
    dashboard_port: int = 8080
    dashboard_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in PATH_FIELDS:  # accept strings for paths, as the environment and flags give them
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be text or json, got {self.log_format!r}")
        self.topics  # validates the names
        for name in ("id_field", "text_field"):
            if not getattr(self, name) or any(not part for part in getattr(self, name).split(".")):
                raise ValueError(f"{name} must be a dotted path like 'ticket.body', got {getattr(self, name)!r}")
        task = get_task(self.task)
        if self.student is not None and self.student not in task.students:
            raise ValueError(f"student for task {self.task} must be one of {tuple(task.students)}, "
                             f"got {self.student!r}")
        if self.compression_type not in COMPRESSION_TYPES:
            raise ValueError(f"compression_type must be one of {COMPRESSION_TYPES}, got {self.compression_type!r}")
        if self.learning not in LEARNING_MODES:
            raise ValueError(f"learning must be one of {LEARNING_MODES}, got {self.learning!r}")
        if self.snapshot_interval <= 0:
            raise ValueError("snapshot_interval must be positive")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        for name in ("threshold", "target", "audit_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.broker is not None and not self.broker.startswith("kafka://"):
            raise ValueError(f"broker must look like kafka://host:port, got {self.broker!r}")
        if self.catch_up_labels < 0:
            raise ValueError(f"catch_up_labels must not be negative, got {self.catch_up_labels}")
        for name in ("student_batch_size", "teacher_batch_size", "teacher_max_length", "catch_up_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("broker_timeout", "checkpoint_interval", "teacher_timeout", "teacher_retry_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.broker_kind not in BROKER_KINDS:
            raise ValueError(f"broker_kind must be one of {BROKER_KINDS}, got {self.broker_kind!r}")
        for name in ("session_timeout", "heartbeat_interval", "fetch_max_wait"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("replication_factor", "min_insync_replicas"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if (self.replication_factor is not None and self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) must not exceed replication_factor "
                             f"({self.replication_factor}): producers asking every in-sync replica would be refused")
        if not 1 <= self.max_text_bytes <= MAX_TEXT_BYTES_LIMIT:
            raise ValueError(f"max_text_bytes must be within [1, {MAX_TEXT_BYTES_LIMIT}] so that the records made "
                             f"from an event stay below Kafka's 1 MiB message limit, got {self.max_text_bytes}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``STREAMER_*`` variables (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied; ``None`` values are ignored (flag not given)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def broker_url(self) -> str:
        """The configured broker, else the local one (``streamer broker``)."""
        return self.broker or f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for the Kafka clients."""
        return self.broker_url.removeprefix("kafka://")

    @property
    def teacher_model_ref(self) -> str:
        """The teacher model id or path; the default trained teacher when unset."""
        return self.teacher_model or str(self.default_teacher_dir(get_task(self.task).default_dataset))

    @property
    def topics(self) -> TopicNames:
        """This cascade's topics and consumer groups (namespace, input and output topics applied)."""
        return TopicNames(self.namespace, self.input_topic, self.output_topic)

    @property
    def student_checkpoint(self) -> Path:
        """Where the student worker writes and restores its checkpoint (one file per host and namespace by
        default)."""
        return self.checkpoint_path or self.default_checkpoint("student")

    def default_checkpoint(self, role: str) -> Path:
        """``<data_dir>/checkpoints/<role>-[<namespace>-]<hostname>.ckpt``."""
        prefix = f"{role}-{self.namespace}-" if self.namespace else f"{role}-"
        return self.data_dir / "checkpoints" / f"{prefix}{socket.gethostname()}.ckpt"

    def default_teacher_dir(self, dataset: str = "rotten_tomatoes") -> Path:
        return self.data_dir / "teachers" / dataset

    @property
    def max_internal_record_bytes(self) -> int:
        """Largest escalation, label or prediction an accepted event can make (internal topics are decoded against
        it)."""
        return internal_record_limit(self.max_text_bytes)

    @property
    def student_kind(self) -> str:
        """The configured student, or the task's default."""
        return self.student or get_task(self.task).default_student

    def to_env(self) -> dict[str, str]:
        """``STREAMER_*`` variables that rebuild these settings in a child process (unset fields left out).

        >>> Settings(target=0.95).to_env()["STREAMER_TARGET"]
        '0.95'
        """
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain values with secrets masked, safe to log."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = "***"
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = str(f.type)
    if "Path" in kind:
        return Path(raw)
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("bool"):
        return raw.lower() in ("1", "true", "yes", "on")
    return raw
