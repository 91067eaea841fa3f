"""The NER student: per-token naive Bayes over hand-made token features.

The student's label for a sentence is its whole tag sequence and its confidence the least
confident token's, so "agreement with the teacher" means the same tag for every token.

>>> s = NERStudent()
>>> for _ in range(5):
...     s.learn("I love Paris", "O O B-geo-loc")
...     s.learn("I love pizza", "O O O")
>>> s.predict("I love Paris")[0]
'O O B-geo-loc'
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import naive_bayes

from streamer.models.bio import OUTSIDE
from streamer.models.embeddings import StaticEmbeddings
from streamer.models.student import BaseStudent, hashed, most_probable


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


#: random hyperplanes per sign code of a word's embedding, and codes per word (see :meth:`NERStudent.word_codes`)
CODE_BITS, CODES = 8, 3


class NERStudent(BaseStudent):
    """Per-token naive Bayes over :func:`token_features`; a sentence's confidence is its least sure token's.

    ``binary`` is the reference's policy: the student may only answer sentences it tags
    entirely ``O`` (its confidence is 0 for any sentence in which it sees an entity).
    With ``embeddings`` (the teacher's distilled static embeddings: kind ``ner-embed``), each token
    also gets the sign codes of its word's embedding under fixed random hyperplanes, its own and the
    previous word's: words the teacher treats alike share codes, so what the student learns about
    one entity carries over to words it has never seen.
    """

    embeddings: StaticEmbeddings | None = None  # students restored from before embeddings have none

    def __init__(self, binary: bool = False, embeddings: StaticEmbeddings | None = None) -> None:
        kind = "ner-binary" if binary else "ner-embed" if embeddings is not None else "ner"
        super().__init__(kind, naive_bayes.MultinomialNB(alpha=0.5))
        self.binary = binary
        self.hashed = True  # students restored from before hashing (no such attribute) keep plain feature names
        self.embeddings = embeddings
        self.planes = (np.random.default_rng(0).normal(size=(embeddings.dims, CODE_BITS * CODES))
                       if embeddings is not None else None)

    def word_codes(self, tokens: list[str]) -> list[list[str]] | None:
        """Each word's :data:`CODES` sign codes of :data:`CODE_BITS` bits (``None`` without embeddings)."""
        if self.embeddings is None:
            return None
        signs = (self.embeddings.embed(tokens) @ self.planes > 0).tolist()
        return [["".join("1" if b else "0" for b in row[k * CODE_BITS:(k + 1) * CODE_BITS]) for k in range(CODES)]
                for row in signs]

    def features(self, tokens: list[str], i: int,
                 codes: list[list[str]] | None = None) -> dict[Any, int] | dict[Any, float]:
        """Token ``i``'s features (with its word's embedding codes when given), hashed into bounded buckets."""
        feats = token_features(tokens, i)
        if codes is not None:
            feats.update({f"code{k}={code}": 1 for k, code in enumerate(codes[i])})
            feats[f"prev_code={codes[i - 1][0] if i > 0 else '<s>'}"] = 1
        return hashed(feats) if getattr(self, "hashed", False) else feats

    def tag(self, tokens: list[str]) -> list[tuple[str, float]]:
        """The most probable tag of each token and its probability."""
        codes = self.word_codes(tokens)
        return [most_probable(self.model.joint_log_likelihood(self.features(tokens, i, codes)))  # type: ignore[misc]
                for i in range(len(tokens))]

    def predict(self, text: str) -> tuple[str | None, float]:
        if not self.model.class_counts:
            return None, 0.0
        tagged = self.tag(text.split(" "))
        label = " ".join(tag for tag, _ in tagged)
        confidence = min(p for _, p in tagged)
        if self.binary and any(tag != OUTSIDE for tag, _ in tagged):
            confidence = 0.0
        return label, confidence

    def check_label(self, text: str, label: str) -> None:
        tokens, tags = text.split(" "), label.split(" ")
        if len(tokens) != len(tags):
            raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")

    def learn_one(self, text: str, label: str) -> None:
        self.check_label(text, label)
        tokens, tags = text.split(" "), label.split(" ")
        codes = self.word_codes(tokens)
        for i, tag in enumerate(tags):
            self.model.learn_one(self.features(tokens, i, codes), tag)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "binary": self.binary, "hashed": getattr(self, "hashed", False),
                "embeddings": self.embeddings, "planes": getattr(self, "planes", None)}
