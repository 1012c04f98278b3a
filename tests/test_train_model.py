"""Student build/save/load: the head survives a round trip, and a dropped head is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file, save_file  # noqa: E402

from distill.artifact import StudentInfo  # noqa: E402
from distill.errors import ModelArtifactError  # noqa: E402
from distill.student.heads import head_state, verify_head  # noqa: E402
from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train.model import build_student, save_student  # noqa: E402

DIMS = [f"d{i}" for i in range(8)]
TEXTS = ["Solar plant opens in Spain. " * 30, "A short note.", "Battery pilot results."]


def _trained_like(base, tmp_path, full=False):
    model, tokenizer, arch = build_student(str(base), len(DIMS), lora_rank=4, full_finetune=full)
    with torch.no_grad():  # stand-in for training: move the head away from its init
        for tensor in head_state(model).values():
            tensor.add_(0.25)
    info = StudentInfo(
        "t", 1, "hash", DIMS, str(base), arch, "full" if full else "peft-lora", 32, 0.8,
        [5.0] * 8, [2.0] * 8,
    )
    folder = save_student(model, tokenizer, info, tmp_path / "student")
    return model.eval(), tokenizer, info, folder


@pytest.mark.parametrize("base_fixture", ["tiny_qwen_dir", "tiny_bert_dir"])
def test_lora_round_trip_keeps_head_and_predictions(base_fixture, tmp_path, request):
    base = request.getfixturevalue(base_fixture)
    model, tokenizer, info, folder = _trained_like(base, tmp_path)
    expected = {k: v.clone() for k, v in head_state(model).items()}
    verify_head(folder)
    verify_head(folder, expected)
    loaded, loaded_tok, loaded_info = load_student(folder)
    before = predict_scores(model, tokenizer, TEXTS, info)
    after = predict_scores(loaded, loaded_tok, TEXTS, loaded_info)
    assert before.shape == (3, 8)
    assert ((after >= 0) & (after <= 10)).all()
    np.testing.assert_allclose(before, after, atol=1e-5)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == info.base_model


def test_decoder_pools_last_real_token_with_right_padding(tiny_qwen_dir, tmp_path):
    """A text scored alone and inside a padded batch gets the same scores."""
    model, tokenizer, info, _ = _trained_like(tiny_qwen_dir, tmp_path)
    assert tokenizer.padding_side == "right" and model.config.pad_token_id is not None
    alone = predict_scores(model, tokenizer, TEXTS[1:2], info)
    batched = predict_scores(model, tokenizer, TEXTS, info, batch_size=3)[1:2]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_full_finetune_round_trip(tiny_bert_dir, tmp_path):
    model, tokenizer, info, folder = _trained_like(tiny_bert_dir, tmp_path, full=True)
    verify_head(folder)
    loaded, loaded_tok, loaded_info = load_student(folder)
    np.testing.assert_allclose(
        predict_scores(model, tokenizer, TEXTS, info),
        predict_scores(loaded, loaded_tok, TEXTS, loaded_info),
        atol=1e-5,
    )


def test_dropped_head_fails(tiny_bert_dir, tmp_path):
    _, _, _, folder = _trained_like(tiny_bert_dir, tmp_path)
    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, str(path))
    with pytest.raises(ModelArtifactError, match="no regression head"):
        verify_head(folder)


def test_reinitialised_head_fails_checksum(tiny_qwen_dir, tmp_path):
    _, _, _, folder = _trained_like(tiny_qwen_dir, tmp_path)
    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k: (torch.zeros_like(v) if "score" in k else v) for k, v in weights.items()}, str(path))
    with pytest.raises(ModelArtifactError, match="differs from the trained one"):
        verify_head(folder)
