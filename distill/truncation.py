"""Head + tail truncation shared by the oracle (words) and the student (tokens).

News articles put the claim up front and the numbers or caveats at the end, so
a long article keeps its start and its end rather than only its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

ELLIPSIS = " [...] "
# Characters kept per token of the student's budget before tokenising. Prose
# runs 3-6 characters a token in every tokenizer we use, so this is far more
# than a head + tail token cut can use, and the cut gives the same ids.
CHARS_PER_TOKEN = 32


def head_tail(items: Sequence[T], budget: int, head_share: float) -> list[T]:
    """Keep `budget` items: the first `head_share` of it and the rest from the end."""
    if budget <= 0:
        return []
    if len(items) <= budget:
        return list(items)
    head, tail = split_budget(budget, head_share)
    return list(items[:head]) + (list(items[len(items) - tail:]) if tail else [])


def split_budget(budget: int, head_share: float) -> tuple[int, int]:
    """(head, tail) counts of a head + tail cut: a head of at least 1 unless the share is 0."""
    head = max(1, round(budget * head_share)) if head_share > 0 else 0
    head = min(head, budget)
    return head, budget - head


def truncate_words(text: str, max_words: int, head_share: float) -> str:
    """Oracle input: at most `max_words` words, head and tail joined by a marker."""
    words = text.split()
    if len(words) <= max_words:
        return text
    head = max(1, round(max_words * head_share))
    kept = head_tail(words, max_words, head_share)
    if head >= max_words:
        return " ".join(kept)
    return " ".join(kept[:head]) + ELLIPSIS + " ".join(kept[head:])


def truncate_token_ids(ids: Sequence[int], max_tokens: int, head_share: float) -> list[int]:
    """Student input: at most `max_tokens` token ids (special tokens added after)."""
    return head_tail(ids, max_tokens, head_share)


def clip_chars(text: str, max_tokens: int, head_share: float) -> str:
    """Text cut to a generous character bound before tokenising (head and tail kept).

    A 50 MB article would otherwise be tokenised whole (minutes, gigabytes)
    only for all but `max_tokens` of its tokens to be dropped. The head and
    tail kept here hold many more characters than the token cut keeps from
    each end, so `truncate_token_ids` then picks the same ids as from the
    whole text; only the dropped middle differs.
    """
    head, tail = ((n + 8) * CHARS_PER_TOKEN if n else 0 for n in split_budget(max_tokens, head_share))
    if len(text) <= head + tail:
        return text
    if not tail:
        return text[:head]
    if not head:
        return text[-tail:]
    # The space keeps the cut words at the seam apart; both lie in the middle the token cut drops.
    return text[:head] + " " + text[-tail:]


def article_text(title: str, body: str) -> str:
    """The text both oracle and student see: title, blank line, body."""
    title = (title or "").strip()
    return f"{title}\n\n{body.strip()}" if title else body.strip()
