"""The learner and its predictors on the real embedded broker, with real worker processes.

One learner learns the labels and publishes snapshots; student workers (``STREAMER_LEARNING=learner``)
serve them without learning, scaled from 1 to 3 and back to 1 mid-stream. Meanwhile the learner is SIGKILLed
and a standby takes over; the killed one comes back (standing by: it learned less), and takes over again, from
its own checkpoint, when the standby stops. A predictor started after the stream serves the newest snapshot at
once. Every event is answered once throughout.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter

import pytest

from stream_kit import answers_by_id, events, feed, read_all, wait_for
from streamer.records import EVENTS, LABELS, ensure_topics
from streamer.workers.supervisor import WorkerProcesses

pytestmark = pytest.mark.integration

SERVING = re.compile(r"serving student snapshot (\d+) .*read in ([\d.]+) s, loaded in ([\d.]+) s")
RESUMED = re.compile(r"learning 4 partitions of \S+ from offsets \{([^}]*)\} \((\d+) labels learned\)")


def test_a_learner_feeds_predictors_and_hands_over_without_losing_an_event(tmp_path, settings):
    settings = settings.replace(learning="learner", checkpoint_interval=2.0)
    asyncio.run(ensure_topics(settings))
    workers = WorkerProcesses(settings, settings.broker_url, settings.teacher_model_ref, tmp_path)
    values = events(1600, "l")
    try:
        for name, role in (("teacher", "teacher"), ("learner-1", "learner"), ("student-1", "student")):
            workers.start(role, name=name)
        workers.wait_ready(timeout=180)
        workers.start("learner", name="learner-2")  # joins second: stands by
        workers.wait_ready(timeout=60)
        feeder = threading.Thread(target=feed, args=(settings, values, 40.0), daemon=True)
        feeder.start()
        time.sleep(8)
        workers.start("student", name="student-2")  # predictors 1 -> 3 -> 1 through the learners' handovers
        workers.start("student", name="student-3")
        time.sleep(4)
        workers.kill("learner-1")  # mid-stream: the standby takes over (after the session timeout)
        time.sleep(10)
        workers.start("learner", name="learner-1")  # back with its checkpoint; the other one has learned more
        time.sleep(10)
        seen = len((tmp_path / "learner-1.log").read_text())
        assert workers.terminate("learner-2") == 0  # learner-1 takes over again, from its checkpoint
        resumed = wait_for(tmp_path / "learner-1.log", RESUMED, timeout=60, after=seen)
        assert workers.terminate("student-2") == 0 and workers.terminate("student-3") == 0
        feeder.join(timeout=300)
        ids = {f"l{i}" for i in range(len(values))}
        answers = answers_by_id(settings, ids, timeout=180)
        workers.start("student", name="late")  # a fresh predictor, after the whole stream
        fresh = wait_for(tmp_path / "late.log", SERVING, timeout=60)
        workers.check_alive()
        sent = Counter(r["id"] for r in read_all(settings, EVENTS))
        labels = read_all(settings, LABELS)
    finally:
        workers.stop()
    assert not feeder.is_alive() and ids - set(answers) == set()
    assert {i: len(rs) for i, rs in answers.items() if len(rs) != sent[i]} == {}
    assert {i: n for i, n in Counter(r["id"] for r in labels).items() if n > sent[i]} == {}
    by_student = [rs[0] for rs in answers.values() if rs[0]["source"] == "student"]
    assert len(by_student) > 100, "the predictor served no learned snapshot"
    assert min(r["student_version"] for r in by_student) >= settings.warmup_labels
    offsets, learned = resumed.group(1), int(resumed.group(2))
    assert learned > 0 and any(int(o.split(":")[1]) > 0 for o in offsets.split(",")), resumed.group(0)
    assert int(fresh.group(1)) >= max(r["student_version"] for r in by_student)
    print(f"learner-1 resumed at {learned} labels ({offsets}); the fresh predictor served snapshot "
          f"{fresh.group(1)} (read in {fresh.group(2)} s, loaded in {fresh.group(3)} s); {len(by_student)} of "
          f"{len(ids)} events answered by the predictor")
    for name in ("teacher", "learner-1", "learner-2", "student-1", "student-2", "student-3", "late"):
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text(), name
