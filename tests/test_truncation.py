from __future__ import annotations

import pytest
from conftest import first_rows
from hypothesis import given
from hypothesis import strategies as st

from distill.truncation import (
    CHARS_PER_TOKEN,
    ELLIPSIS,
    article_text,
    clip_chars,
    head_tail,
    split_budget,
    truncate_token_ids,
    truncate_words,
)


def test_short_text_untouched():
    assert truncate_words("one two three", 10, 0.8) == "one two three"


def test_words_keep_head_and_tail():
    text = " ".join(f"w{i}" for i in range(100))
    out = truncate_words(text, 10, 0.8)
    assert out == "w0 w1 w2 w3 w4 w5 w6 w7" + ELLIPSIS + "w98 w99"


def test_tokens_keep_head_and_tail():
    assert truncate_token_ids(list(range(20)), 5, 0.6) == [0, 1, 2, 18, 19]
    assert truncate_token_ids(list(range(20)), 4, 1.0) == [0, 1, 2, 3]


@given(st.lists(st.integers(), max_size=60), st.integers(0, 70), st.floats(0.01, 1.0))
def test_head_tail_properties(items, budget, share):
    out = head_tail(items, budget, share)
    assert len(out) == min(len(items), budget)
    if len(items) > budget > 0:
        head = min(budget, max(1, round(budget * share)))
        assert out[:head] == items[:head]
        assert out[head:] == items[len(items) - (budget - head):]


@given(st.lists(st.sampled_from(["a", "bb", "ccc"]), min_size=1, max_size=80), st.integers(1, 40))
def test_word_then_token_truncation_equals_token_truncation(words, budget):
    """Words first (prepare), tokens after (train/score) gives the same ids as tokens alone,
    whenever every word is at least one token (here: one char = one token)."""
    tokens_of = lambda ws: [c for w in ws for c in w]  # noqa: E731
    direct = truncate_token_ids(tokens_of(words), budget, 0.8)
    staged = truncate_token_ids(tokens_of(head_tail(words, budget, 0.8)), budget, 0.8)
    assert staged == direct


def test_article_text():
    assert article_text("Title ", " Body\n") == "Title\n\nBody"
    assert article_text("", "Body") == "Body"


def test_clip_chars_leaves_ordinary_text_alone_and_bounds_huge_text():
    ordinary = "word " * 2000  # 10,000 characters: under the bound for 512 tokens
    assert clip_chars(ordinary, 512, 0.8) is ordinary
    huge = "h" * 10**6 + "t" * 10**6
    clipped = clip_chars(huge, 64, 0.8)
    head, tail = split_budget(64, 0.8)
    assert clipped == "h" * (head + 8) * CHARS_PER_TOKEN + " " + "t" * (tail + 8) * CHARS_PER_TOKEN
    assert clip_chars(huge, 64, 1.0) == "h" * (64 + 8) * CHARS_PER_TOKEN  # no tail budget, no tail kept
    assert clip_chars(huge, 64, 0.0) == "t" * (64 + 8) * CHARS_PER_TOKEN


@pytest.mark.parametrize("tokenizer_fixture", ["minilm_dir", "qwen_tokenizer_dir"])
def test_clipping_before_tokenising_gives_the_same_ids(request, tokenizer_fixture, real_articles):
    """Real articles, and long ones made by joining them (which the clip does cut): the
    student's ids are the same whether the text was clipped first or tokenised whole."""
    from transformers import AutoTokenizer

    from distill.student.encode import encode_texts

    tokenizer = AutoTokenizer.from_pretrained(str(request.getfixturevalue(tokenizer_fixture)))
    tokenizer.model_max_length = 1 << 30
    rows = first_rows(real_articles, 200)
    texts = [article_text(r.get("title", ""), r["content"]) for r in rows]
    long_texts = ["\n\n".join(texts[i:i + 40]) for i in range(0, 160, 20)]
    for max_tokens, share in ((64, 0.8), (512, 0.8), (512, 0.5), (256, 1.0)):
        assert sum(clip_chars(t, max_tokens, share) != t for t in long_texts) >= 4  # the clip really cuts
        for batch in (texts, long_texts):
            whole = encode_texts(tokenizer, batch, max_tokens, share)
            clipped = encode_texts(tokenizer, [clip_chars(t, max_tokens, share) for t in batch], max_tokens, share)
            assert clipped == whole
