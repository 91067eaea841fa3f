"""Prometheus metrics of a worker, served over HTTP by ``prometheus-client``.

Each worker owns one :class:`WorkerMetrics` (its own registry, so tests can build several
in one process). ``streamer worker ROLE --metrics-port N`` serves them on ``/metrics``.

>>> m = WorkerMetrics("student")
>>> m.events.inc(3); m.predictions.labels(source="student").inc()
>>> b"streamer_events_total 3.0" in m.exposition(), m.value("streamer_events_total")
(True, 3.0)
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class WorkerMetrics:
    """Every metric a student or teacher worker exposes (names are documented in the README)."""

    def __init__(self, role: str, namespace: str | None = None) -> None:
        self.role = role
        self.registry = r = CollectorRegistry()
        self.info = Gauge("streamer_worker_info", "Worker role and cascade namespace (value 1)", ["role", "namespace"],
                          registry=r)
        self.info.labels(role=role, namespace=namespace or "").set(1)
        self.events = Counter("streamer_events", "Valid events the student routed", registry=r)
        self.predictions = Counter("streamer_predictions", "Predictions published, by source "
                                   "(student, teacher, provisional)", ["source"], registry=r)
        self.escalations = Counter("streamer_escalations", "Events sent to the teacher, by reason "
                                   "(warmup, calibration, low_confidence, audit)", ["reason"], registry=r)
        self.labels_learned = Counter("streamer_labels_learned", "Teacher labels the student learned", registry=r)
        self.labels_rejected = Counter("streamer_labels_rejected", "Labels the student did not learn, by reason "
                                       "(malformed, unauthenticated, processing_error)", ["reason"], registry=r)
        self.dead_letters = Counter("streamer_dead_letters", "Records sent to dead-letter, by source topic and reason",
                                    ["topic", "reason"], registry=r)
        self.threshold = Gauge("streamer_threshold", "Current confidence threshold of the student", registry=r)
        self.agreement = Gauge("streamer_agreement_estimated", "Estimated agreement of the cascade with the teacher "
                               "(online policy; NaN until known)", registry=r)
        self.agreement_target = Gauge("streamer_agreement_target", "Agreement with the teacher the policy holds",
                                      registry=r)
        self.teacher_batch_size = Histogram("streamer_teacher_batch_size", "Sequences per teacher batch",
                                            buckets=BATCH_BUCKETS, registry=r)
        self.teacher_batch_seconds = Histogram("streamer_teacher_batch_seconds", "Seconds per teacher batch "
                                               "(tokenisation and model)", buckets=LATENCY_BUCKETS, registry=r)
        self.duplicates_skipped = Counter("streamer_duplicates_skipped", "Records not handled again because the "
                                          "same record (same id and time) was just handled: a producer's retry "
                                          "stored it twice", ["topic"], registry=r)
        self.teacher_retries = Counter("streamer_teacher_retries", "Batches retried because the teacher failed on "
                                       "every text, a probe text included (an outage, not bad records)", registry=r)
        self.decision_latency = Histogram("streamer_decision_latency_seconds", "Event time (Kafka timestamp) to "
                                          "prediction, by source", ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self.snapshot_version = Gauge("streamer_snapshot_version", "Labels learned by the student snapshot this "
                                      "worker serves (predictor) or last published (learner)", registry=r)
        self.snapshots_published = Counter("streamer_snapshots_published", "Student snapshots the learner published",
                                           registry=r)
        self.consumer_lag = Gauge("streamer_consumer_lag", "Records not yet processed, per input partition",
                                  ["topic", "partition"], registry=r)
        self._server: Any = None

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (0 when it has not been recorded yet).

        >>> m = WorkerMetrics("teacher"); m.predictions.labels(source="teacher").inc(2)
        >>> m.value("streamer_predictions_total", source="teacher"), m.value("streamer_events_total")
        (2.0, 0.0)
        """
        return self.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """Sum of one sample name over all its label values."""
        return sum(sample.value for family in self.registry.collect() for sample in family.samples
                   if sample.name == name)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            server, _ = self._server
            threading.Thread(target=server.shutdown, daemon=True).start()
            self._server = None
