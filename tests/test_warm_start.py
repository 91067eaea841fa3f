"""The students' warm start: texts the real (briefly trained) teacher labels offline, saved beside its
embeddings, learned by every fresh student before the stream, and how the triage and ``evaluate`` use it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import orjson
import pytest

from streamer.cli import main
from streamer.commands import evaluate
from streamer.datasets import load_examples
from streamer.models.embeddings import EMBEDDINGS_DIR
from streamer.models.warm_start import WARM_START_FILE, read_warm_start, write_warm_start
from streamer.settings import Settings
from streamer.tasks import get_task
from streamer.triage import build_triage
from streamer.triage.policies import REASON_CALIBRATION, REASON_WARMUP


@pytest.fixture
def own_teacher(quick_teacher: str, tmp_path: Path) -> str:
    """A private copy of the test teacher (its warm start must not reach other tests' students)."""
    return str(shutil.copytree(quick_teacher, tmp_path / "teacher"))


@pytest.fixture
def labelled_teacher(own_teacher: str, tmp_path: Path) -> str:
    """The copy, with a warm start the teacher labels from 60 rows of a user's CSV (its 40 % teacher split)."""
    rows = load_examples("rotten_tomatoes", split="teacher", limit=60)
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((e.text, e.label) for e in rows)
    assert main(["teacher", "distill", "--teacher-model", own_teacher, "--file", str(path),
                 "--data-dir", str(tmp_path / "data")]) == 0
    return own_teacher


def test_distill_with_a_file_labels_its_teacher_split_with_the_teacher(labelled_teacher: str, tmp_path: Path):
    saved = orjson.loads((Path(labelled_teacher) / EMBEDDINGS_DIR / WARM_START_FILE).read_bytes())
    split = load_examples(file=tmp_path / "mine.csv", split="teacher")
    assert saved["texts"] == [e.text for e in split] and len(split) == 24
    assert set(saved["labels"]) <= {"fresh", "rotten"}  # the teacher's labels, whatever the file said
    assert "mine.csv" in saved["source"]


def test_a_fresh_student_learns_the_warm_start_and_only_when_asked(labelled_teacher: str, tmp_path: Path):
    task = get_task("classify")
    warm = task.new_student(teacher_model=labelled_teacher, data_dir=tmp_path / "data", warm_start=True)
    cold = task.new_student(teacher_model=labelled_teacher, data_dir=tmp_path / "data")
    text = load_examples("rotten_tomatoes", split="stream", limit=1)[0].text
    assert (warm.version, warm.warm_labels) == (0, 24) and warm.predict(text)[0] in {"fresh", "rotten"}
    assert (cold.warm_labels, cold.predict(text)) == (0, (None, 0.0))


@pytest.mark.parametrize("kind", ["embed-nb", "nb"])
def test_a_warm_start_learned_in_batches_is_the_student_learning_one_by_one_makes(quick_teacher: str, tmp_path: Path,
                                                                                  kind: str):
    task = get_task("classify")
    examples = load_examples("rotten_tomatoes", split="teacher", limit=600)  # more than one warm-start batch
    texts, labels = [ex.text for ex in examples], [ex.label for ex in examples]
    batched, one_by_one = (task.new_student(kind, teacher_model=quick_teacher, data_dir=tmp_path / "data")
                           for _ in range(2))
    batched.warm_start(texts, labels)
    for text, label in zip(texts, labels):
        one_by_one.learn_one(text, label)
    probes = [ex.text for ex in load_examples("rotten_tomatoes", split="stream", limit=200)]
    assert [batched.predict(p) for p in probes] == [one_by_one.predict(p) for p in probes]
    assert (batched.version, batched.warm_labels) == (0, 600)


def test_labels_of_an_older_teacher_are_not_used(labelled_teacher: str, tmp_path: Path):
    folder = Path(labelled_teacher) / EMBEDDINGS_DIR
    write_warm_start(folder, ["fine film"], ["fresh"], teacher_version="an-older-teacher", source="test")
    assert read_warm_start(folder, teacher_version="the-current-teacher") is None
    student = get_task("classify").new_student(teacher_model=labelled_teacher, warm_start=True)
    assert student.warm_labels == 0


def test_a_warm_started_students_warm_up_calibrates_the_policy(labelled_teacher: str, tmp_path: Path):
    """Both students escalate every warm-up event; only the warm-started one's guesses reach the policy."""
    settings = Settings(teacher_model=labelled_teacher, data_dir=tmp_path / "data", warmup_labels=30)
    stream = load_examples("rotten_tomatoes", split="stream", limit=30)
    for warm, reason in ((True, REASON_CALIBRATION), (False, REASON_WARMUP)):
        triage = build_triage(settings.replace(warm_start=warm))
        routes = [triage.route(e.text) for e in stream]
        assert all(r.escalate for r in routes)
        assert {r.reason for r in routes[1:]} == {reason}
        for e, r in zip(stream, routes):
            triage.learn(e.text, e.label, student_label=r.label, student_confidence=r.confidence, weight=r.weight,
                         reason=r.reason)
        assert len(triage.policy.labelled) == (30 if warm else 0)  # a blank student's warm-up says nothing


def test_evaluate_turns_the_warm_start_off_when_it_holds_the_replayed_texts(labelled_teacher: str, tmp_path: Path):
    settings = Settings(teacher_model=labelled_teacher, data_dir=tmp_path / "data")
    split = load_examples(file=tmp_path / "mine.csv", split="teacher")
    stream = load_examples(file=tmp_path / "mine.csv", split="stream")
    assert evaluate.warm_start_for(settings, stream, "mine")[0] == 24
    texts, line = evaluate.warm_start_for(settings, split + stream, "mine")  # as --split all would replay
    assert texts == 0 and "24 of the 60 replayed texts" in line
    assert evaluate.warm_start_for(settings.replace(warm_start=False), stream, "mine") == (0, "student warm start: off")
