"""``streamer demo``: a whole cascade on a real broker, with a live progress line and a report.

The demo starts the embedded broker (unless one is given), creates the topics,
starts one student and one teacher worker as separate processes, streams a
shipped labelled dataset into ``events`` and reads ``predictions`` until every
event has its answer.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamer.commands.training import ensure_teacher
from streamer.datasets import Example, load_examples
from streamer.kafka import EmbeddedBroker, free_port
from streamer.kafka.topic_io import events_from_examples, produce, read_topic
from streamer.observability.dashboard import Dashboard, DashboardThread
from streamer.records import EVENTS, PREDICTIONS, ensure_topics
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.triage import build_triage
from streamer.workers.supervisor import WorkerProcesses, shutdown


@dataclass
class Tally:
    """Predictions seen for one run's events, and the figures derived from them."""

    expected: dict[str, str]  # id -> gold label
    order: dict[str, int]  # id -> position in the stream
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    recent_sources: deque = field(default_factory=lambda: deque(maxlen=500))
    recent_audits: deque = field(default_factory=lambda: deque(maxlen=200))
    threshold: float | None = None

    def add(self, record: dict[str, Any]) -> None:
        ident = record.get("id")
        if ident not in self.expected:
            return
        if ident in self.predictions:
            self.duplicates += 1
            return
        self.predictions[ident] = record
        self.recent_sources.append(record["source"])
        if record.get("escalation_reason") == "audit":
            self.recent_audits.append(record.get("student_label") == record["label"])
        if record.get("threshold") is not None:
            self.threshold = record["threshold"]

    def rolling_agreement(self) -> float | None:
        """Cascade agreement with the teacher, estimated from the recent audit sample."""
        if not self.recent_audits or not self.recent_sources:
            return None
        student_share = self.recent_sources.count("student") / len(self.recent_sources)
        audit_agreement = sum(self.recent_audits) / len(self.recent_audits)
        return 1.0 - student_share * (1.0 - audit_agreement)

    def report(self, seconds: float) -> dict[str, Any]:
        preds = self.predictions.values()
        by_source = Counter(p["source"] for p in preds)
        n = len(self.expected)

        def accuracy(source: str | None) -> float | None:
            chosen = [p for p in preds if source is None or p["source"] == source]
            if not chosen:
                return None
            return round(sum(p["label"] == self.expected[p["id"]] for p in chosen) / len(chosen), 4)

        quarters = []
        ranked = sorted(preds, key=lambda p: self.order[p["id"]])
        for q in range(4):
            part = ranked[q * len(ranked) // 4:(q + 1) * len(ranked) // 4]
            quarters.append(round(sum(p["source"] == "teacher" for p in part) / max(len(part), 1), 4))
        audits = [p for p in preds if p.get("escalation_reason") == "audit"]
        audit_agree = sum(p.get("student_label") == p["label"] for p in audits) / len(audits) if audits else None
        student_share = by_source["student"] / max(len(self.predictions), 1)
        return {
            "events": n,
            "predictions": len(self.predictions),
            "missing": n - len(self.predictions),
            "duplicates": self.duplicates,
            "answered_by_student": by_source["student"],
            "answered_by_teacher": by_source["teacher"],
            "teacher_calls_saved_pct": round(100.0 * by_source["student"] / max(n, 1), 2),
            "escalation_share_by_quarter": quarters,
            "accuracy_student_answered": accuracy("student"),
            "accuracy_teacher_answered": accuracy("teacher"),
            "accuracy_all": accuracy(None),
            "audits": len(audits),
            "estimated_agreement_with_teacher": (None if audit_agree is None
                                                 else round(1 - student_share * (1 - audit_agree), 4)),
            "final_threshold": self.threshold,
            "seconds": round(seconds, 2),
            "events_per_s": round(len(self.predictions) / max(seconds, 1e-9), 1),
        }


def progress_line(tally: Tally, started: float, target: float) -> str:
    done = len(tally.predictions)
    elapsed = max(time.perf_counter() - started, 1e-9)
    recent = tally.recent_sources
    student = recent.count("student") / len(recent) if recent else 0.0
    agreement = tally.rolling_agreement()
    agree_text = "n/a" if agreement is None else f"{agreement:.3f}"
    threshold = "n/a" if tally.threshold is None else f"{tally.threshold:.3f}"
    return (f"{done}/{len(tally.expected)} answered | {done / elapsed:6.1f} ev/s | student {student:5.1%} "
            f"(last 500) | agreement {agree_text} (target {target:.2f}) | threshold {threshold}")


async def stream_and_collect(settings: Settings, examples: list[Example], rate: float, max_in_flight: int,
                             workers: WorkerProcesses, timeout: float, show_progress: bool) -> tuple[Tally, float]:
    run_id = uuid.uuid4().hex[:8]
    events = list(events_from_examples(examples, id_prefix=f"{run_id}-"))
    tally = Tally(expected={e["id"]: e["gold_label"] for e in events},
                  order={e["id"]: i for i, e in enumerate(events)})
    started = time.perf_counter()

    async def wait_turn(sent: int) -> None:
        while max_in_flight and sent - len(tally.predictions) >= max_in_flight:
            await asyncio.sleep(0.002)

    values = (orjson.dumps(e) for e in events)
    producer = asyncio.create_task(produce(settings, settings.topics[EVENTS], values, rate=rate, total=len(events),
                                           progress=False, wait_turn=wait_turn))

    tty = sys.stderr.isatty()

    async def collect() -> None:
        last_print = 0.0
        async for _, _, _, value in read_topic(settings, settings.topics[PREDICTIONS]):
            if value is not None:
                tally.add(orjson.loads(value))
            now = time.perf_counter()
            if now - last_print > (0.5 if tty else 3.0):
                last_print = now
                workers.check_alive()
                if show_progress:
                    print(("\r" if tty else "") + progress_line(tally, started, settings.target),
                          end="" if tty else "\n", file=sys.stderr, flush=True)
            if len(tally.predictions) >= len(tally.expected):
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        if show_progress:
            print(("\r" if tty else "") + progress_line(tally, started, settings.target), file=sys.stderr, flush=True)
        producer.cancel()
        try:
            await producer
        except asyncio.CancelledError:
            pass
    return tally, time.perf_counter() - started


def run_demo(settings: Settings, *, dataset: str = "rotten_tomatoes", events: int | None = None,
             rate: float = 0.0, max_in_flight: int = 200, broker_given: bool = False, teacher_steps: int | None = None,
             timeout: float | None = None, show_progress: bool = True, dashboard: bool = False,
             on_report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the whole cascade once and return the report.

    With ``dashboard``, the workers expose metrics and the live page is served while the stream
    runs; once it is done, ``on_report`` gets the report and the page stays up until Ctrl-C.
    """
    teacher_model = ensure_teacher(settings, dataset, teacher_steps)
    settings = settings.replace(teacher_model=teacher_model)
    # a student on the teacher's embeddings: distil them here, once, not in each worker (no warm start: the
    # student is thrown away, each worker warm-starts its own)
    build_triage(settings.replace(warm_start=False))
    examples = load_examples(dataset, split="stream", limit=events)
    run_dir = Path(settings.data_dir) / "runs" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    broker = None if broker_given else EmbeddedBroker(port=free_port(), log_file=run_dir / "broker.log")
    if broker is not None:
        settings = settings.replace(broker=broker.url)
    roles = ("student", "teacher", "learner") if settings.learning == "learner" else ("student", "teacher")
    ports = {role: free_port() for role in roles} if dashboard else {}
    workers = WorkerProcesses(settings, settings.broker_url, teacher_model, run_dir, metrics_ports=ports)
    page: DashboardThread | None = None
    try:  # every child starts in here, so the finally stops it (on Ctrl-C and SIGTERM too)
        if broker is not None:
            broker.start()
            print(f"Embedded broker (Tansu, memory-only) on {broker.url}", file=sys.stderr)
        created = asyncio.run(ensure_topics(settings))
        print(f"Topics: {', '.join(f'{k} ({v})' for k, v in created.items())}", file=sys.stderr)
        for role in roles:
            workers.start(role)
        print(f"Starting {', '.join(f'a {role}' for role in roles)} worker (logs in {run_dir}) ...", file=sys.stderr)
        workers.wait_ready()
        if dashboard:
            page = DashboardThread(Dashboard({role: f"http://127.0.0.1:{port}/metrics" for role, port in ports.items()},
                                             namespace=settings.namespace),
                                   settings.dashboard_host, settings.dashboard_port).start()
            print(f"Dashboard: {page.url}", file=sys.stderr, flush=True)
        pacing = f"at up to {rate:g}/s" if rate else "as fast as the cascade answers"
        print(f"Streaming {len(examples)} {dataset} events {pacing} (at most {max_in_flight} unanswered) ...",
              file=sys.stderr)
        budget = timeout or max(300.0, len(examples) / 5.0)
        tally, seconds = asyncio.run(stream_and_collect(settings, examples, rate, max_in_flight, workers, budget,
                                                        show_progress))
        memory = workers.peak_memory_mb()
        report = tally.report(seconds)
        report.update(get_task(settings.task).live_figures(tally.expected, list(tally.predictions.values())))
        report.update(task=settings.task, dataset=dataset, teacher_model=teacher_model, student=settings.student_kind,
                      policy=settings.policy, target=settings.target, learning=settings.learning,
                      rate_limit=rate or None, max_in_flight=max_in_flight, peak_memory_mb=memory, logs=str(run_dir))
        if page is not None:
            if on_report is not None:
                on_report(report)
            print(f"The dashboard is still serving {page.url} (Ctrl-C to stop).", file=sys.stderr, flush=True)
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        shutdown(workers, broker)
        if page is not None:
            page.stop()
    return report


def format_report(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        "",
        f"BabyBear demo on {report['dataset']}: {report['events']} events in {report['seconds']} s "
        f"({report['events_per_s']} events/s), student {report.get('student', 'n/a')}",
        f"  predictions           {report['predictions']} (missing {report['missing']}, duplicates {report['duplicates']})",
        f"  answered by student   {report['answered_by_student']}   by teacher {report['answered_by_teacher']} "
        f"(of which audits {report['audits']})",
        f"  teacher calls saved   {report['teacher_calls_saved_pct']:.1f}%",
        "  escalation share by quarter of the stream: "
        + "  ".join(f"{100 * q:.0f}%" for q in report["escalation_share_by_quarter"]),
        f"  accuracy vs gold      student-answered {pct(report['accuracy_student_answered'])}   "
        f"teacher-answered {pct(report['accuracy_teacher_answered'])}   all {pct(report['accuracy_all'])}",
        f"  agreement with teacher (estimated from audits) "
        f"{pct(report['estimated_agreement_with_teacher'])}, target {100 * report['target']:.0f}% "
        f"(policy {report['policy']}, final threshold "
        f"{'n/a' if report['final_threshold'] is None else format(report['final_threshold'], '.3f')})",
        f"  worker logs           {report['logs']}",
    ]
    if "entity_f1" in report:
        f1 = report["entity_f1"]
        lines.insert(-1, f"  entity F1 vs gold     student-answered {f1['student_answered']}   "
                         f"teacher-answered {f1['teacher_answered']}   all {f1['all']}")
    return "\n".join(lines)
