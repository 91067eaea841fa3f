"""Tokenising by whitespace-separated words, each word's ids cached: the same ids as the tokenizer, 6-8x faster.

A BERT-style tokenizer (WordPiece or word-level model; BERT normaliser, lower-casing, accents; BERT or
whitespace pre-tokenizer) never lets a token cross whitespace, so a text's ids are its words' ids one after
the other. Words repeat (a stream of tweets or tickets reuses a few tens of thousands), so each distinct word
goes through the Rust tokenizer once and is then found by its bytes (:mod:`streamer.models.byte_words`). Words
looked up by name were 6-8x faster than ``encode_batch_fast`` on one thread (7-8 against 51-57 µs a tweet, measured
together, batches of 256 and 1,024); by their bytes they are 1.8-1.9x faster again (10.1-10.8 against 19.3-19.7 µs
a tweet on a slower day, measured together on 20,480 tweets, warm). Texts holding a character that Python
splits on and the tokenizer does not (``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1f``, ``\\x85``) go through the
tokenizer whole; texts holding other non-ASCII whitespace are split in Python.

:func:`word_cache_for` says whether a tokenizer qualifies, from its configuration, and checks it on probe texts;
any other tokenizer (byte-level BPE, SentencePiece: a token carries its leading space) is used as it is.

>>> from tokenizers import Tokenizer, models, pre_tokenizers
>>> tk = Tokenizer(models.WordLevel({"[UNK]": 0, "good": 1, "film": 2, "!": 3}, unk_token="[UNK]"))
>>> tk.pre_tokenizer = pre_tokenizers.Whitespace()
>>> cache = word_cache_for(tk, unk_id=0)
>>> cache.ids(["good  film!", "", "odd film"])
[[1, 2, 3], [], [2]]
>>> len(cache)
4
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np

from streamer.models.ascii_wordpiece import AsciiWordPiece
from streamer.models.byte_words import ByteWords

log = logging.getLogger(__name__)

#: normalisers and pre-tokenizers that never join or split across whitespace
_WORD_LOCAL_NORMALIZERS = frozenset({"BertNormalizer", "Lowercase", "NFD", "NFKD", "NFC", "NFKC", "StripAccents",
                                     "Strip"})
_WORD_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits"})
_WORD_MODELS = frozenset({"WordPiece", "WordLevel"})
_NOT_TOKENIZER_SPACES = "\x0b\x0c\x1c-\x1f\x85"
#: characters Python's ``str.split`` splits on where the BERT normaliser does not
_NOT_TOKENIZER_SPACE = re.compile(f"[{_NOT_TOKENIZER_SPACES}]")
#: characters ``str.split`` splits on besides ASCII space, tab, newline and carriage return: texts holding one are
#: split in Python, not as bytes (:mod:`streamer.models.byte_words`)
_OTHER_SPACE = re.compile(f"[{_NOT_TOKENIZER_SPACES}\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
#: texts whose ids the cache must give as the tokenizer does before it is used
PROBES = ("Hello, World!  it's   3.14pm\tnaïve café ＡＢＣ 日本語 don't", "@user #tag http://x.co/a?b=1 :-) ...",
          "ÉCOLE\u00a0straße\u2003ŉ İstanbul", "emoji 😀👍🏽 zero\u200bwidth x\u0301y", "a\nb\rc  \u3000 d")


def _types(part: dict[str, Any] | None, key: str) -> list[str]:
    if not part:
        return []
    if part.get("type") == "Sequence":
        return [t for p in part.get(key, []) for t in _types(p, key)]
    return [str(part.get("type"))]


def word_local(tokenizer: Any) -> bool:
    """Whether ``tokenizer``'s configuration keeps every token inside one whitespace-separated word."""
    config = json.loads(tokenizer.to_str())
    return (config.get("model", {}).get("type") in _WORD_MODELS
            and set(_types(config.get("normalizer"), "normalizers")) <= _WORD_LOCAL_NORMALIZERS
            and bool(_types(config.get("pre_tokenizer"), "pretokenizers"))
            and set(_types(config.get("pre_tokenizer"), "pretokenizers")) <= _WORD_PRE_TOKENIZERS)


