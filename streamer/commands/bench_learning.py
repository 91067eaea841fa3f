"""``streamer bench``'s learning figures: the learner's pace, and a fresh predictor on a long ``labels`` log.

On a fresh embedded broker, ``labels`` is filled with teacher labels (the dataset's gold labels, as
the teacher would send them), then:

1. a learner worker learns them all: labels/s, read off its metrics while it works;
2. a fresh predictor (a student worker, ``STREAMER_LEARNING=learner``) starts beside it: seconds from
   its start until it serves the learner's newest snapshot;
3. that predictor drains a backlog of events while more labels flow in at ``label_rate`` per second
   (the learner learning them and publishing a snapshot a second): events/s, each event routed once
   (a prediction, or an escalation for the audits: no teacher runs here).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streamer.datasets import Example
from streamer.kafka import EmbeddedBroker, free_port
from streamer.kafka.topic_io import produce
from streamer.records import ESCALATIONS, EVENTS, LABELS, PREDICTIONS, ensure_topics, escalation, label_record
from streamer.records.signing import sign_label
from streamer.settings import Settings
from streamer.workers.supervisor import WorkerProcesses, shutdown

SERVING = re.compile(r"serving student snapshot (\d+) \(([\d.]+) kB, .*read in ([\d.]+) s, loaded in ([\d.]+) s\)")


def log(msg: str) -> None:
    """A progress line of the benchmark, on stderr (the figures go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def label_values(settings: Settings, examples: list[Example], n: int, prefix: str) -> Iterator[bytes]:
    """``n`` records of the ``labels`` topic: each example's gold label as the teacher's (signed when the settings
    have a label key)."""
    key = settings.label_key.encode() if settings.label_key else None
    for i in range(n):
        ex = examples[i % len(examples)]
        esc = escalation({"id": f"{prefix}{i}", "text": ex.text}, "low_confidence", ex.label, 0.5, 0, 0.9, 1.0, 0)
        record = label_record(esc, ex.label, "bench")
        if key is not None:
            record["signature"] = sign_label(key, record)
        yield orjson.dumps(record)


def learned(metrics_url: str) -> float | None:
    """The learner's ``streamer_labels_learned_total``; ``None`` while it does not answer."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("streamer_labels_learned_total "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def wait_for_line(path: Path, pattern: re.Pattern, timeout: float) -> re.Match | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(path.read_text()) if path.exists() else None
        if found:
            return found
        time.sleep(0.1)
    return None


def bench_learning(settings: Settings, examples: list[Example], run_dir: Path, *, labels: int = 100_000,
                   events: int = 50_000, label_rate: float = 5000.0) -> dict[str, Any]:
    """The learner's labels/s, a fresh predictor's time to serve, and its events/s while labels flow."""

    broker = EmbeddedBroker(port=free_port(), log_file=run_dir / "broker-learning.log")
    settings = settings.replace(broker=broker.url, learning="learner")
    port = free_port()
    workers = WorkerProcesses(settings, broker.url, settings.teacher_model_ref, run_dir,
                              metrics_ports={"learner": port})
    out: dict[str, Any] = {"labels": labels, "events": events, "label_rate": label_rate}
    try:
        broker.start()
        asyncio.run(ensure_topics(settings))
        log(f"  producing {labels} labels ...")
        asyncio.run(produce(settings, settings.topics[LABELS], label_values(settings, examples, labels, "l"),
                            total=labels, progress=False))
        workers.start("learner")
        workers.wait_ready()
        started = last_none = time.monotonic()
        first: tuple[float, float] | None = None
        count = 0.0
        while count < labels and time.monotonic() - started < max(600.0, labels / 100):
            looked = time.monotonic()
            count = learned(f"http://127.0.0.1:{port}/metrics") or 0.0
            if not count:
                last_none = looked
            elif first is None:
                first = (looked, count)
            time.sleep(0.25)
        if first is not None and count > first[1]:
            out["learner_labels_per_s"] = round((count - first[1]) / (time.monotonic() - first[0]), 1)
        elif first is not None:  # every label learned between two looks (a short log): at least this fast
            out["learner_labels_per_s"] = round(count / (first[0] - last_none), 1)
            out["learner_labels_per_s_at_least"] = True
        out["learner_learned"] = int(count)
        log(f"  learner: {int(count)} of {labels} labels, {out.get('learner_labels_per_s')} labels/s")
        time.sleep(2 * settings.snapshot_interval)  # its last snapshot out
        values = (orjson.dumps({"id": f"e{i}", "text": examples[i % len(examples)].text}) for i in range(events))
        asyncio.run(produce(settings, settings.topics[EVENTS], values, total=events, progress=False))
        out.update(asyncio.run(measure_predictor(settings, workers, run_dir, examples, events, label_rate)))
        out["peak_memory_mb"] = workers.peak_memory_mb()
    finally:
        shutdown(workers, broker)
    return out


async def measure_predictor(settings: Settings, workers: WorkerProcesses, run_dir: Path, examples: list[Example],
                            events: int, label_rate: float) -> dict[str, Any]:
    """Start a fresh predictor while labels flow at ``label_rate``: seconds until it serves the newest snapshot,
    then events/s through it (the backlog of ``events`` produced before)."""
    from streamer.commands.bench import count_predictions  # noqa: PLC0415 - bench imports this module

    out: dict[str, Any] = {}
    feeder = asyncio.create_task(produce(settings, settings.topics[LABELS], label_values(
        settings, examples, int(label_rate * 600), "m"), rate=label_rate, progress=False))
    try:
        began = time.monotonic()
        workers.start("student", name="predictor")
        serving = await asyncio.to_thread(wait_for_line, run_dir / "predictor.log", SERVING, 120)
        if serving is not None:
            out["fresh_predictor"] = {"serving_after_s": round(time.monotonic() - began, 2),
                                      "snapshot_version": int(serving.group(1)), "snapshot_kb": float(serving.group(2)),
                                      "read_s": float(serving.group(3)), "load_s": float(serving.group(4))}
            log(f"  fresh predictor: serving snapshot {serving.group(1)} {out['fresh_predictor']['serving_after_s']} "
                f"s after its start (read in {serving.group(3)} s, loaded in {serving.group(4)} s)")
        seen, seconds = await count_predictions(settings, events, timeout=max(120.0, events / 200),
                                                topics=(PREDICTIONS, ESCALATIONS))  # audits escalate
        out["predictor"] = {"predictions": seen, "seconds": round(seconds, 2),
                            "events_per_s": round(seen / seconds, 1) if seconds else 0.0}
        log(f"  predictor while labels flow at {label_rate:g}/s: {seen}/{events} events routed in {seconds:.1f} s: "
            f"{out['predictor']['events_per_s']} events/s")
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    return out


def format_learning(r: dict[str, Any]) -> str:
    fresh, predictor = r.get("fresh_predictor") or {}, r.get("predictor") or {}
    rate = ("at least " if r.get("learner_labels_per_s_at_least") else "") + str(r.get("learner_labels_per_s"))
    return (f"  learner: {rate} labels/s ({r.get('learner_learned')} of {r['labels']} "
            f"learned); a fresh predictor served snapshot {fresh.get('snapshot_version')} "
            f"({fresh.get('snapshot_kb')} kB) {fresh.get('serving_after_s')} s after its start; it routed "
            f"{predictor.get('events_per_s')} events/s while labels flowed at {r['label_rate']:g}/s")
