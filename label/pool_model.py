"""What scores the unlabelled pool for `--select`: a student, or TF-IDF + ridge on the labels so far.

`--student DIR`: the network's scores (calibrated when the folder has a
calibration), and as second opinion its token ridge (`ensemble.npz`, from
distill-evaluate --ensemble), else word TF-IDF + ridge on the labels so far,
else (too few labels) one seeded pass of the network with dropout on.
Without a student: word TF-IDF + ridge fitted on OUTPUT_DIR/labelled.jsonl,
and character n-gram TF-IDF + ridge as second opinion. Heavy imports happen
only when a predictor is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from distill.errors import DistillError
from distill.filter_spec import FilterSpec

# Fewer labels than this fit a ridge too noisy to rank anything by.
MIN_LABELLED = 50


@dataclass
class Labelled:
    texts: list[str]
    targets: np.ndarray  # [N, D]


class PoolModel(Protocol):
    description: str

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores [n, D], second opinion [n, D] or None), both 0-10."""
        ...


class RidgePool:
    def __init__(self, labelled: Labelled, second: bool):
        from distill.text_ridge import TextRidge

        _enough(labelled, "fit TF-IDF + ridge on")
        self.words = TextRidge("words").fit(labelled.texts, labelled.targets)
        self.chars = TextRidge("chars").fit(labelled.texts, labelled.targets) if second else None
        self.description = f"TF-IDF + ridge on {len(labelled.texts)} labels" + (
            " (second opinion: character n-grams)" if second else "")

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        return self.words.predict(texts), None if self.chars is None else self.chars.predict(texts)


class StudentPool:
    def __init__(self, spec: FilterSpec, folder: Path, labelled: Labelled, second: bool, seed: int):
        from distill.artifact import Calibration, TargetScaler, read_info
        from distill.ensemble import TokenRidge
        from distill.student.load import load_student

        read_info(folder).check_filter(spec)  # a student of another filter scores other dimensions
        self.model, self.tokenizer, self.info = load_student(folder)
        self.tokenizer.model_max_length = 1 << 30  # whole articles are tokenised before the head + tail cut
        self.scaler, self.calibration = TargetScaler.from_info(self.info), Calibration.load(folder)
        self.token_ridge = TokenRidge.load(folder) if second else None
        self.text_ridge, self.dropout_seed = None, None
        other = "none"
        if self.token_ridge is not None:
            other = "its token ridge"
        elif second and len(labelled.texts) >= MIN_LABELLED:
            from distill.text_ridge import TextRidge

            self.text_ridge = TextRidge("words").fit(labelled.texts, labelled.targets)
            other = f"TF-IDF + ridge on {len(labelled.texts)} labels"
        elif second:
            self.dropout_seed = seed
            other = f"a dropout pass, seed {seed}"
        self.description = f"student {self.info.artifact_id} (second opinion: {other})"

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        from distill.student.encode import encode_texts
        from distill.student.predict import predict_raw
        from distill.truncation import clip_chars

        info = self.info
        clipped = [clip_chars(t, info.max_tokens, info.head_share) for t in texts]
        token_ids = encode_texts(self.tokenizer, clipped, info.max_tokens, info.head_share)
        scores = self._scores(predict_raw(self.model, self.tokenizer, token_ids))
        if self.token_ridge is not None:
            return scores, self.scaler.to_scores(self.token_ridge.predict(token_ids))
        if self.dropout_seed is not None:
            return scores, self._dropout_pass(token_ids)
        return scores, None if self.text_ridge is None else self.text_ridge.predict(texts)

    def _dropout_pass(self, token_ids: list[list[int]]) -> np.ndarray:
        """The network once more with dropout on, seeded: where it moves most, it is least sure."""
        import torch

        from distill.student.predict import predict_raw

        torch.manual_seed(self.dropout_seed)
        self.model.train()
        try:
            raw = predict_raw(self.model, self.tokenizer, token_ids)
        finally:
            self.model.eval()
        return self._scores(raw)

    def _scores(self, raw: np.ndarray) -> np.ndarray:
        scores = self.scaler.to_scores(raw)
        return scores if self.calibration is None else self.calibration.apply(scores, self.info.dimensions)


def pool_model(spec: FilterSpec, student: Path | None, labelled: Labelled, second: bool, seed: int) -> PoolModel:
    """The student's scores when a student is given, else TF-IDF + ridge on the labels so far."""
    return StudentPool(spec, Path(student), labelled, second, seed) if student else RidgePool(labelled, second)


def _enough(labelled: Labelled, doing: str) -> None:
    if len(labelled.texts) < MIN_LABELLED:
        raise DistillError(
            f"--select: {len(labelled.texts)} article(s) labelled in the output folder, too few to {doing} "
            f"(need {MIN_LABELLED}); label a random start first (--select random), or give --student")
