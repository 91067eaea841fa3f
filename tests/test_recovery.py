"""Nothing lost: bad input, SIGKILLed workers, a teacher outage, SIGTERM and broker loss.

Real worker processes on the real embedded broker. The teacher is the briefly
trained one from conftest.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from streamer.kafka import free_port
from streamer.records.catalogue import DEAD_LETTER, ESCALATIONS, EVENTS, LABELS, PREDICTIONS
from streamer.datasets import load_examples
from streamer.workers.supervisor import WorkerProcesses
from streamer.kafka.topic_io import produce
from streamer.workers.watchdog import EXIT_BROKER_LOST

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings(settings):
    """Replica students: these tests are about a student worker's own checkpoint of what it learned."""
    return settings.replace(learning="replica")

MAX_TEXT_BYTES = 2000

#: kind of bad event -> (its bytes, given a number, and the dead-letter reason it must get)
BAD_EVENTS = {
    "not_json": (lambda i: b"not json %d" % i, "invalid_json"),
    "not_object": (lambda i: b"[%d, 2]" % i, "schema"),
    "missing_id": (lambda i: b'{"text": "no id %d"}' % i, "schema"),
    "empty_id": (lambda i: b'{"id": "", "text": "empty id %d"}' % i, "schema"),
    "missing_text": (lambda i: b'{"id": "bad-%d"}' % i, "schema"),
    "empty_text": (lambda i: b'{"id": "bad-%d", "text": ""}' % i, "schema"),
    "wrong_types": (lambda i: b'{"id": %d, "text": ["a", "list"]}' % i, "schema"),
    "too_large": (lambda i: orjson.dumps({"id": f"big-{i}", "text": "x" * MAX_TEXT_BYTES}), "too_large"),
    "invalid_utf8": (lambda i: b'{"id": "u%d", "text": "\xff\xfe"}' % i, "invalid_utf8"),
}
BAD_PER_KIND = 100


def original_bytes(dead: dict) -> bytes:
    if "value_b64" in dead:
        return base64.b64decode(dead["value_b64"])
    return dead.get("value_text", "").encode()


def wait_for_final_answers(read_all, settings, ids: set[str], timeout: float) -> dict[str, list[dict]]:
    """Poll ``predictions`` until every id in ``ids`` has a non-provisional answer; all answers by id."""
    deadline = time.monotonic() + timeout
    while True:
        answers: dict[str, list[dict]] = {}
        for record in read_all(settings, PREDICTIONS):
            answers.setdefault(record["id"], []).append(record)
        final = {i for i, rs in answers.items() if any(not r.get("provisional") for r in rs)}
        if ids <= final or time.monotonic() > deadline:
            return answers
        time.sleep(2)


def escalation_share(escalated_ids: set[str], ids: list[str]) -> float:
    return sum(i in escalated_ids for i in ids) / len(ids)


