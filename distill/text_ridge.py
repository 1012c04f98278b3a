"""TF-IDF + ridge on raw text: a predictor fitted in seconds on whatever is labelled so far.

Label selection needs scores for the unlabelled pool before any student
exists. Words and character n-grams are two views of the same text that err
differently, so their disagreement stands in for the student-vs-ridge one
(`uncertain`). evaluate/'s TF-IDF baseline is the word view with its alpha
picked on val; a stage cannot import another, and selection has no val split,
so this one keeps ridge's default alpha.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VIEWS = {
    "words": {"analyzer": "word", "ngram_range": (1, 2)},
    "chars": {"analyzer": "char_wb", "ngram_range": (3, 5)},
}
MAX_FEATURES = 100_000


class TextRidge:
    """One view's TF-IDF (sublinear tf, terms in two or more texts), then ridge to D scores clipped to 0-10."""

    def __init__(self, view: str = "words", alpha: float = 1.0):
        if view not in VIEWS:
            raise ValueError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
        self.view, self.alpha = view, alpha

    def fit(self, texts: Sequence[str], targets: np.ndarray) -> TextRidge:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import Ridge

        self.vectorizer = TfidfVectorizer(min_df=2, max_features=MAX_FEATURES, sublinear_tf=True, **VIEWS[self.view])
        self.model = Ridge(alpha=self.alpha).fit(self.vectorizer.fit_transform(texts), np.asarray(targets, float))
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Scores [n, D] on the 0-10 scale."""
        return np.clip(self.model.predict(self.vectorizer.transform(texts)), 0.0, 10.0)
