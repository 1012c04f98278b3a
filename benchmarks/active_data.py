"""The labelled pool the label-selection simulation draws from, and its frozen embeddings.

A labelled file stands in for the oracle: "sending" an article means reading
its label. Texts are what the student sees (title + body); targets are the
oracle's scores in filter order. Frozen all-MiniLM-L6-v2 embeddings (mean
pooled over the student's head + tail cut, L2-normalised) are computed once
and cached in the work folder under a key of the file, the model and the cut,
because on a 2-core CPU they take minutes and every round reuses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.filter_spec import FilterSpec
from distill.records import LabelledRecord, read_records
from distill.truncation import article_text


@dataclass
class Pool:
    ids: list[str]
    texts: list[str]
    targets: np.ndarray  # [N, D], 0-10

    def __len__(self) -> int:
        return len(self.ids)


def read_pool(spec: FilterSpec, path: Path, limit: int = 0) -> Pool:
    """Every valid labelled record of `path` (the first `limit` when given), in file order."""
    ids, texts, rows = [], [], []
    for record in read_records([path], lambda obj: LabelledRecord.from_json(obj, spec.dimension_names)):
        ids.append(record.article.id)
        texts.append(article_text(record.article.title, record.article.text))
        rows.append([record.scores[d] for d in spec.dimension_names])
        if limit and len(ids) >= limit:
            break
    return Pool(ids, texts, np.array(rows, dtype=np.float64).reshape(len(ids), len(spec.dimensions)))


def embeddings(pool: Pool, spec: FilterSpec, model_dir: Path, work: Path, batch_size: int = 32) -> np.ndarray:
    """[N, hidden] float32 frozen sentence embeddings, from the cache when it holds them."""
    key = hashlib.sha256("\n".join([str(model_dir), str(spec.truncation.student_tokens),
                                    str(spec.truncation.head_share), *pool.ids]).encode()).hexdigest()[:16]
    cache = Path(work) / f"embeddings-{key}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    vectors = _embed(pool.texts, model_dir, spec.truncation.student_tokens, spec.truncation.head_share, batch_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npy")  # renamed in whole: a killed run leaves no half cache
    np.save(partial, vectors)
    partial.replace(cache)
    return vectors


def _embed(texts: list[str], model_dir: Path, max_tokens: int, head_share: float, batch_size: int) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from distill.student.encode import encode_texts
    from distill.student.predict import predict_sorted

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.model_max_length = 1 << 30  # whole articles are tokenised before the head + tail cut
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    token_ids = encode_texts(tokenizer, texts, max_tokens, head_share)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
            weights = torch.from_numpy(mask).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return predict_sorted(run, token_ids, tokenizer.pad_token_id, batch_size, model.config.hidden_size).astype(np.float32)
