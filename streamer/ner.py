"""Named-entity recognition triage: BIO helpers, the NER student, the token-classifier teacher.

A sentence travels as text whose tokens are separated by single spaces, and its tags as
one label string (the BIO tags separated by single spaces), so NER rides the same records,
routing and policies as classification: the student's label for a sentence is its whole
tag sequence, its confidence the least confident token's, and "agreement with the teacher"
means the same tags for every token.

>>> tags = "B-person I-person O B-geo-loc".split()
>>> sorted(entity_spans(tags))
[('geo-loc', 3, 4), ('person', 0, 2)]
>>> entities("Ann Lee in Paris", " ".join(tags))
[{'type': 'person', 'text': 'Ann Lee', 'start': 0, 'end': 7}, {'type': 'geo-loc', 'text': 'Paris', 'start': 11, 'end': 16}]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from river import naive_bayes

from streamer.teacher import Teacher

OUTSIDE = "O"


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entities of a BIO tag sequence as ``(type, first token, end token)``; a stray ``I-`` starts one."""
    spans: set[tuple[str, int, int]] = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, _, this = tag.partition("-")
        continues = prefix == "I" and this == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = this, i
    return spans


def entities(text: str, label: str) -> list[dict[str, Any]]:
    """The entities of a sentence with character offsets into ``text`` (tokens separated by single spaces)."""
    tokens = text.split(" ")
    starts, pos = [], 0
    for token in tokens:
        starts.append(pos)
        pos += len(token) + 1
    out = []
    for kind, first, end in sorted(entity_spans(label.split(" ")), key=lambda s: s[1]):
        start, stop = starts[first], starts[end - 1] + len(tokens[end - 1])
        out.append({"type": kind, "text": text[start:stop], "start": start, "end": stop})
    return out


def entity_f1(gold: Iterable[str], predicted: Iterable[str]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (exact span and type) over label strings.

    >>> entity_f1(["B-person O", "O B-geo-loc"], ["B-person O", "O O"])
    {'precision': 1.0, 'recall': 0.5, 'f1': 0.6667}
    """
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, predicted):
        gs, ps = entity_spans(g.split(" ")), entity_spans(p.split(" "))
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def word_shape(token: str) -> str:
    """``Xxxx`` style shape with runs collapsed: ``"McDonald's"`` -> ``"XxXx'x"``."""
    out: list[str] = []
    for ch in token:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def token_features(tokens: list[str], i: int) -> dict[str, int]:
    """Binary features of token ``i``: the word, shape, affixes, neighbours and position.

    >>> sorted(token_features(["I", "love", "Paris"], 2))[:4]
    ['is_last', 'is_title', 'next=</s>', 'prefix1=p']
    """
    token = tokens[i]
    low = token.lower()
    feats = {f"w={low}": 1, f"shape={word_shape(token)}": 1, f"prefix1={low[:1]}": 1, f"prefix2={low[:2]}": 1,
             f"prefix3={low[:3]}": 1, f"suffix2={low[-2:]}": 1, f"suffix3={low[-3:]}": 1,
             f"prev={tokens[i - 1].lower() if i > 0 else '<s>'}": 1,
             f"next={tokens[i + 1].lower() if i + 1 < len(tokens) else '</s>'}": 1}
    if token[:1].isupper():
        feats["is_title"] = 1
    if token.isupper() and len(token) > 1:
        feats["is_upper"] = 1
    if any(ch.isdigit() for ch in token):
        feats["has_digit"] = 1
    if token.startswith(("@", "#")) or low.startswith("http"):
        feats[f"twitter={token[0] if token[0] in '@#' else 'url'}"] = 1
    if i == 0:
        feats["is_first"] = 1
    if i + 1 == len(tokens):
        feats["is_last"] = 1
    if i > 0 and tokens[i - 1][:1].isupper():
        feats["prev_title"] = 1
    return feats


class NERStudent:
    """Per-token naive Bayes over :func:`token_features`; a sentence's confidence is its least sure token's.

    ``binary`` is the reference's policy: the student may only answer sentences it tags
    entirely ``O`` (its confidence is 0 for any sentence in which it sees an entity).

    >>> s = NERStudent()
    >>> for _ in range(5):
    ...     s.learn("I love Paris", "O O B-geo-loc")
    ...     s.learn("I love pizza", "O O O")
    >>> s.predict("I love Paris")[0]
    'O O B-geo-loc'
    """

    def __init__(self, binary: bool = False) -> None:
        self.kind = "ner-binary" if binary else "ner"
        self.binary = binary
        self.model = naive_bayes.MultinomialNB(alpha=0.5)
        self.version = 0

    def tag(self, tokens: list[str]) -> list[tuple[str, float]]:
        """The most probable tag of each token and its probability."""
        out = []
        for i in range(len(tokens)):
            jll = self.model.joint_log_likelihood(token_features(tokens, i))
            tag = max(jll, key=jll.__getitem__)
            best = jll[tag]
            out.append((tag, 1.0 / sum(math.exp(v - best) for v in jll.values())))
        return out

    def predict(self, text: str) -> tuple[str | None, float]:
        if not self.model.class_counts:
            return None, 0.0
        tagged = self.tag(text.split(" "))
        label = " ".join(tag for tag, _ in tagged)
        confidence = min(p for _, p in tagged)
        if self.binary and any(tag != OUTSIDE for tag, _ in tagged):
            confidence = 0.0
        return label, confidence

    def learn(self, text: str, label: str) -> None:
        tokens, tags = text.split(" "), label.split(" ")
        if len(tokens) != len(tags):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
        for i, tag in enumerate(tags):
            self.model.learn_one(token_features(tokens, i), tag)
        self.version += 1


def align_word_labels(word_ids: list[int | None], word_tags: list[str], label2id: dict[str, int]) -> list[int]:
    """Training targets per subword: the word's tag on its first subword, -100 (ignored) elsewhere.

    >>> align_word_labels([None, 0, 0, 1, None], ["B-person", "O"], {"O": 0, "B-person": 1})
    [-100, 1, -100, 0, -100]
    """
    out, previous = [], None
    for wid in word_ids:
        out.append(-100 if wid is None or wid == previous else label2id[word_tags[wid]])
        previous = wid
    return out


class NERTeacher(Teacher):
    """Any Hugging Face ``AutoModelForTokenClassification``; tags whole words (first subword's prediction)."""

    auto_class = "AutoModelForTokenClassification"
    train_command = "streamer teacher train --task ner"

    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        """``(tag string, least word probability)`` per sentence; words cut off by truncation are ``O``."""
        import torch

        words = [text.split(" ") for text in texts]
        enc = self.tokenizer(words, is_split_into_words=True, padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        probs = torch.softmax(self.model(**enc.to(self.device)).logits.float(), dim=-1)
        conf, top = (t.tolist() for t in probs.max(dim=-1))
        out = []
        for row, sentence in enumerate(words):
            tags, least, previous = [OUTSIDE] * len(sentence), 1.0, None
            for pos, wid in enumerate(enc.word_ids(row)):
                if wid is not None and wid != previous:
                    tags[wid] = self.id2label[top[row][pos]]
                    least = min(least, conf[row][pos])
                previous = wid
            out.append((" ".join(tags), least))
        return out
