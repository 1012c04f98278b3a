"""distill-train under `accelerate launch` with 2 CPU processes (gloo DDP) equals one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from test_train_loop import settings_for, synthetic_split  # noqa: E402

from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train import loop  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def dropout_free_bert(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer BERT without dropout, so two processes can match one exactly (up to summation order)."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert-no-dropout")
    config = BertConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=512, num_labels=8,
                        problem_type="regression", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(minilm_dir) / name).exists():
            shutil.copy(Path(minilm_dir) / name, folder / name)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_the_same_model_as_one(tmp_path, dropout_free_bert):
    # 26 examples at batch 8: the last batch has 2 rows, one per process.
    data = synthetic_split(tmp_path / "data", n_train=26, n_val=8)
    options = dict(full_finetune=True, epochs=2, patience=0, tier_balance=0.5)
    one = loop.train(settings_for(dropout_free_bert, data, tmp_path / "one", **options), echo=lambda _: None)

    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--num_processes", "2", "--num_machines", "1", "--cpu",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(accelerate.with_name("distill-train")), "--filter", "sustainability/v1", "--data-dir", str(data),
               "--output-dir", str(tmp_path / "two"), "--model-name", str(dropout_free_bert),
               "--epochs", "2", "--batch-size", "8", "--learning-rate", "5e-3", "--max-length", "32",
               "--seed", "3", "--num-threads", "1", "--full-finetune", "--patience", "0", "--tier-balance", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Model saved to") == 1  # process 0 alone reports and saves

    history = [json.loads((tmp_path / name / "history.json").read_text()) for name in ("one", "two")]
    for a, b in zip(*history, strict=True):
        assert abs(a["val_mae"] - b["val_mae"]) < 1e-4
    texts = [json.loads(line)["text"] for line in (data / "test.jsonl").read_text().splitlines()]
    predictions = []
    for folder in (one, tmp_path / "two"):
        model, tokenizer, info = load_student(folder)
        predictions.append(predict_scores(model, tokenizer, texts, info))
    assert np.abs(predictions[0] - predictions[1]).max() < 1e-3
    assert np.abs(predictions[0] - predictions[0].mean(axis=0)).max() > 1e-3  # the model really varies
