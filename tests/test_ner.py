"""NER triage: BIO helpers, subword alignment, the student's features, and a NER stream on the broker."""

from __future__ import annotations


import orjson
import pytest

from streamer.records.catalogue import PREDICTIONS, Catalogue
from streamer.datasets import load_examples
from streamer.commands.demo import run_demo
from streamer.models.bio import align_word_labels, entities, entity_f1, entity_spans
from streamer.models.tagger import NERStudent, token_features
from streamer.models.teacher import NERTeacher
from streamer.records import student_prediction
from streamer.settings import Settings
from streamer.tasks import get_task


def test_bio_spans_treat_a_stray_inside_tag_as_a_new_entity():
    assert entity_spans(["O", "I-person", "I-person", "B-person", "I-geo-loc"]) == {
        ("person", 1, 3), ("person", 3, 4), ("geo-loc", 4, 5)}
    assert entity_spans(["O", "O"]) == set()


def test_entity_offsets_point_into_the_text():
    text = "@bob saw The Dark Knight in NYC"
    found = entities(text, "O O B-movie I-movie I-movie O B-geo-loc")
    assert [(e["type"], text[e["start"]:e["end"]]) for e in found] == [("movie", "The Dark Knight"), ("geo-loc", "NYC")]


def test_entity_f1_needs_exact_span_and_type():
    assert entity_f1(["B-person I-person"], ["B-person O"])["f1"] == 0.0
    assert entity_f1(["B-person I-person"], ["B-person I-person"])["f1"] == 1.0
    assert entity_f1(["B-person O"], ["B-company O"])["precision"] == 0.0


def test_first_subword_carries_the_word_tag():
    assert align_word_labels([None, 0, 1, 1, 1, 2, None], ["O", "B-person", "O"], {"O": 0, "B-person": 1}) == [
        -100, 0, 1, -100, -100, 0, -100]


def test_token_features_see_shape_affixes_neighbours_and_position():
    feats = token_features(["Visit", "@NASA", "today"], 1)
    assert {"w=@nasa", "shape=@X", "prev=visit", "next=today", "twitter=@", "is_upper", "prev_title"} <= set(feats)
    assert "is_first" in token_features(["Visit"], 0) and "is_last" in token_features(["Visit"], 0)


def test_student_learns_tags_and_binary_policy_never_answers_entities():
    full, binary = NERStudent(), NERStudent(binary=True)
    for student in (full, binary):
        for _ in range(10):
            student.learn("we met Obama today", "O O B-person O")
            student.learn("we met them today", "O O O O")
    assert full.predict("we met Obama today")[0] == "O O B-person O" and full.predict("we met Obama today")[1] > 0
    assert binary.predict("we met Obama today")[1] == 0.0
    assert binary.predict("we met them today")[1] > 0.5
    with pytest.raises(ValueError):
        full.learn("two tokens", "O")


def test_ner_prediction_records_carry_entities():
    record = get_task("ner").enrich(student_prediction({"id": "1", "text": "hi Ann"}, "O B-person", 0.9, 3, 0.8, 0),
                                    "hi Ann")
    assert record["entities"] == [{"type": "person", "text": "Ann", "start": 3, "end": 6}]
    assert Catalogue.load()["predictions"].validate(orjson.loads(orjson.dumps(record))) is None


def test_ner_teacher_tags_every_word(quick_ner_teacher):
    teacher = NERTeacher(quick_ner_teacher, device="cpu", max_length=16)
    long = " ".join(["word"] * 40)  # truncated: the words past max_length are tagged O
    (tags_short, conf), (tags_long, _) = teacher.predict(["Barack Obama visited Paris", long])
    assert len(tags_short.split(" ")) == 4 and 0.0 < conf <= 1.0
    assert len(tags_long.split(" ")) == 40


@pytest.mark.integration
def test_ner_stream_on_the_embedded_broker(tmp_path, quick_ner_teacher, settings, topic_records):
    ner = settings.replace(task="ner", teacher_model=quick_ner_teacher, warmup_labels=50)
    report = run_demo(ner, dataset="wnut16", events=400, broker_given=True, show_progress=False, timeout=240)
    assert report["predictions"] == 400 and report["missing"] == 0
    assert report["answered_by_teacher"] >= 50 and report["entity_f1"]["all"] is not None
    assert report["task"] == "ner"
    texts = {e.id: e.text for e in load_examples("wnut16", split="stream", limit=400)}
    preds = topic_records(ner, PREDICTIONS)
    assert len(preds) == 400
    for p in preds:
        text = texts[p["id"].split("-", 1)[1]]
        assert len(p["label"].split(" ")) == len(text.split(" "))
        assert all(text[e["start"]:e["end"]] == e["text"] for e in p["entities"])
    assert sum(bool(p["entities"]) for p in preds) > 0
    assert Settings(task="ner").student_kind == "ner-embed"
