"""Head + tail truncation shared by the oracle (words) and the student (tokens).

News articles put the claim up front and the numbers or caveats at the end, so
a long article keeps its start and its end rather than only its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

ELLIPSIS = " [...] "


def head_tail(items: Sequence[T], budget: int, head_share: float) -> list[T]:
    """Keep `budget` items: the first `head_share` of it and the rest from the end."""
    if budget <= 0:
        return []
    if len(items) <= budget:
        return list(items)
    head = max(1, round(budget * head_share)) if head_share > 0 else 0
    head = min(head, budget)
    tail = budget - head
    return list(items[:head]) + (list(items[len(items) - tail:]) if tail else [])


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


def article_text(title: str, body: str) -> str:
    """The text both oracle and student see: title, blank line, body."""
    title = (title or "").strip()
    return f"{title}\n\n{body.strip()}" if title else body.strip()
