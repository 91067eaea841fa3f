"""The embedding student's halves: the network half learns what the linear half cannot, and a checkpoint
written before the network half existed (or before it was float32) still loads and predicts as it did."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np

import pytest

from streamer.models.embedding_student import (BIGRAM_BUCKETS, EmbeddingMLP, EmbeddingSoftmax, EmbeddingStudent,
                                             TokenNaiveBayes)
from streamer.models.embeddings import StaticEmbeddings, Tokens, word_cache_of
from streamer.records import Catalogue
from streamer.settings import Settings
from streamer.triage.policies import FixedPolicy
from streamer.triage.router import Feedback, Triage
from streamer.triage.snapshot import SnapshotAssembler, decode_chunk, open_snapshot, pack_snapshot, pickle_snapshot
from streamer.workers.student_logic import StudentLogic


def test_the_network_half_separates_what_the_linear_half_cannot():
    """XOR in two dimensions: no softmax regression gets it, the one-hidden-layer half does."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    linear, network = EmbeddingSoftmax(2), EmbeddingMLP(2, hidden=32)
    for head in (linear, network):
        head.add_class()
        head.add_class()
        for x, label in zip(X[:5000], y[:5000]):
            head.learn(x, int(label))
    accuracy = {name: float((head.probabilities(X[5000:]).argmax(axis=1) == y[5000:]).mean())
                for name, head in (("linear", linear), ("network", network))}
    assert accuracy["network"] > 0.9 and accuracy["linear"] < 0.65, accuracy


@pytest.mark.parametrize("texts", [300, 3000])  # 3,000 texts of 3 classes: keys past int32, sorted as int64
def test_naive_bayes_counts_each_texts_distinct_features_once_per_class(texts):
    """Learned in one batch, the counts are those of a plain count of each text's distinct tokens and token
    bigrams (hashed as documented) under its class, whatever the key type the batch is sorted with."""
    rng = np.random.default_rng(texts)
    vocabulary = 10
    token_lists = [rng.integers(0, vocabulary, rng.integers(0, 9)).tolist() for _ in range(texts)]
    ys = rng.integers(0, 3, texts)
    nb = TokenNaiveBayes(vocabulary)
    for _ in range(3):
        nb.add_class()
    nb.learn_many(Tokens.of(token_lists), ys)
    expected = np.zeros((3, vocabulary + BIGRAM_BUCKETS))
    for ids, y in zip(token_lists, ys):
        pairs = {vocabulary + (a * 1_000_003 + b) % BIGRAM_BUCKETS for a, b in zip(ids, ids[1:])}
        for feature in set(ids) | pairs:
            expected[y, feature] += 1
    assert np.array_equal(nb.counts, expected)
    assert np.array_equal(nb.totals, expected.sum(axis=1))
    assert np.array_equal(nb.class_counts, np.bincount(ys, minlength=3))
    assert nb.features_seen == int((expected.sum(axis=0) > 0).sum())


def test_a_checkpoint_from_before_the_network_half_predicts_as_it_did(tmp_path):
    """An embedding student pickled before :class:`EmbeddingMLP` existed has no ``mlp``: it loads and keeps
    predicting with its softmax and naive Bayes halves alone."""
    folder = tmp_path / "emb"
    StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film"], dims=8)
    student = EmbeddingStudent(StaticEmbeddings.load(folder))
    for text, label in [("warm funny film", "fresh"), ("dull boring film", "rotten")] * 20:
        student.learn(text, label)
    model = student.model
    for name in ("mlp", "mlp_share", "hidden"):  # what an old pickle lacks
        del model.__dict__[name]
    old = pickle.loads(pickle.dumps(student))
    texts = ["funny warm", "boring dull film", "film"]
    tokens = old.model.embeddings.token_ids(texts)
    expected = (old.model.weight * old.model.head.probabilities(old.model.embeddings.mean_vectors(tokens))
                + (1 - old.model.weight) * old.model.nb.probabilities(tokens))
    assert np.allclose(old.model.probability_rows(texts), expected)
    old.learn("warm film", "fresh")  # and it still learns
    assert old.predict("funny warm")[0] == "fresh"


