"""Broker outages shorter than ``broker_timeout``: nothing lost, nothing answered twice, no worker exits.

The embedded broker runs on durable storage (S3, on a local server: see ``tests/outage_kit.py``) so it can be
SIGKILLed and restarted with its data, frozen with SIGSTOP, cut off behind a TCP proxy that refuses every
connection, or run as two broker processes on one storage of which one is killed. A student (a replica) and a
teacher worker (real processes) answer a stream of events across each outage; then every event has exactly one
answer, every label was learned once, and both workers are still running. The restart is also run with a
learner and a predictor.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import orjson
import pytest

from outage_kit import DurableBroker, TcpProxy
from stream_kit import answers_by_id, events, feed, read_all
from streamer.kafka import free_port
from streamer.records import EVENTS, LABELS, ensure_topics
from streamer.settings import Settings
from streamer.workers.supervisor import WorkerProcesses

pytestmark = pytest.mark.integration

#: How long the broker stays away in each outage (seconds); the workers wait up to BROKER_TIMEOUT.
DOWN_FOR = {"restart": 10.0, "refuse": 30.0, "freeze": 20.0, "lose-one-of-two": 0.0}
BROKER_TIMEOUT = 90.0
#: Events per second the test's producer sends (1,600 of them): the stream runs before, through and after the outage.
FEED_RATE = 40.0


@pytest.mark.parametrize(("outage", "learning"), [(outage, "replica") for outage in DOWN_FOR] + [("restart", "learner")])
def test_a_broker_outage_loses_nothing_and_answers_each_event_once(outage, learning, tmp_path, s3, quick_teacher):
    storage = s3.bucket()
    proxy: TcpProxy | None = None
    second: DurableBroker | None = None
    if outage == "restart" or outage == "freeze":
        broker = DurableBroker(s3, storage, tmp_path / "broker.log").start()
        bootstrap = broker.bootstrap
    else:  # clients know the cluster only as the proxy's address (the brokers advertise it)
        ports = [free_port(), free_port()]
        proxy = TcpProxy(*ports[:1 if outage == "refuse" else 2]).start()
        broker = DurableBroker(s3, storage, tmp_path / "broker.log", port=ports[0], advertised_port=proxy.port)
        broker.start()
        if outage == "lose-one-of-two":
            second = DurableBroker(s3, storage, tmp_path / "broker-2.log", port=ports[1],
                                   advertised_port=proxy.port).start()
        bootstrap = f"127.0.0.1:{proxy.port}"
    settings = Settings(broker=f"kafka://{bootstrap}", data_dir=tmp_path / "data", teacher_model=quick_teacher,
                        learning=learning,
                        broker_timeout=BROKER_TIMEOUT, checkpoint_interval=2.0)
    asyncio.run(ensure_topics(settings))
    workers = WorkerProcesses(settings, settings.broker_url, quick_teacher, tmp_path)
    values = events(1600, "o")
    try:
        workers.start("student")
        workers.start("teacher")
        if learning == "learner":
            workers.start("learner")
        workers.wait_ready(timeout=180)
        feeder = threading.Thread(target=feed, args=(settings, values, FEED_RATE), daemon=True)
        feeder.start()
        time.sleep(8)  # mid-stream: events keep coming in and both workers are busy
        down_at = time.monotonic()
        if outage == "restart":
            broker.restart(down_for=DOWN_FOR[outage])
        elif outage == "refuse":
            proxy.refuse()
            time.sleep(DOWN_FOR[outage])
            proxy.accept()
        elif outage == "freeze":
            broker.freeze()
            time.sleep(DOWN_FOR[outage])
            broker.thaw()
        else:
            broker.kill()  # the cluster goes on with the second broker
        outage_s = time.monotonic() - down_at
        feeder.join(timeout=300)
        ids = {orjson.loads(v)["id"] for v in values}
        answers = answers_by_id(settings, ids, timeout=300)
        workers.check_alive()  # no worker exited
        sent = Counter(r["id"] for r in read_all(settings, EVENTS))  # the feeder's retries may store an event twice
        labels = read_all(settings, LABELS)
    finally:
        workers.stop()
        for b in (broker, second):
            if b is not None:
                b.stop()
        if proxy is not None:
            proxy.stop()
    assert ids - set(answers) == set()
    assert not feeder.is_alive()
    # at most one answer per event record on the topic (a record the feeder's own retry stored twice may be answered
    # twice, or once: its two escalations can share a millisecond, and the teacher then skips the second as a
    # copy). An answer is its source and decision time: a worker's send retried after a lost acknowledgement can
    # store the same answer twice on a broker without idempotent producers (the embedded one), a copy, not a second
    answered = {i: {(r["source"], r["decided_time"]) for r in rs} for i, rs in answers.items()}
    twice = {i: sorted(a) for i, a in answered.items() if len(a) > sent[i]}
    assert twice == {}, (len(twice), sorted(twice.items())[:5])
    copies = sum(len(rs) for rs in answers.values()) - sum(len(a) for a in answered.values())
    print(f"{outage}/{learning}: broker away {outage_s:.1f} s; {len(ids)} events, {sum(sent.values()) - len(sent)} "
          f"stored twice by the feeder, every one answered, none twice ({copies} answers stored twice by a retried send)")
    labelled = Counter(i for i, _ in {(r["id"], r["labelled_time"]) for r in labels})
    assert {i: n for i, n in labelled.items() if n > sent[i]} == {}  # each escalated event labelled once
    for name in ("student", "teacher") + (("learner",) if learning == "learner" else ()):
        log = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in log, name
    if learning == "learner":  # the predictor served the learner's snapshots across the restart
        assert "serving student snapshot" in (tmp_path / "student.log").read_text()
