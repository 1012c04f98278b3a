"""A sparse linear partner for the student: TF-IDF over its own tokens + ridge.

The student and a ridge regression on token uni- and bigram TF-IDF make
different mistakes (one reads meaning, the other counts words), so a weighted
average of the two usually has the lower MAE; it also pulls toward the mean,
which can cost recall on rare tiers, so the evaluate report shows both. The ridge reads the same token ids the
student gets (same tokenizer, same head + tail cut) and predicts the same
standardised targets, so the blend lives where the model's outputs are
made: every backend and every engine applies it without seeing any text.

`distill-evaluate --ensemble` fits it on train, picks the weight on val and
saves `ensemble.npz` in the model folder (plain arrays, no pickle); predicting,
exporting and scoring then use it wherever the folder goes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import write_bytes_atomic
from distill.errors import ModelArtifactError

ENSEMBLE_FILE = "ensemble.npz"
RIDGE_ALPHAS = (0.3, 1.0, 3.0)
WEIGHT_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)  # student weight candidates
MIN_DOCUMENTS = 2  # a token or pair must occur in this many train articles


def token_features(ids: Sequence[int]) -> list[str]:
    """Unigrams "17" and bigrams "17_2045" of one token id sequence."""
    words = [str(i) for i in ids]
    return words + [f"{a}_{b}" for a, b in zip(words[:-1], words[1:], strict=True)]


def fit_ridge(features: Any, targets: np.ndarray, val_features: Any, val_targets: np.ndarray,
              alphas: Sequence[float], post: Callable[[np.ndarray], np.ndarray] = lambda p: p) -> tuple[float, Any]:
    """(alpha, fitted sklearn Ridge) with the lowest val MAE of `post(prediction)`; the first alpha wins ties."""
    from sklearn.linear_model import Ridge

    best = None
    for alpha in alphas:
        ridge = Ridge(alpha=alpha).fit(features, targets)
        mae = float(np.abs(post(ridge.predict(val_features)) - val_targets).mean())
        if best is None or mae < best[0]:
            best = (mae, alpha, ridge)
    return best[1], best[2]


class TokenRidge:
    """TF-IDF (sublinear tf, l2 norm) over token uni+bigrams, then a linear map to D outputs."""

    def __init__(self, vectorizer, coef: np.ndarray, intercept: np.ndarray, student_weight: float = 1.0):
        self.vectorizer = vectorizer
        self.coef = coef.astype(np.float32)  # [D, features]
        self.intercept = intercept.astype(np.float32)  # [D]
        self.student_weight = float(student_weight)

    @classmethod
    def fit(cls, train_ids: Sequence[Sequence[int]], train_targets: np.ndarray,
            val_ids: Sequence[Sequence[int]], val_targets: np.ndarray) -> TokenRidge:
        """Fit on standardised targets; ridge alpha chosen by val MAE (same scale)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(analyzer=token_features, sublinear_tf=True, min_df=MIN_DOCUMENTS)
        features = vectorizer.fit_transform(train_ids)
        _, ridge = fit_ridge(features, train_targets, vectorizer.transform(val_ids), val_targets, RIDGE_ALPHAS)
        return cls(vectorizer, ridge.coef_, ridge.intercept_)

    def predict(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Standardised outputs [n, D] (float32)."""
        features = self.vectorizer.transform(sequences)
        return np.asarray(features @ self.coef.T, dtype=np.float32) + self.intercept

    def blend(self, student: np.ndarray, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The ensemble's output: student_weight x student + the rest x ridge."""
        w = self.student_weight
        return (w * np.asarray(student, dtype=np.float32) + (1 - w) * self.predict(sequences)).astype(np.float32)

    def save(self, folder: str | Path) -> Path:
        vocabulary = self.vectorizer.vocabulary_
        terms = sorted(vocabulary, key=vocabulary.get)
        pairs = np.array([_id_pair(t) for t in terms], dtype=np.int32).reshape(-1, 2)
        path = Path(folder) / ENSEMBLE_FILE
        buffer = io.BytesIO()  # written whole, then renamed in: a full disk keeps the old file
        np.savez_compressed(buffer, features=pairs, idf=self.vectorizer.idf_.astype(np.float32), coef=self.coef,
                            intercept=self.intercept, student_weight=np.float64(self.student_weight))
        write_bytes_atomic(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> TokenRidge | None:
        """The folder's ensemble, or None when it has none."""
        path = Path(folder) / ENSEMBLE_FILE
        if not path.is_file():  # checked first: scoring without an ensemble needs no scikit-learn
            return None
        from sklearn.feature_extraction.text import TfidfVectorizer

        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("features", "idf", "coef", "intercept", "student_weight")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelArtifactError(
                f"{path}: not a distill ensemble file ({exc}); refit it with distill-evaluate --ensemble, or delete it"
            ) from None
        terms = [str(a) if b < 0 else f"{a}_{b}" for a, b in arrays["features"].tolist()]
        if not (len(terms) == len(arrays["idf"]) == arrays["coef"].shape[1]):
            raise ModelArtifactError(f"{path}: features, idf and coef disagree in length")
        vectorizer = TfidfVectorizer(analyzer=token_features, sublinear_tf=True,
                                     vocabulary={t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = arrays["idf"].astype(np.float64)
        return cls(vectorizer, arrays["coef"], arrays["intercept"], float(arrays["student_weight"]))


def _id_pair(term: str) -> tuple[int, int]:
    """"17" -> (17, -1), "17_2045" -> (17, 2045): token ids are never negative."""
    first, _, second = term.partition("_")
    return int(first), int(second) if second else -1


def choose_student_weight(student_val: np.ndarray, ridge_val: np.ndarray, to_scores, true_val: np.ndarray,
                          post_process) -> tuple[float, dict[float, float]]:
    """The student weight with the lowest val MAE after `post_process`, and every weight's MAE.

    `to_scores` maps standardised outputs to 0-10 scores; ties go to the
    larger student weight (the simpler model)."""
    maes = {}
    for w in WEIGHT_GRID:
        blended = w * student_val + (1 - w) * ridge_val
        maes[float(w)] = float(np.abs(post_process(to_scores(blended)) - true_val).mean())
    best = min(maes, key=lambda w: (round(maes[w], 6), -w))
    return best, maes
