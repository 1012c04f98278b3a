from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from distill.truncation import ELLIPSIS, article_text, head_tail, truncate_token_ids, truncate_words


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
