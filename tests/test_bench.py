"""The benchmark's measuring functions on tiny inputs: they measure what they say (no timing assertions)."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import pytest

from streamer.commands.bench import bench_student_path, bench_teacher, count_predictions, format_bench
from streamer.commands.bench_learning import bench_learning
from streamer.datasets import load_examples
from streamer.kafka.topic_io import produce
from streamer.records import PREDICTIONS
from streamer.settings import Settings

pytestmark = pytest.mark.integration


def test_teacher_throughput_is_measured_at_each_batch_size(quick_teacher):
    texts = [ex.text for ex in load_examples("rotten_tomatoes", split="stream", limit=64)]
    figures = bench_teacher(quick_teacher, texts, device="cpu", max_length=64, batch_sizes=(1, 4), seconds=0.2)
    assert set(figures) == {"1", "4"} and all(v > 0 for v in figures.values())


def test_predictions_are_timed_by_when_they_were_sent_not_when_they_were_read(broker):
    """Records sent over about a second and read two seconds later, in one burst: the span is the sending's."""
    settings = Settings(broker=broker.url)
    began = time.perf_counter()
    values = (orjson.dumps({"id": str(i)}) for i in range(20))
    sent = asyncio.run(produce(settings, settings.topics[PREDICTIONS], values, rate=20.0, progress=False))
    sending = time.perf_counter() - began  # 19 gaps of 50 ms at least
    time.sleep(2.0)
    seen, seconds = asyncio.run(count_predictions(settings, sent, timeout=30.0))
    assert seen == 20 and 0.9 <= seconds <= sending, (seconds, sending)


def test_student_path_answers_every_event_from_a_warm_checkpoint(tmp_path, quick_teacher):
    examples = load_examples("rotten_tomatoes", split="stream", limit=2500)
    result = bench_student_path(Settings(data_dir=tmp_path, teacher_model=quick_teacher), examples, 3000, tmp_path)
    assert result["predictions"] == 3000 and result["events_per_s"] > 0
    assert result["peak_memory_mb"] and result["peak_memory_mb"] > 10
    assert "restored the student checkpoint" in (tmp_path / "student.log").read_text()


def test_the_report_prints_every_figure():
    run = {"events": 10, "predictions": 10, "missing": 0, "seconds": 1.0, "events_per_s": 10.0,
           "answered_by_student": 6, "answered_by_teacher": 4, "teacher_calls_saved_pct": 60.0, "accuracy_all": 0.8,
           "peak_memory_mb": {"student": 100.0, "teacher": 500.0}}
    result = {"machine": {"cpu_cores": 2}, "teacher_max_length": 128,
              "student_path": {"events": 10, "predictions": 10, "seconds": 1.0, "events_per_s": 10.0,
                               "peak_memory_mb": 90.0},
              "teacher_sequences_per_s": {"cpu": {"1": 50.0, "128": 150.0}}, "teacher_cpu_batch128_over_batch1": 3.0,
              "cascade": run, "teacher_only": {**run, "teacher_calls_saved_pct": 0.0}, "cascade_speedup": 2.0,
              "cascade_accuracy_minus_teacher_only_pts": -0.5}
    text = format_bench(result)
    for fragment in ("10.0 events/s", "batch 128: 150.0 seq/s", "3.0x", "2.0x", "-0.5 points", "teacher-only"):
        assert fragment in text


def test_the_learning_bench_catches_up_on_a_log_and_serves_a_fresh_predictor(tmp_path, quick_teacher):
    """``bench_learning`` on the real embedded broker, small: the learner finds 3,000 labels waiting, catches up
    (64 a step), goes back to a step per label, and a fresh predictor serves what it learned and routes every event."""
    examples = load_examples("rotten_tomatoes", split="stream", limit=2500)
    result = bench_learning(Settings(data_dir=tmp_path, teacher_model=quick_teacher), examples, tmp_path,
                            labels=3000, events=2000, label_rate=200.0)
    assert result["learner_learned"] == 3000 and result["learner_labels_per_s"] > 0
    assert result["fresh_predictor"]["snapshot_version"] >= 3000
    assert result["predictor"]["predictions"] == 2000
    learner_log = (tmp_path / "learner.log").read_text()
    waiting = [int(n) for n in re.findall(r"catching up: (\d+) labels waiting", learner_log)]
    assert waiting and waiting[0] > 2000 and "caught up:" in learner_log, learner_log[-2000:]
