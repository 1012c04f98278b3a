"""The label-selection simulation's last round, learnt by a real student.

The ridge students refitted every round are a cheap stand-in; what a user
ships is a fine-tuned network. For each chosen strategy and seed, the labels a
strategy holds at the budget become a train split (the simulation's fixed val
split is its val), `distill-train`'s own loop fits a MiniLM LoRA student on
it (LoRA, or with `--finetune-full` every weight, as the shipped student is
trained), and the student is scored on the fixed test split with
distill-evaluate's metrics. Minutes per run on a CPU, so it is opt-in.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.scoring import overall_scores, tiers_for


@dataclass(frozen=True)
class FinetuneRecipe:
    epochs: int = 2
    max_length: int = 128
    full_finetune: bool = False
    lora_rank: int = 16
    batch_size: int = 16

    @property
    def learning_rate(self) -> float:
        # The shipped student's full fine-tune peaks at 1e-4; an adapter alone needs a larger step.
        return 1e-4 if self.full_finetune else 5e-4

    @property
    def name(self) -> str:
        return "full fine-tune" if self.full_finetune else "LoRA"


def write_split(path: Path, spec: Any, ids: list[str], texts: list[str], targets: np.ndarray) -> None:
    """A distill-prepare-shaped split (one records.TrainingExample per line)."""
    tiers = tiers_for(spec, overall_scores(spec, targets))
    with path.open("w", encoding="utf-8") as out:
        for article_id, text, row, tier in zip(ids, texts, targets.tolist(), tiers, strict=True):
            out.write(json.dumps({"id": article_id, "text": text, "dimension_scores": row, "tier": tier}) + "\n")


def finetune_and_score(data: Any, filter_id: str, labelled: np.ndarray, seed: int, recipe: FinetuneRecipe,
                       model_name: str) -> dict[str, Any]:
    """Train a student on `labelled` (val: the fixed val split); its test metrics, weights format and seconds."""
    from distill.artifact import TargetScaler
    from distill.evaluate.metrics import evaluate_predictions
    from distill.student.encode import encode_texts
    from distill.student.load import load_student
    from distill.student.predict import predict_raw
    from distill.train.loop import train
    from distill.train.settings import TrainSettings

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distill-active-") as tmp:
        folder = Path(tmp)
        for name, rows in (("train", labelled), ("val", data.val)):
            write_split(folder / f"{name}.jsonl", data.spec, [data.ids[i] for i in rows],
                        [data.texts[i] for i in rows], data.targets[rows])
        settings = TrainSettings(filter=filter_id, data_dir=folder, output_dir=folder / "student",
                                 model_name=model_name, epochs=recipe.epochs, batch_size=recipe.batch_size,
                                 learning_rate=recipe.learning_rate, max_length=recipe.max_length,
                                 loss="mse+l1", tier_balance=0.5, lora_rank=recipe.lora_rank,
                                 full_finetune=recipe.full_finetune, patience=0, seed=seed)
        model_dir = train(settings, echo=lambda _: None)
        model, tokenizer, info = load_student(model_dir)
        token_ids = encode_texts(tokenizer, [data.texts[i] for i in data.test], info.max_tokens, info.head_share)
        scores = TargetScaler.from_info(info).to_scores(predict_raw(model, tokenizer, token_ids, 32))
    predictions = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 10.0)
    metrics = evaluate_predictions(data.spec, predictions, data.targets[data.test])
    return {"metrics": metrics, "weights_format": info.weights_format, "seconds": time.perf_counter() - began}
