"""The filter's student truncation, applied to the text written into the splits.

The student keeps `student_tokens` tokens: the first `head_share` of them and
the rest from the end (distill.truncation). Without a tokenizer the same
head/tail cut is applied to words with a budget of `student_tokens` words.
Every word is at least one token, so the kept head words still cover the
first head tokens and the kept tail words the last tail tokens: the trainer's
token cut of this text then keeps exactly the tokens the scorer's token cut of
the full article keeps. With `--tokenizer` the cut is made in tokens directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.truncation import head_tail

_WORD = re.compile(r"\S+")


@dataclass
class StudentTruncation:
    budget: int
    head_share: float
    tokenizer: Path | None = None
    truncated: int = 0  # texts cut so far

    def __post_init__(self) -> None:
        self._tokenizer = None
        if self.tokenizer is not None:
            from transformers import AutoTokenizer  # heavy: only when asked for

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer))

    def apply(self, texts: list[str]) -> list[str]:
        cut = self._cut_tokens if self._tokenizer is not None else self._cut_words
        out = [cut(text) for text in texts]
        self.truncated += sum(a is not b for a, b in zip(out, texts, strict=True))
        return out

    def _cut_words(self, text: str) -> str:
        spans = [m.span() for m in _WORD.finditer(text)]
        if len(spans) <= self.budget:
            return text
        kept = head_tail(range(len(spans)), self.budget, self.head_share)
        seam = next((i for i in range(1, len(kept)) if kept[i] != kept[i - 1] + 1), len(kept))
        # Slicing the original keeps the title's blank line and paragraph breaks.
        head = text[spans[kept[0]][0] : spans[kept[seam - 1]][1]]
        if seam == len(kept):
            return head
        return head + " " + text[spans[kept[seam]][0] : spans[kept[-1]][1]]

    def _cut_tokens(self, text: str) -> str:
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= self.budget:
            return text
        return self._tokenizer.decode(head_tail(ids, self.budget, self.head_share))

    def describe(self) -> dict[str, Any]:
        return {
            "unit": "tokens" if self.tokenizer is not None else "words",
            "budget": self.budget,
            "head_share": self.head_share,
            "tokenizer": str(self.tokenizer) if self.tokenizer is not None else None,
            "truncated_examples": self.truncated,
            "note": (
                "head_tail cut of the filter's truncation.student_tokens; a word budget keeps "
                "every token the student's token cut keeps (each word is >= 1 token)"
            ),
        }