def _narrow(values: np.ndarray) -> np.ndarray:
    """``values`` (none negative) in the smallest unsigned integer type that holds them: a snapshot's word ids in
    2 bytes each for a vocabulary below 65,536 tokens."""
    top = int(values.max()) if len(values) else 0
    return values.astype(np.uint16 if top < 1 << 16 else np.uint32 if top < 1 << 32 else np.uint64)


def _spans(flat: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The pieces ``flat[start:start + count]`` end to end, in one gather.

    >>> _spans(np.array([5, 6, 7, 8, 9]), np.array([3, 0]), np.array([2, 1])).tolist()
    [8, 9, 5]
    """
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    return flat[np.repeat(starts - ends + counts, counts) + np.arange(total)]


@dataclass(frozen=True)
class WordList:
    """A word cache's words and their ids, as a learner's snapshot carries them to predictors
    (:meth:`WordCache.export`, :meth:`WordCache.absorb`): the words' UTF-8 bytes end to end, each word's length in
    bytes and number of ids, the ids end to end, and the fingerprint of the tokenizer that gave them."""

    tokenizer: str
    data: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def words(self) -> list[str]:
        """The words, in order."""
        n = len(self.lengths)
        spaced = np.full(len(self.data) + n, 0x20, dtype=np.uint8)  # a space after each word (none holds one)
        spaced[np.arange(len(self.data)) + np.repeat(np.arange(n), self.lengths)] = self.data
        return spaced[:-1].tobytes().decode("utf-8", "surrogatepass").split(" ") if n else []


class WordCache:
    """Token ids of texts by words, each distinct word tokenised once (up to ``max_words`` words of
    ``max_chars`` characters in all are kept, then the cache starts afresh); ids equal to ``unk_id`` are left out.
    Build it with :func:`word_cache_for`.

    The words' ids lie end to end in one array; a word is a row (where its ids start, how many), found by its
    bytes (:attr:`index`) or by name (:attr:`rows`). A batch is then a few numpy operations on its bytes and a
    gather: no Python object a known word.
    """

    def __init__(self, tokenizer: Any, unk_id: int = -1, max_words: int = 200_000, max_chars: int = 4_000_000) -> None:
        self.tokenizer = tokenizer
        self.unk_id = unk_id
        self.max_words = max_words
        self.max_chars = max_chars
        #: new words of printable ASCII tokenised without the tokenizer's passes, for a BERT tokenizer
        self.ascii = AsciiWordPiece.of(tokenizer, unk_id)
        self.clear()

    def clear(self) -> None:
        """Forget every word."""
        self.rows: dict[str, int] = {}  # word -> row
        self.index = ByteWords()  # the same rows, by the words' bytes
        self.starts = np.zeros(1024, dtype=np.int64)  # each row's first id in :attr:`flat`
        self.counts = np.zeros(1024, dtype=np.int64)  # each row's number of ids
        self.flat = np.zeros(4096, dtype=np.int64)
        self.used = 0  # ids in :attr:`flat`
        self.chars = 0

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def fingerprint(self) -> str:
        """Which tokenizer gave the ids (a hash of its whole configuration, vocabulary included)."""
        return hashlib.sha256(self.tokenizer.to_str().encode()).hexdigest()[:32]

    def export(self) -> WordList:
        """Every word and its ids, for another process's cache of the same tokenizer (a few ms for 60,000 words)."""
        n = len(self.rows)
        return WordList(self.fingerprint, self.index.data[:self.index.used].copy(), _narrow(self.index.lengths[:n]),
                        _narrow(self.counts[:n]), _narrow(self.flat[:self.used]))

    def absorb(self, words: WordList, check: int = 32) -> int:
        """Take the words of ``words`` this cache lacks, with their ids (no tokenizing), as many as its limits allow;
        how many it took. Raises ``ValueError`` when they come from another tokenizer, are malformed, or the first
        ``check`` new ones are not what the tokenizer gives."""
        if words.tokenizer != self.fingerprint:
            raise ValueError("the words come from another tokenizer")
        names = words.words()
        all_counts = words.counts.astype(np.int64)
        if len(names) != len(words) or len(all_counts) != len(words) or int(all_counts.sum()) != len(words.ids):
            raise ValueError("malformed word list")
        new = np.array([k for k, name in enumerate(names) if name not in self.rows], dtype=np.int64)
        room = max(self.max_words - len(self.rows), 0)
        sizes = np.fromiter((len(names[k]) for k in new.tolist()), dtype=np.int64, count=len(new))
        new = new[:min(room, int(np.searchsorted(np.cumsum(sizes), self.max_chars - self.chars, side="right")))]
        if not len(new):
            return 0
        counts = all_counts[new]
        ids = _spans(words.ids, (np.cumsum(all_counts) - all_counts)[new], counts).astype(np.int64)
        chosen = [names[k] for k in new.tolist()]
        probe = chosen[:check]
        expected_ids, expected_counts = self._encode_joined(probe)  # by the tokenizer itself
        if (not np.array_equal(expected_counts, counts[:len(probe)])
                or not np.array_equal(expected_ids, ids[:int(expected_counts.sum())])):
            raise ValueError("the words' ids are not this tokenizer's")
        self._add(chosen, ids, counts)
        return len(chosen)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        unk = self.unk_id
        return [[i for i in e.ids if i != unk]
                for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def _encode_words(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The words' ids end to end and how many each word has: printable-ASCII words by :attr:`ascii` when the
        tokenizer is BERT's (2.7x faster), the others by the tokenizer (:meth:`_encode_joined`)."""
        if self.ascii is None:
            return self._encode_joined(words)
        per_word = list(map(self.ascii.ids, words))
        others = [k for k, ids in enumerate(per_word) if ids is None]
        if others:
            flat, counts = self._encode_joined([words[k] for k in others])
            for k, ids in zip(others, np.split(flat, np.cumsum(counts)[:-1])):
                per_word[k] = ids.tolist()
        counts = np.fromiter(map(len, per_word), dtype=np.int64, count=len(words))
        return np.fromiter(chain.from_iterable(per_word), dtype=np.int64, count=int(counts.sum())), counts

    def _encode_joined(self, words: list[str], chunk: int = 2000) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_encode_words` by the tokenizer: the words joined by spaces, a chunk at a time, one text for the
        tokenizer, each token given to the word its offsets fall in (tokens never cross whitespace here). Faster
        than the words as one pre-split sequence: 8.1 against 9.7 µs a word at best, 8.8 against 13.6 in the median
        (20,000 words of tweets, the two taken in turn eight times)."""
        flats, counts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for start in range(0, len(words), chunk):
            part = words[start:start + chunk]
            encoding = self.tokenizer.encode(" ".join(part), add_special_tokens=False)
            ids = np.array(encoding.ids, dtype=np.int64)
            known = ids != self.unk_id
            flats.append(ids[known])  # in word order
            word_starts = np.cumsum(np.fromiter(map(len, part), dtype=np.int64, count=len(part)) + 1) - 1
            token_starts = np.fromiter((a for a, _ in encoding.offsets), dtype=np.int64, count=len(ids))
            counts.append(np.bincount(np.searchsorted(word_starts, token_starts[known], side="right"),
                                      minlength=len(part)))
        return np.concatenate(flats), np.concatenate(counts)

    def _add(self, words: list[str], ids: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        """Give new ``words`` a row each, with their ``ids`` end to end and ``counts`` (tokenised here when not
        given); nothing changes if the tokenizer or the index refuses them."""
        if ids is None or counts is None:
            ids, counts = self._encode_words(words)
        self.index.add(words)  # checks the words before it changes anything
        first, rows, total = self.used, len(self.rows), len(ids)
        if rows + len(words) > len(self.starts):
            size = max(2 * len(self.starts), rows + len(words))
            self.starts, self.counts = np.resize(self.starts, size), np.resize(self.counts, size)
        if first + total > len(self.flat):
            self.flat = np.resize(self.flat, max(2 * len(self.flat), first + total))
        self.flat[first:first + total] = ids
        self.starts[rows:rows + len(words)] = first + np.cumsum(counts) - counts
        self.counts[rows:rows + len(words)] = counts
        self.rows.update(zip(words, range(rows, rows + len(words))))
        self.used += total
        self.chars += sum(map(len, words))

    def _rows(self, texts: list[str], other: list[int], spoken: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's row and text, in order, words of ``other`` texts left out but those of ``spoken`` ones.

        The texts are one UTF-8 byte array, their words found by their bytes (:class:`ByteWords`); a word not found
        there is decoded and looked up by name (and tokenised if new). Texts ``spoken`` are split in Python."""
        plain = list(texts)
        for k in other:
            plain[k] = ""
        raw = "\x1f".join(plain).encode("utf-8", "surrogatepass")  # \x1f: one between texts, none in them now
        text = np.frombuffer(raw, dtype=np.uint8)
        words = self.index.words(text)
        row = self.index.rows_of(words)
        text_of_word = np.searchsorted(np.flatnonzero(text == 0x1F), words.at)
        split = [texts[k].split() for k in spoken]
        other_words = list(chain.from_iterable(split))
        other_rows = list(map(self.rows.get, other_words))
        missing = np.flatnonzero(row < 0)
        if len(missing) or None in other_rows:
            def decoded(which: np.ndarray) -> list[str]:
                return [raw[a:a + n].decode("utf-8", "surrogatepass")
                        for a, n in zip(words.at[which].tolist(), words.lengths[which].tolist())]

            missed = decoded(missing)
            new = [w for w in dict.fromkeys(chain(missed, other_words)) if w not in self.rows]
            if len(self.rows) + len(new) > self.max_words or self.chars + sum(map(len, new)) > self.max_chars:
                self.clear()  # a long-tailed stream: start afresh (this batch's words are all kept)
                missing = np.arange(len(row))
                missed = decoded(missing)
                new = list(dict.fromkeys(chain(missed, other_words)))
            if new:  # none when the missed words are known by name (their hashes found other words)
                self._add(new)
            row[missing] = list(map(self.rows.__getitem__, missed))
            other_rows = list(map(self.rows.__getitem__, other_words))
        if not other_words:
            return row, text_of_word
        text_of_word = np.concatenate((text_of_word, np.repeat(spoken, list(map(len, split)))))
        order = np.argsort(text_of_word, kind="stable")  # the spoken texts' words in their places
        return np.concatenate((row, other_rows))[order], text_of_word[order]

    def tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's token ids end to end, and how many each text has (as the tokenizer gives them, without
        special and unknown tokens). Texts holding whitespace the tokenizer does not split on are tokenised whole
        and spliced in (rare)."""
        found = [m.start() for m in _OTHER_SPACE.finditer("".join(texts))]  # whitespace other than " \t\n\r"
        other = (np.unique(np.searchsorted(np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts))), found,
                                           side="right")).tolist() if found else [])
        odd = [k for k in other if _NOT_TOKENIZER_SPACE.search(texts[k])]
        row, text_of_word = self._rows(texts, other, sorted(set(other) - set(odd)))
        counts = self.counts[row]
        flat = _spans(self.flat, self.starts[row], counts)
        lengths = np.bincount(text_of_word, weights=counts, minlength=len(texts)).astype(np.int64)
        if odd:
            bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
            pieces, after = [], 0
            for k, whole in zip(odd, self._encode([texts[k] for k in odd])):
                pieces += [flat[bounds[after]:bounds[k]], np.array(whole, dtype=np.int64)]
                lengths[k], after = len(whole), k + 1
            flat = np.concatenate(pieces + [flat[bounds[after]:]])
        return flat, lengths

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, as the tokenizer gives them (without special and unknown tokens)."""
        flat, lengths = self.tokens(texts)
        return [part.tolist() for part in np.split(flat, np.cumsum(lengths)[:-1])] if len(texts) else []

    def agrees(self, texts: tuple[str, ...] = PROBES) -> bool:
        """Whether the cache gives the tokenizer's ids for ``texts``."""
        return self.ids(list(texts)) == self._encode(list(texts))


def word_cache_for(tokenizer: Any, unk_id: int = -1) -> WordCache | None:
    """A :class:`WordCache` for ``tokenizer`` when its configuration keeps tokens within words and the cache gives
    its ids on :data:`PROBES`; ``None`` otherwise (tokenise whole texts)."""
    try:
        if not word_local(tokenizer) or tokenizer.truncation or tokenizer.padding:  # the cache joins words
            return None
    except (ValueError, TypeError, AttributeError):  # a tokenizer without a readable configuration
        return None
    cache = WordCache(tokenizer, unk_id)
    if not cache.agrees():
        log.warning("the tokenizer's ids differ word by word on the probe texts: tokenising whole texts")
        return None
    cache.clear()
    return cache


__all__ = ["PROBES", "WordCache", "WordList", "word_cache_for", "word_local"]