def test_the_running_standardisation_of_a_batch_is_that_of_its_vectors_one_by_one():
    rng = np.random.default_rng(5)
    X = rng.normal(3.0, 2.0, size=(500, 4))
    one, batched = EmbeddingSoftmax(4), EmbeddingSoftmax(4)
    for x in X:
        one.observe(x)
    for start in range(0, 500, 37):
        batched.observe(X[start:start + 37])
    assert one.seen == batched.seen == 500
    assert np.allclose(one.mean, X.mean(axis=0)) and np.allclose(batched.mean, one.mean)
    assert np.allclose(batched.sum_sq, one.sum_sq) and np.allclose(one.sum_sq / 499, X.var(axis=0, ddof=1))


def test_heads_that_learn_several_labels_a_step_learn_them_as_well_and_the_same_however_they_come():
    """The embedding student's heads take 8 labels a step: the network half still gets XOR, the linear half
    what a line separates, and labels given one at a time or all at once make the same heads."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 2))
    xor = (X[:, 0] * X[:, 1] > 0).astype(int)
    line = (X[:, 0] + X[:, 1] > 0).astype(int)
    network, linear = EmbeddingMLP(2, hidden=32, step_labels=8, replay=40, learning_rate=3e-3), EmbeddingSoftmax(2)
    batched = EmbeddingSoftmax(2, step_labels=8)
    for head in (network, linear, batched):
        head.add_class()
        head.add_class()
    for x, a, b in zip(X[:5000], xor[:5000], line[:5000]):
        network.learn(x, int(a))
        linear.learn(x, int(b))
        batched.learn(x, int(b))
    assert network.steps == 5000 // 8 and batched.seen == 5000
    assert float((network.probabilities(X[5000:]).argmax(axis=1) == xor[5000:]).mean()) > 0.9
    agree = (batched.probabilities(X[5000:]).argmax(axis=1) == linear.probabilities(X[5000:]).argmax(axis=1))
    assert float(agree.mean()) > 0.99 and float((batched.probabilities(X[5000:]).argmax(axis=1) == line[5000:]).mean()) > 0.95


def test_a_checkpoint_from_before_heads_took_several_labels_a_step_learns_each_at_once(tmp_path):
    folder = tmp_path / "emb"
    StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film"], dims=8)
    student = EmbeddingStudent(StaticEmbeddings.load(folder))
    student.learn("warm funny film", "fresh")
    model = student.model
    for part, names in ((model.head, ("step_labels", "waiting")), (model.mlp, ("step_labels",))):
        for name in names:  # what an old pickle lacks
            del part.__dict__[name]
    model.mlp.__dict__.pop("pending", None)
    old = pickle.loads(pickle.dumps(student))
    seen, steps = old.model.head.seen, old.model.mlp.steps
    old.learn("dull boring film", "rotten")
    assert (old.model.head.seen, old.model.mlp.steps) == (seen + 1, steps + 1)
    assert old.predict("dull boring")[0] == "rotten"


def test_a_network_pickled_in_float64_goes_on_learning_and_predicting_in_float64(tmp_path):
    """Networks are float32 now; one pickled before (float64 weights and moments, no ``dtype``) loads, learns
    and predicts in float64, and predicts what it did before the pickle."""
    folder = tmp_path / "emb"
    StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film"], dims=8)
    student = EmbeddingStudent(StaticEmbeddings.load(folder))
    for text, label in [("warm funny film", "fresh"), ("dull boring film", "rotten")] * 10:
        student.learn(text, label)
    mlp = student.model.mlp
    assert mlp.w1.dtype == np.float32 and mlp.moments[0][0].dtype == np.float32
    del mlp.__dict__["dtype"]  # what an old pickle lacks
    for name in ("w1", "b1", "w2", "b2"):
        setattr(mlp, name, getattr(mlp, name).astype(np.float64))
    mlp.moments = [(m.astype(np.float64), v.astype(np.float64)) for m, v in mlp.moments]
    before = student.model.probability_rows(["funny warm", "boring dull"])
    old = pickle.loads(pickle.dumps(student))
    assert np.array_equal(old.model.probability_rows(["funny warm", "boring dull"]), before)
    for text, label in [("warm funny film", "fresh"), ("dull boring film", "rotten")] * 5:
        old.learn(text, label)
    assert {a.dtype for a in (old.model.mlp.w1, old.model.mlp.w2, *old.model.mlp.moments[0])} == {np.dtype(np.float64)}
    assert old.model.mlp._hidden(np.ones((1, 8))).dtype == np.float64
    assert old.predict("dull boring")[0] == "rotten" and old.model.mlp.seen == 30


def test_a_learner_catching_up_takes_a_step_per_64_labels_and_goes_back_to_one(tmp_path):
    """``learn_many(step=64)``: every label counted once, one network step per 64 (labels an earlier 8-a-step call
    left waiting join the first), the same replay memory as one by one, and per-label learning after it."""
    folder = tmp_path / "emb"
    StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film"], dims=8)
    pairs = [("warm funny film", "fresh"), ("dull boring film", "rotten"), ("funny warm", "fresh")] * 100
    texts, labels = [t for t, _ in pairs], [y for _, y in pairs]
    fast, slow = EmbeddingStudent(StaticEmbeddings.load(folder)), EmbeddingStudent(StaticEmbeddings.load(folder))
    fast.learn_many(texts, labels, step=64)
    slow.learn_many(texts, labels)
    head, mlp = fast.model.head, fast.model.mlp
    assert fast.version == head.seen == mlp.seen == 300 and mlp.steps == 5 and not head.waiting
    assert np.array_equal(mlp.kept[:300], slow.model.mlp.kept[:300]) and np.allclose(head.mean, slow.model.head.mean)
    assert [fast.predict(t)[0] for t in ("funny", "boring dull")] == ["fresh", "rotten"]
    fast.learn("dull film", "rotten")  # caught up: a step per label again
    assert (mlp.steps, head.seen) == (6, 301)
    eights = EmbeddingStudent(StaticEmbeddings.load(folder), step_labels=8)
    eights.learn_many(texts[:5], labels[:5])  # 5 labels wait in each head
    eights.learn_many(texts[5:], labels[5:], step=64)
    assert eights.model.head.seen == 300 and not eights.model.head.waiting and eights.model.mlp.steps == 5


def test_a_predictor_starts_with_the_words_of_the_learners_snapshot(tmp_path, caplog):
    """The snapshot carries the learner's word cache; a predictor whose cache is cold takes it when it swaps the
    snapshot in (on its loop), and refuses words from another tokenizer."""
    folder = tmp_path / "emb"
    StaticEmbeddings.write_example(folder, ["[UNK]", "warm", "funny", "dull", "boring", "film", "!"], dims=8)
    learner = Triage(EmbeddingStudent(StaticEmbeddings.load(folder)), FixedPolicy(0.5), warmup_labels=0)
    texts = ["warm funny film!", "dull boring film", "warm warm x", "boring! film"] * 10
    learner.learn_many([Feedback(text, "fresh" if "warm" in text else "rotten", None, 0.5, 1.0, "warmup")
                        for text in texts])
    cache = word_cache_of(learner.student)
    known = len(cache)
    packed = pack_snapshot(pickle_snapshot(learner, {0: 40}), version=40, student="embed-nb", key=b"k")
    snapshot = open_snapshot([SnapshotAssembler().add(decode_chunk(v)) for _, v in packed][-1], b"k")
    assert len(snapshot.words) == known == 8

    cache.clear()  # a fresh predictor (the process shares one cache per embeddings folder)
    predictor = StudentLogic(Settings(data_dir=tmp_path, learning="learner"), Catalogue.load(), snapshot.triage)
    predictor.offer_triage(snapshot.triage, snapshot.words)
    predictor._take_offered_triage()
    assert len(cache) == known and predictor.triage is snapshot.triage

    cache.clear()
    with caplog.at_level("WARNING"):
        predictor.offer_triage(snapshot.triage, replace(snapshot.words, tokenizer="another"))
        predictor._take_offered_triage()
    assert len(cache) == 0 and "not taken" in caplog.text
