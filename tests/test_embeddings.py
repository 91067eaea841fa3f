"""Static embeddings distilled from the teacher: distilled once, cached beside it, referenced (never copied) by
checkpoints, and redistilled when the teacher changes."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import orjson
import pytest

from streamer.models.embeddings import (EMBEDDINGS_DIR, META_FILE, EmbeddingsError, StaticEmbeddings,
                                        ensure_embeddings, read_embeddings_meta)
from streamer.models.teacher import META_FILE as TEACHER_META
from streamer.records import Catalogue
from streamer.settings import Settings
from streamer.workers.student_logic import StudentLogic


def copy_teacher(source: str, to: Path, *, with_embeddings: bool) -> Path:
    shutil.copytree(source, to, ignore=None if with_embeddings else shutil.ignore_patterns(EMBEDDINGS_DIR))
    return to


def test_a_teacher_without_embeddings_gets_them_distilled_once_beside_it(quick_teacher, tmp_path):
    teacher = copy_teacher(quick_teacher, tmp_path / "teacher", with_embeddings=False)
    folder = ensure_embeddings(str(teacher), tmp_path / "data", progress=False)
    assert folder == teacher / EMBEDDINGS_DIR
    meta = read_embeddings_meta(folder)
    assert meta["teacher_version"] == orjson.loads((teacher / TEACHER_META).read_bytes())["version"]
    assert meta["pca_dims"] == 256 and meta["vocabulary"] > 20_000
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_embeddings(str(teacher), tmp_path / "data", progress=False) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # not distilled again
    vectors = StaticEmbeddings.load(folder).embed(["a warm and funny film", ""])
    assert vectors.shape == (2, 256) and abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4 and not vectors[1].any()


def test_a_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(EmbeddingsError, match="no teacher model at"):
        ensure_embeddings(str(tmp_path / "nowhere"), tmp_path)


def test_checkpoints_reference_the_table_and_a_changed_teacher_starts_a_fresh_student(quick_teacher, tmp_path):
    teacher = copy_teacher(quick_teacher, tmp_path / "teacher", with_embeddings=True)
    settings = Settings(data_dir=tmp_path, teacher_model=str(teacher), checkpoint_path=tmp_path / "s.ckpt")
    logic = StudentLogic(settings, Catalogue.load())
    for text, label in [("a warm, funny film", "fresh"), ("a dull, tedious mess", "rotten")] * 10:
        logic.triage.learn(text, label, student_label=None, student_confidence=0.0, weight=1.0, reason="warmup")
    table = logic.triage.student.model.embeddings.table
    assert len(pickle.dumps(logic.triage.student.state())) < table.nbytes / 4  # the table is not in the state
    logic.state.label_offsets = {0: 20}
    logic.state.checkpoint("test")
    logic.state.lock.close()

    restored = StudentLogic(settings, Catalogue.load())
    assert restored.triage.student.version == 20 and restored.state.label_offsets == {0: 20}
    assert restored.triage.student.model.embeddings is logic.triage.student.model.embeddings  # loaded once
    restored.state.lock.close()

    # the teacher is retrained in place and its embeddings distilled again (simulated: new versions on both)
    meta = orjson.loads((teacher / TEACHER_META).read_bytes())
    (teacher / TEACHER_META).write_bytes(orjson.dumps({**meta, "version": "retrained"}))
    emb_meta = teacher / EMBEDDINGS_DIR / META_FILE
    emb_meta.write_bytes(orjson.dumps({**orjson.loads(emb_meta.read_bytes()), "teacher_version": "retrained"}))
    StaticEmbeddings._loaded.clear()  # a new worker process
    fresh = StudentLogic(settings, Catalogue.load())
    assert fresh.triage.student.version == 0 and fresh.state.label_offsets == {}  # relearns every label
