"""Texts for parity and the MAE gate.

They are tokenised and padded as the student reads them by
distill.student.encode.encode_batch (left or right, so the same batch can be
checked both ways).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.records import LabelledRecord, TrainingExample, read_records
from distill.truncation import article_text


@dataclass
class Labelled:
    texts: list[str]
    labels: np.ndarray  # [N, D] on the 0-10 scale, in distill.json dimension order
    rejected: int = 0


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def read_labelled(path: str | Path, dimensions: list[str], limit: int) -> Labelled:
    """Texts and labels from labelled records (`scores` map) or training examples
    (`text` + `dimension_scores` list); unusable lines are counted, not fatal."""
    rejects: list = []

    def parse(obj: dict[str, Any]) -> tuple[str, list[float]]:
        if isinstance(obj.get("scores"), dict):
            record = LabelledRecord.from_json(obj, dimensions, allow_extra=True)
            return article_text(record.article.title, record.article.text), list(record.scores.values())
        if "dimension_scores" not in obj:
            raise ValueError(f"needs 'scores' {{dimension: score}} or 'text' + {len(dimensions)} 'dimension_scores'")
        example = TrainingExample.from_json(obj, len(dimensions))
        return example.text, example.dimension_scores

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
