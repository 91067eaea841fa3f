"""The embedding student's halves: the network half learns what the linear half cannot, and a checkpoint
written before the network half existed still loads and predicts as it did."""

from __future__ import annotations

import pickle

import numpy as np

from streamer.models.embedding_student import EmbeddingMLP, EmbeddingSoftmax, EmbeddingStudent
from streamer.models.embeddings import StaticEmbeddings


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