def interleave(good: list[bytes], bad: list[bytes]) -> list[bytes]:
    step = max(len(good) // max(len(bad), 1), 1)
    out, b = [], iter(bad)
    for i, g in enumerate(good):
        out.append(g)
        if i % step == 0:
            out.extend(x for x in [next(b, None)] if x is not None)
    out.extend(b)
    return out


def test_nothing_is_lost_through_bad_input_crashes_and_a_teacher_outage(tmp_path, quick_teacher, settings,
                                                                        topic_records):
    read_all = topic_records
    env = {"STREAMER_CHECKPOINT_INTERVAL": "1", "STREAMER_TEACHER_TIMEOUT": "2",
           "STREAMER_MAX_TEXT_BYTES": str(MAX_TEXT_BYTES)}
    workers = WorkerProcesses(settings, settings.broker_url, quick_teacher, tmp_path, env=env)
    examples = load_examples("rotten_tomatoes", split="stream", limit=3000)
    ids = [f"e{i}" for i in range(len(examples))]
    good = [orjson.dumps({"id": i, "text": ex.text}) for i, ex in zip(ids, examples)]
    bad_by_kind = {kind: [make(i) for i in range(BAD_PER_KIND)] for kind, (make, _) in BAD_EVENTS.items()}
    bad = [value for values in zip(*bad_by_kind.values()) for value in values]  # kinds mixed
    bad_labels = [b"not json", b'{"id": "l1"}', b"[]", b"\xff", b'{"id": "l2", "text": "t", "label": 3}']
    bad_escalations = [b"not json", b'{"id": "s1", "text": "t"}', b"{}", b"\xfe", b'{"id": 1}']
    thirds = len(bad) // 3

    def feed(values: list[bytes]) -> None:
        asyncio.run(produce(settings, EVENTS, values, rate=250, progress=False))

    workers.start("student")
    workers.start("teacher")
    try:
        workers.wait_ready(timeout=120)
        # Phase 1: 1500 events with a third of the bad ones, then malformed labels and escalations.
        feed(interleave(good[:1500], bad[:thirds]))
        asyncio.run(produce(settings, LABELS, bad_labels, progress=False))
        asyncio.run(produce(settings, ESCALATIONS, bad_escalations, progress=False))
        wait_for_final_answers(read_all, settings, set(ids[:1500]), timeout=180)
        escalated_before = {r["id"] for r in read_all(settings, ESCALATIONS) if "id" in r}
        share_before = escalation_share(escalated_before, ids[1000:1500])

        # Phase 2: SIGKILL the student mid-stream, then the teacher; restart the student at once.
        phase2 = threading.Thread(target=feed, args=(interleave(good[1500:2000], bad[thirds:2 * thirds]),))
        phase2.start()
        time.sleep(1.0)
        workers.kill("student")
        workers.start("student")
        time.sleep(0.5)
        workers.kill("teacher")
        phase2.join()
        workers.wait_ready(timeout=120, names=("student",))
        escalated_mid = {r["id"] for r in read_all(settings, ESCALATIONS) if "id" in r}

        # Phase 3: the teacher is still down: escalations wait in Kafka, late ones get provisional answers.
        phase3 = threading.Thread(target=feed, args=(interleave(good[2000:], bad[2 * thirds:]),))
        phase3.start()
        time.sleep(4.0)
        workers.start("teacher")
        phase3.join()
        workers.wait_ready(timeout=120, names=("teacher",))
        answers = wait_for_final_answers(read_all, settings, set(ids), timeout=300)
        workers.check_alive()
        dead = read_all(settings, DEAD_LETTER)
        escalated_after = {r["id"] for r in read_all(settings, ESCALATIONS) if "id" in r} - escalated_mid
    finally:
        workers.stop()

    # Every good event has a final answer, and nothing else was answered.
    final = {i for i, rs in answers.items() if any(not r.get("provisional") for r in rs)}
    assert set(ids) - final == set()
    assert set(answers) - set(ids) == set()
    # Every bad record is on dead-letter once per source offset, with the reason of its kind.
    by_source = {(d["source_topic"], d["source_partition"], d["source_offset"]): d for d in dead}
    events_dead = [d for (topic, _, _), d in by_source.items() if topic == EVENTS]
    reasons = {original_bytes(d): d["reason"] for d in events_dead}
    for kind, values in bad_by_kind.items():
        want = BAD_EVENTS[kind][1]
        assert all(reasons.get(v) == want for v in values), (kind, [reasons.get(v) for v in values[:3]])
    assert len(events_dead) == len(bad)
    assert sum(topic == LABELS for topic, _, _ in by_source) == len(bad_labels)
    assert sum(topic == ESCALATIONS for topic, _, _ in by_source) == len(bad_escalations)
    # Provisional answers were published while the teacher was down, each followed by the teacher's.
    provisional = {i for i, rs in answers.items() if any(r.get("provisional") for r in rs)}
    assert provisional, "no provisional answer while the teacher was down"
    assert all(any(r["source"] == "teacher" for r in answers[i]) for i in provisional)
    # The restarted student restored its checkpoint: no fall back to warm-up.
    student_log = (tmp_path / "student.log").read_text()
    assert "restored the student checkpoint" in student_log
    first_after = [i for i in ids[2000:] if i not in escalated_mid][:500]
    share_after = escalation_share(escalated_after, first_after)
    assert share_after <= share_before + 0.1, (share_before, share_after)


def test_sigterm_stops_gracefully_and_writes_a_checkpoint(tmp_path, settings, topic_records):
    read_all = topic_records
    workers = WorkerProcesses(settings, settings.broker_url, settings.teacher_model_ref, tmp_path)
    workers.start("student")
    try:
        workers.wait_ready(timeout=90)
        asyncio.run(produce(settings, EVENTS, [orjson.dumps({"id": f"g{i}", "text": f"event {i}"})
                                               for i in range(50)], progress=False))
        deadline = time.monotonic() + 30
        while len(read_all(settings, ESCALATIONS, idle=0.5)) < 50 and time.monotonic() < deadline:
            time.sleep(0.5)
        proc = workers.procs["student"]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        workers.stop()
    assert code == 0
    assert (tmp_path / "student.ckpt").is_file()
    assert "checkpoint written (shutdown)" in (tmp_path / "student.log").read_text()
    assert len(read_all(settings, ESCALATIONS, idle=0.5)) == 50


def test_worker_exits_with_a_clear_message_when_the_broker_goes_away(tmp_path, broker, settings):
    workers = WorkerProcesses(settings, settings.broker_url, settings.teacher_model_ref, tmp_path,
                              env={"STREAMER_BROKER_TIMEOUT": "4"})
    workers.start("student")
    workers.wait_ready(timeout=90)
    broker.stop()
    proc = workers.procs["student"]
    try:
        code = proc.wait(timeout=60)
    finally:
        workers.stop()
    log = (tmp_path / "student.log").read_text()
    assert code == EXIT_BROKER_LOST, log[-2000:]
    assert "unreachable (attempt 1" in log and "exiting with status 3" in log
    assert "checkpoint written (broker lost)" in log


def test_worker_refuses_to_start_without_a_broker(tmp_path):
    url = f"kafka://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "streamer", "worker", "student", "--broker", url,
                           "--broker-timeout", "2", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_BROKER_LOST
    assert "no Kafka broker answered" in done.stderr and "streamer broker" in done.stderr


def test_checkpoint_path_defaults_into_the_data_dir(tmp_path: Path):
    from streamer.settings import Settings

    import socket

    assert Settings(data_dir=tmp_path).student_checkpoint == (
        tmp_path / "checkpoints" / f"student-{socket.gethostname()}.ckpt")


def test_two_workers_cannot_share_a_checkpoint(tmp_path: Path):
    from streamer.triage.checkpoint import lock_checkpoint

    path = tmp_path / "student.ckpt"
    held = lock_checkpoint(path)
    done = subprocess.run([sys.executable, "-c", "from pathlib import Path; from streamer.triage.checkpoint import "
                           f"lock_checkpoint; lock_checkpoint(Path({str(path)!r}))"], capture_output=True, text=True)
    held.close()
    assert done.returncode != 0 and "another student worker is using the checkpoint" in done.stderr
    lock_checkpoint(path).close()  # free again once the holder is gone



def test_a_checkpoint_restores_the_student_and_keeps_the_policy_only_if_its_settings_match(tmp_path: Path,
                                                                                         quick_teacher: str):
    from streamer.records.catalogue import Catalogue
    from streamer.triage.checkpoint import Checkpoint, write_checkpoint
    from streamer.settings import Settings
    from streamer.workers.student_logic import StudentLogic
    from streamer.triage import build_triage, triage_config

    settings = Settings(data_dir=tmp_path, target=0.9, teacher_model=quick_teacher)
    triage = build_triage(settings)
    for text, label in [("warm funny film", "fresh"), ("dull boring mess", "rotten")] * 5:
        triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    write_checkpoint(settings.student_checkpoint, Checkpoint(triage, {0: 10}, triage_config(settings)))

    same = StudentLogic(settings, Catalogue.load())
    assert same.triage.student.version == 10 and same.state.label_offsets == {0: 10}
    same.state.lock.close()  # as if that worker had exited
    changed = StudentLogic(settings.replace(target=0.95), Catalogue.load())
    assert changed.triage.student.version == 10 and changed.triage.policy.target == 0.95
    changed.state.lock.close()
    other_student = StudentLogic(settings.replace(student="nb-binary"), Catalogue.load())
    assert other_student.triage.student.version == 0 and other_student.state.label_offsets == {}
