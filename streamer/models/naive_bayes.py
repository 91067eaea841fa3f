"""Text classification students: bag-of-words into River's multinomial naive Bayes.

Words and bigrams are folded into a fixed number of hashed buckets before the model sees
them, so a student's memory is bounded however long the stream.

>>> s = NaiveBayesStudent("nb")
>>> s.predict("a warm, funny film")
(None, 0.0)
>>> for text, label in [("warm funny film", "fresh"), ("dull boring mess", "rotten")] * 3:
...     s.learn(text, label)
>>> label, confidence = s.predict("funny and warm")
>>> label, confidence > 0.5, s.version
('fresh', True, 6)
"""

from __future__ import annotations

from typing import Any

from river import base, compose, feature_extraction, naive_bayes

from streamer.models.student import BaseStudent, hashed, most_probable


def present(counts: dict[Any, float]) -> dict[Any, int]:
    """Binary features: each n-gram counts once however often it occurs."""
    return dict.fromkeys(counts, 1)


def bucketed(counts: dict[Any, float]) -> dict[int, float]:
    """Hashed features: memory bounded by :data:`~streamer.models.student.FEATURE_BUCKETS`."""
    return hashed({str(name): value for name, value in counts.items()})


def _word_counts() -> base.Classifier:
    """Lower-cased word counts into multinomial naive Bayes, alpha 1."""
    features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=False)
    return compose.Pipeline(features, compose.FuncTransformer(bucketed), naive_bayes.MultinomialNB(alpha=1.0))


def _word_and_bigram_counts() -> base.Classifier:
    """The same with word bigrams added."""
    features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=False, ngram_range=(1, 2))
    return compose.Pipeline(features, compose.FuncTransformer(bucketed), naive_bayes.MultinomialNB(alpha=1.0))


def _binary_words_and_bigrams() -> base.Classifier:
    """Word unigrams and bigrams, accents stripped, counted once each, alpha 2 (less over-confident on short
    texts: it saves more teacher calls at high targets)."""
    features = feature_extraction.BagOfWords(on="text", lowercase=True, strip_accents=True, ngram_range=(1, 2))
    return compose.Pipeline(features, compose.FuncTransformer(present), compose.FuncTransformer(bucketed),
                            naive_bayes.MultinomialNB(alpha=2.0))


#: The text pipeline of each naive Bayes student kind.
PIPELINES = {"nb": _word_counts, "nb-bigram": _word_and_bigram_counts, "nb-binary": _binary_words_and_bigrams}
KINDS = tuple(PIPELINES)


def build_pipeline(kind: str = "nb") -> base.Classifier:
    """A text-in River classifier of one of :data:`KINDS`."""
    try:
        return PIPELINES[kind]()
    except KeyError:
        raise ValueError(f"unknown naive Bayes student {kind!r}; choose one of {KINDS}") from None


def _joint_log_likelihood(pipeline: base.Classifier, text: str) -> dict[Any, float]:
    """The pipeline's per-class joint log-likelihood of ``text``, without ``predict_proba_one``'s generic
    overhead."""
    *transforms, classifier = pipeline.steps.values()
    x: dict[str, Any] = {"text": text}
    for step in transforms:
        x = step.transform_one(x)
    return classifier.joint_log_likelihood(x)


class NaiveBayesStudent(BaseStudent):
    """A River text pipeline: predict with a confidence, learn one label at a time."""

    def __init__(self, kind: str = "nb") -> None:
        super().__init__(kind, build_pipeline(kind))

    def predict(self, text: str) -> tuple[str | None, float]:
        """Same figures as the pipeline's ``predict_proba_one``, without its generic overhead."""
        return most_probable(_joint_log_likelihood(self.model, text))

    def learn_one(self, text: str, label: str) -> None:
        self.model.learn_one({"text": text}, label)
