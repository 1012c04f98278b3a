"""Texts for parity and the MAE gate, and the student's tokenisation as numpy batches.

Tokenisation is the student's own (distill.train.model.encode_texts: head +
tail cut to `max_tokens`, special tokens around), padded on the side asked
for, so the same batch can be checked left- and right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.records import check_score, parse_article, read_records
from distill.truncation import article_text


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # [N, D] on the 0-10 scale, in distill.json dimension order
    rejected: int = 0


def encode(
    tokenizer: Any, texts: list[str], max_tokens: int, head_share: float, padding_side: str
) -> dict[str, np.ndarray]:
    """int64 `input_ids` and `attention_mask` [batch, longest], padded left or right."""
    from distill.train.model import encode_texts

    rows = encode_texts(tokenizer, texts, max_tokens, head_share)
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def read_labelled(path: str | Path, dimensions: list[str], limit: int) -> Labelled:
    """Texts and labels from labelled records (`scores` map) or training examples
    (`text` + `dimension_scores` list); unusable lines are counted, not fatal."""
    rejects: list = []

    def parse(obj: dict[str, Any]) -> tuple[str, list[float]]:
        if isinstance(obj.get("scores"), dict):
            article = parse_article(obj)
            scores = obj["scores"]
            missing = [d for d in dimensions if d not in scores]
            if missing:
                raise ValueError(f"field 'scores': missing {missing}")
            return article_text(article.title, article.text), [check_score(scores[d], f"scores.{d}") for d in dimensions]
        values = obj.get("dimension_scores")
        if not isinstance(obj.get("text"), str) or not isinstance(values, list) or len(values) != len(dimensions):
            raise ValueError(f"needs 'scores' {{dimension: score}} or 'text' + {len(dimensions)} 'dimension_scores'")
        return obj["text"], [check_score(v, "dimension_scores") for v in values]

    texts, labels = [], []
    for text, scores in read_records([path], parse, rejects):
        texts.append(text)
        labels.append(scores)
        if len(texts) >= limit:
            break
    return Labelled(texts, np.array(labels, dtype=np.float64).reshape(-1, len(dimensions)), len(rejects))


def spread_by_length(texts: list[str], count: int) -> list[str]:
    """`count` texts evenly spaced over the length range, shuffled so batches mix lengths."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    picks = sorted({order[round(k * (len(order) - 1) / max(1, count - 1))] for k in range(count)})
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.permutation(picks)]


def sample_texts() -> list[str]:
    """Built-in texts of varied length for when no validation data is given."""
    short = [
        "Solar farm opens.",
        "Wind turbines now supply a third of the region's electricity.",
        "De gemeente plaatst warmtepompen in vijftig sociale huurwoningen.",
        "A new battery plant will recycle lithium from old phones and laptops.",
    ]
    paragraph = (
        "The city council approved a plan to retrofit public buildings with heat pumps, "
        "rooftop solar and better insulation. Officials expect energy use to fall by forty "
        "percent within five years, while critics point out that the budget relies on "
        "subsidies that have not yet been confirmed by the national government. "
    )
    return short + [paragraph * n for n in (1, 2, 4, 8, 16)] + [
        "Quarterly results beat expectations as the retailer expanded its stores.",
        "Researchers measured microplastics in river sediment at twelve sites. " * 6,
        "Een nieuwe fietsbrug verbindt twee wijken en vermindert het autoverkeer. " * 3,
    ]
