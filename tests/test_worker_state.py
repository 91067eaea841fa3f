"""The workers' own bookkeeping, in process: a student change relearns every label, an event near the size limit
is answered by the teacher, one whose records would outgrow the limit is dead-lettered, the lag gauge counts from
the committed offset and forgets revoked partitions, a duplicate escalation is answered once, the resume
assignor gives claimed partitions back, and a learner counts the labels waiting on all its partitions."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from aiokafka import TopicPartition

from streamer.kafka.resume_assignor import ResumeAssignor, decode_claims
from streamer.observability.metrics import WorkerMetrics
from streamer.records import Catalogue
from streamer.settings import Settings
from streamer.workers.group_worker import GroupWorker, _Rebalance
from streamer.workers.learner_worker import LearnerWorker
from streamer.workers.recent import RecentKeys
from streamer.workers.runtime import WorkerRuntime
from streamer.workers.student_logic import StudentLogic
from streamer.workers.teacher_logic import Incoming, TeacherLogic


class Collector:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict]] = []

    async def __call__(self, topic: str, key: bytes | None, value: bytes, headers=()) -> None:
        self.sent.append((topic, key, orjson.loads(value)))

    def on(self, topic: str) -> list[dict]:
        return [record for t, _, record in self.sent if t == topic]


class Stub:
    version = "stub"

    def predict(self, texts):
        return [("fresh", 0.9) for _ in texts]


def label(i: int) -> bytes:
    return orjson.dumps({"id": f"x{i}", "text": f"a fine film {i}", "label": "fresh", "teacher_version": "t",
                         "reason": "warmup", "student_label": None, "student_confidence": 0.0, "weight": 1.0,
                         "labelled_time": 1})


def test_changing_the_student_relearns_every_label_from_the_start(tmp_path):
    settings = Settings(data_dir=tmp_path, student="nb", checkpoint_path=tmp_path / "s.ckpt", warm_start=False)
    logic = StudentLogic(settings, Catalogue.load())
    assert all(logic.learn_label(label(i)) for i in range(10))
    logic.state.label_offsets.update({0: 10})
    logic.state.checkpoint("test")
    logic.state.lock.close()
    changed = StudentLogic(settings.replace(student="nb-binary"), Catalogue.load())
    assert changed.state.label_offsets == {} and len(changed.state.learned_ids) == 0
    assert all(changed.learn_label(label(i)) for i in range(10))  # none skipped as a duplicate
    assert changed.triage.student.version == 10


def run_event(settings: Settings, value: bytes) -> Collector:
    logic = StudentLogic(settings, Catalogue.load(), metrics=WorkerMetrics("student"))
    send = Collector()
    asyncio.run(logic.handle_event(value, "events", 0, 0, 1, send))
    return send


def test_an_event_just_under_the_size_limit_is_answered_by_the_teacher(tmp_path):
    settings = Settings(data_dir=tmp_path, student="nb", checkpoint_path=tmp_path / "s.ckpt", warm_start=False)
    value = orjson.dumps({"id": "big", "text": "word " * 19_980, "source": "x" * 40})
    assert settings.max_text_bytes - 200 < len(value) <= settings.max_text_bytes
    sent = run_event(settings, value)
    [esc] = sent.on("escalations")  # warm-up: escalated
    escalation_bytes = orjson.dumps(esc)
    assert len(escalation_bytes) > settings.max_text_bytes  # larger than the event: the old limit refused it
    teacher, answers = TeacherLogic(settings, Catalogue.load(), Stub()), Collector()
    asyncio.run(teacher.answer([Incoming(escalation_bytes, "escalations", 0, 0)], answers))
    assert [r["id"] for r in answers.on("predictions")] == ["big"] and not answers.on("dead-letter")


def test_an_event_whose_escalation_would_outgrow_the_limit_is_dead_lettered_as_too_large(tmp_path):
    settings = Settings(data_dir=tmp_path, student="nb", checkpoint_path=tmp_path / "s.ckpt", warm_start=False)
    # 1e15 is 4 bytes in the event and 18 once re-encoded (1000000000000000.0)
    value = b'{"id": "n", "text": "fine", "n": [' + b",".join([b"1e15"] * 19_000) + b"]}"
    assert len(value) <= settings.max_text_bytes
    sent = run_event(settings, value)
    [dead] = sent.on("dead-letter")
    assert dead["reason"] == "too_large" and "escalations record would be" in dead["error"]
    assert not sent.on("escalations")


def test_a_copy_of_an_escalation_is_answered_once(tmp_path):
    settings = Settings(data_dir=tmp_path, student="nb", checkpoint_path=tmp_path / "s.ckpt", warm_start=False)
    [esc] = run_event(settings, b'{"id": "e", "text": "fine"}').on("escalations")
    value = orjson.dumps(esc)
    teacher, answers = TeacherLogic(settings, Catalogue.load(), Stub()), Collector()
    asyncio.run(teacher.answer([Incoming(value, "escalations", 0, 0), Incoming(value, "escalations", 1, 7)], answers))
    asyncio.run(teacher.answer([Incoming(value, "escalations", 2, 3)], answers))
    assert len(answers.on("predictions")) == 1
    assert teacher.metrics.value("streamer_duplicates_skipped_total", topic="escalations") == 2
    reescalated = orjson.dumps({**esc, "escalated_time": esc["escalated_time"] + 1})  # a student replayed it
    asyncio.run(teacher.answer([Incoming(reescalated, "escalations", 0, 9)], answers))
    assert len(answers.on("predictions")) == 2


class FakeConsumer:
    def __init__(self, highwater: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> None:
        self._highwater, self._committed, self.seeks, self.commits = highwater, committed, {}, []

    def assignment(self):
        return set(self._highwater)

    def highwater(self, tp):
        return self._highwater[tp]

    async def committed(self, tp):
        return self._committed.get(tp)

    def seek(self, tp, offset):
        self.seeks[tp] = offset

    async def commit(self, offsets):
        from aiokafka.errors import CommitFailedError

        raise CommitFailedError("the group has rebalanced")


class Member(GroupWorker):
    role = "student"

    def topics(self):
        return ["events"]

    async def handle(self, batches, send):
        pass


def test_lag_counts_from_the_committed_offset_and_revoked_partitions_are_forgotten():
    metrics = WorkerMetrics("student")
    worker = Member(Settings(), WorkerRuntime(Settings(), metrics))
    idle, busy = TopicPartition("events", 0), TopicPartition("events", 1)
    consumer = FakeConsumer({idle: 500, busy: 900}, {idle: 500, busy: 700})
    listener = _Rebalance(worker, consumer)

    async def scenario():
        await listener.on_partitions_assigned({idle, busy})  # a restart: both partitions committed before
        await worker.note_committed(consumer)
        worker.runtime.record_lag(worker.lags(consumer))
        lags = (metrics.value("streamer_consumer_lag", topic="events", partition="0"),
                metrics.value("streamer_consumer_lag", topic="events", partition="1"))
        worker.processed(busy, 799)
        await listener.on_partitions_revoked({idle, busy})  # the commit is refused: busy/800 is kept as a claim
        return lags

    assert asyncio.run(scenario()) == (0, 200)
    assert "streamer_consumer_lag" not in metrics.exposition().decode().split("# TYPE streamer_consumer_lag gauge")[1]
    assert worker.claims() == {busy: 800}
    resumed = FakeConsumer({busy: 900}, {busy: 700})
    asyncio.run(_Rebalance(worker, resumed).on_partitions_assigned({busy}))
    assert resumed.seeks == {busy: 800} and worker.claims() == {busy: 800}  # to be committed at the next commit


def test_commits_wait_for_every_record_acknowledged_and_none_after_a_record_is_lost():
    worker = Member(Settings(), WorkerRuntime(Settings(), WorkerMetrics("student")))
    tp = TopicPartition("events", 0)

    async def scenario():
        loop = asyncio.get_running_loop()
        done, late, lost, also_lost = (loop.create_future() for _ in range(4))
        done.set_result("acked")
        worker._acks = [done, late]
        loop.call_later(0.05, late.set_result, "acked later")
        await worker.settle_acks()  # returns once the late one is acknowledged too
        assert late.done() and worker._acks == []
        worker.processed(tp, 41)
        worker._acks = [done, lost, also_lost]
        lost.set_exception(ConnectionError("record lost"))
        also_lost.set_exception(ConnectionError("record lost too"))
        with pytest.raises(ConnectionError, match="record lost"):
            await worker.settle_acks()
        assert worker._processed == {} and also_lost._log_traceback is False  # nothing committed; both failures read

    asyncio.run(scenario())


def test_the_resume_assignor_gives_claimed_partitions_back_and_spreads_the_rest():
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata as Meta

    class Cluster:
        def partitions_for_topic(self, topic):
            return set(range(6))

    tp = TopicPartition
    claims = {"a": {tp("events", 5): 10}, "b": {tp("events", 5): 40, tp("events", 4): 3}, "c": {}}
    members = {m: ResumeAssignor(lambda c=c: c).metadata(["events"]) for m, c in claims.items()}
    assert decode_claims(members["b"].user_data) == {tp("events", 5): 40, tp("events", 4): 3}
    members["d"] = Meta(0, ["events"], b"not ours")  # another assignor's user data: no claims
    out = {m: sorted(p.partition for p in a.partitions())
           for m, a in ResumeAssignor(dict).assign(Cluster(), members).items()}
    assert 5 in out["b"] and 4 in out["b"]  # the furthest claim wins
    assert sorted(p for ps in out.values() for p in ps) == list(range(6))
    assert sorted(len(ps) for ps in out.values()) == [1, 1, 2, 2]


def test_a_learner_counts_the_labels_waiting_on_every_partition_it_holds(tmp_path):
    """A fetch brings one partition's records at a time: the learner keeps catching up while another partition is
    still far behind, learns a backlog's tail catching up too, and returns to a step per label once at most 256
    labels wait; a learner keeping up starts catching up only above ``catch_up_labels``."""
    settings = Settings(data_dir=tmp_path, student="nb", warm_start=False, catch_up_labels=2000, catch_up_step=64)
    learner = LearnerWorker(StudentLogic(settings, Catalogue.load(), learner=True))
    parts = [TopicPartition("labels", p) for p in range(4)]
    learner.consumer = FakeConsumer({tp: 25_000 for tp in parts}, {})
    learner._assigned = set(parts)
    tail = [Offset(offset) for offset in range(23_500, 25_000)]  # partition 0's last 1,500 labels

    assert learner.waiting({parts[0]: tail}) == 1_500 + 3 * 25_000  # nothing learned from the others yet
    assert learner.learning_step({parts[0]: tail}) == 64
    learner.logic.state.label_offsets.update({1: 24_900, 2: 24_950, 3: 25_000})
    assert learner.waiting({parts[0]: tail}) == 1_500 + 100 + 50
    assert learner.learning_step({parts[0]: tail}) == 64  # the backlog's tail, still catching up
    assert learner.learning_step({parts[0]: tail[-100:]}) == 1  # 250 wait: caught up
    assert learner.learning_step({parts[0]: tail}) == 1  # 1,650 wait: keeping up, below catch_up_labels
    learner.logic.state.label_offsets.update({1: 20_000})
    assert learner.learning_step({parts[0]: tail}) == 64  # 6,550 wait


class Offset:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def test_keys_remembered_a_batch_at_once_are_those_remembered_one_by_one():
    rng = random.Random(5)
    for _ in range(200):
        size = rng.randint(1, 6)
        batches = [[rng.randint(0, 9) for _ in range(rng.randint(0, 8))] for _ in range(4)]
        one_by_one, batched = RecentKeys(size), RecentKeys(size)
        for batch in batches:
            for key in batch:
                one_by_one.add(key)
            batched.add_many(batch)
            assert list(batched) == list(one_by_one) and len(batched) <= size
