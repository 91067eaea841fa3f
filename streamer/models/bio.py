"""BIO tag sequences: entity spans, character offsets, entity-level F1 and subword alignment.

A sentence travels as text whose tokens are separated by single spaces, and its tags as
one label string (the BIO tags separated by single spaces), so NER rides the same records,
routing and policies as classification.

>>> tags = "B-person I-person O B-geo-loc".split()
>>> sorted(entity_spans(tags))
[('geo-loc', 3, 4), ('person', 0, 2)]
>>> entities("Ann Lee in Paris", " ".join(tags))
[{'type': 'person', 'text': 'Ann Lee', 'start': 0, 'end': 7}, {'type': 'geo-loc', 'text': 'Paris', 'start': 11, 'end': 16}]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
