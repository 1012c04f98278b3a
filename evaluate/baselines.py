"""Cheap baselines a student has to beat, trained on the same train split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill.ensemble import fit_ridge

TFIDF_ALPHAS = (0.3, 1.0, 3.0, 10.0)


class MeanPredictor:
    """Predicts each dimension's train mean for every article."""

    name = "mean"

    def fit(self, texts: Sequence[str], targets: np.ndarray) -> MeanPredictor:
        self.mean = np.asarray(targets, dtype=float).mean(axis=0)
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self.mean, (len(texts), 1))


class TfidfRidge:
    """Word 1–2-gram TF-IDF + multi-output ridge; alpha picked on val by MAE."""

    name = "tfidf_ridge"

    def __init__(self, max_features: int = 100_000):
        self.max_features = max_features

    def fit(
        self, texts: Sequence[str], targets: np.ndarray,
        val_texts: Sequence[str] | None = None, val_targets: np.ndarray | None = None,
    ) -> TfidfRidge:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import Ridge

        self.vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, max_features=self.max_features, sublinear_tf=True
        )
        features = self.vectorizer.fit_transform(texts)
        if val_texts is None or val_targets is None:
            self.alpha, self.model = 1.0, Ridge(alpha=1.0).fit(features, targets)
        else:
            self.alpha, self.model = fit_ridge(features, targets, self.vectorizer.transform(val_texts), val_targets,
                                               TFIDF_ALPHAS, post=self._clip)
        return self

    @staticmethod
    def _clip(pred: np.ndarray) -> np.ndarray:
        return np.clip(pred, 0.0, 10.0)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self._clip(self.model.predict(self.vectorizer.transform(texts)))
