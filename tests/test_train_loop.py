"""distill-train end to end on tiny models: train, save, reload, resume after a crash."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import write_jsonl  # noqa: E402

from distill.artifact import read_info  # noqa: E402
from distill.errors import ConfigError  # noqa: E402
from distill.splits import read_split  # noqa: E402
from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train import checkpoint as ckpt  # noqa: E402
from distill.train import loop  # noqa: E402
from distill.train.data import length_grouped_batches, tier_balance_weights  # noqa: E402
from distill.train.settings import TrainSettings  # noqa: E402

WORDS = "solar wind battery grid policy storage carbon pilot plant market city river".split()


def synthetic_split(folder, n_train=24, n_val=8, seed=0):
    """Articles whose scores rise with the number of 'solar'/'battery' words."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        rows = []
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
            signal = min(10, sum(w in ("solar", "battery") for w in words))
            scores = [float(min(10, signal + (j % 3))) for j in range(8)]
            tier = "promising" if signal >= 5 else "monitoring" if signal >= 3 else "not_relevant"
            rows.append({"id": f"{name}-{i}", "text": " ".join(words), "dimension_scores": scores,
                         "overall_score": float(np.mean(scores)), "tier": tier})
        write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


def train_tiny(base, root, n_train: int, n_val: int):
    """(model folder, data folder): one epoch of a tiny student on a synthetic split under `root`."""
    data = synthetic_split(root / "data", n_train=n_train, n_val=n_val)
    return loop.train(settings_for(base, data, root / "model", epochs=1), echo=lambda _: None), data


def settings_for(base, data, out, **overrides):
    values = dict(filter="sustainability/v1", data_dir=data, output_dir=out, model_name=str(base),
                  epochs=2, batch_size=8, learning_rate=5e-3, max_length=32, lora_rank=4, seed=3,
                  num_threads=1)
    return TrainSettings(**{**values, **overrides})


@pytest.mark.parametrize("base_fixture", ["tiny_qwen_dir", "tiny_bert_dir"])
def test_train_saves_a_loadable_student(base_fixture, tmp_path, request):
    base = request.getfixturevalue(base_fixture)
    data = synthetic_split(tmp_path / "data")
    lines = []
    out = loop.train(settings_for(base, data, tmp_path / "model"), echo=lines.append)
    info = read_info(out)
    assert info.weights_format == "peft-lora" and info.dimensions[0] == "climate_impact_potential"
    assert info.architecture == ("decoder" if "qwen" in base_fixture else "encoder")
    assert info.training["learning_rate"] == 5e-3 and info.training["head_sha256"]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert len(history[0]["val_mae_per_dimension"]) == 8
    assert (out / "checkpoint-best" / "distill.json").is_file()
    assert any("head verified" in line for line in lines)
    model, tokenizer, info = load_student(out)
    scores = predict_scores(model, tokenizer, ["solar battery solar", "river city"], info)
    assert scores.shape == (2, 8) and np.isfinite(scores).all()


def test_full_finetune_lowers_val_mae(tiny_bert_dir, tmp_path):
    data = synthetic_split(tmp_path / "data", n_train=48)
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", full_finetune=True, epochs=3,
                                  learning_rate=2e-3, loss="mse+l1"), echo=lambda _: None)
    history = json.loads((out / "history.json").read_text())
    assert read_info(out).weights_format == "full"
    assert history[-1]["val_mae"] < history[0]["val_mae"]


def test_resume_after_crash_matches_uninterrupted_run(tiny_bert_dir, tmp_path, monkeypatch):
    data = synthetic_split(tmp_path / "data")
    straight = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "a", save_steps=2), echo=lambda _: None)

    real = loop.learning_rate_at

    def crash_at_step_5(step, total, settings):
        if step == 4:  # 0-based: the 5th optimiser step, inside epoch 2
            raise RuntimeError("simulated crash")
        return real(step, total, settings)

    monkeypatch.setattr(loop, "learning_rate_at", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train(settings_for(tiny_bert_dir, data, tmp_path / "b", save_steps=2), echo=lambda _: None)
    monkeypatch.setattr(loop, "learning_rate_at", real)
    lines = []
    resumed = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "b", save_steps=2, resume=True,
                                      seed=99), echo=lines.append)
    assert any("seed: checkpoint has 3, flag says 99; keeping the checkpoint's" in line for line in lines)
    assert any("Resuming at epoch 2, step 4" in line for line in lines)
    a, b = (json.loads((p / "history.json").read_text()) for p in (straight, resumed))
    assert [h["val_mae"] for h in a] == pytest.approx([h["val_mae"] for h in b], abs=1e-6)
    texts = ["solar battery solar grid", "city river"]
    ma, ta, ia = load_student(straight)
    mb, tb, ib = load_student(resumed)
    np.testing.assert_allclose(predict_scores(ma, ta, texts, ia), predict_scores(mb, tb, texts, ib), atol=1e-6)


def test_resume_without_checkpoint_is_a_clear_error(tiny_bert_dir, tmp_path):
    data = synthetic_split(tmp_path / "data")
    with pytest.raises(ConfigError, match="no checkpoint"):
        loop.train(settings_for(tiny_bert_dir, data, tmp_path / "none", resume=True))


def test_settings_report_every_problem(tmp_path):
    settings = TrainSettings(filter="sustainability/v1", data_dir=tmp_path / "missing", epochs=0,
                             learning_rate=-1.0, loss="cosine", load_in_4bit=True, full_finetune=True)
    with pytest.raises(ConfigError) as info:
        settings.validate()
    message = str(info.value)
    for flag in ("--data-dir", "--epochs", "--learning-rate", "--loss", "--load-in-4bit"):
        assert flag in message


def test_split_reading_weights_and_batches(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "a", "text": "x", "dimension_scores": [1] * 8, "tier": "monitoring", "weight": 3.0},
        {"id": "b", "text": "y", "dimension_scores": [2] * 8, "tier": "promising", "weight": 1.0},
        "not json",
        {"id": "c", "text": "z", "dimension_scores": [1] * 7, "tier": "monitoring"},
    ])
    split = read_split(path, 8)
    assert split.ids == ["a", "b"] and split.weights.tolist() == [1.5, 0.5]
    assert [(r.line_no, "dimension_scores" in r.reason) for r in split.rejects] == [(3, False), (4, True)]
    weights = tier_balance_weights(["m", "m", "m", "p"], 1.0)
    assert weights[3] / weights[0] == pytest.approx(3.0) and weights.mean() == pytest.approx(1.0)
    lengths = list(range(40))
    batches = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == lengths
    assert batches == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert batches != length_grouped_batches(lengths, 8, seed=1, epoch=1)


def test_train_state_is_what_a_checkpoint_saves_and_a_resume_reads():
    state = loop.TrainState()
    assert set(state.to_json()) == set(ckpt.PROGRESS_KEYS) | {"best_mae"}
    assert state.record_epoch(0.5, {"val_loss": 0.2, "val_mae": 1.0}) is True
    assert state.record_epoch(None, {"val_loss": 0.3, "val_mae": 1.2}) is False
    assert (state.epoch, state.step_in_epoch, state.best_mae, state.stale_epochs) == (2, 0, 1.0, 1)
    assert [(h["epoch"], h["train_loss"]) for h in state.history] == [(1, 0.5), (2, None)]
    saved = {**state.to_json(), "settings": {}, "param_groups": []}
    assert ckpt._state_problems(saved) == []
    assert loop.TrainState.from_json(saved) == state


def test_overall_coefficients_turn_standardised_errors_into_the_weighted_mean_error():
    from distill.artifact import TargetScaler
    from distill.filter_spec import load_filter

    spec = load_filter("sustainability/v1")
    rng = np.random.default_rng(0)
    train = rng.uniform(0, 10, size=(50, 8))
    scaler = TargetScaler.fit(train)
    coef = loop.overall_coefficients(spec, scaler, train)
    weights = np.array([d.weight for d in spec.dimensions]) / sum(d.weight for d in spec.dimensions)
    a, b = rng.uniform(0, 10, size=(5, 8)), rng.uniform(0, 10, size=(5, 8))
    spread = (train @ weights).std()
    error = (scaler.standardise(a) - scaler.standardise(b)) @ coef
    np.testing.assert_allclose(error * spread, a @ weights - b @ weights, rtol=1e-5)


def test_training_loss_adds_the_overall_term_only_when_asked():
    pred, target = torch.tensor([[1.0, -1.0], [0.5, 0.5]]), torch.zeros(2, 2)
    coef = torch.tensor([0.5, 0.5])
    plain = loop.regression_loss(pred, target, "mse")
    assert torch.equal(loop.training_loss(pred, target, "mse", coef, 0.0), plain)
    # row 0's errors cancel in the overall score; row 1's add up to 0.5, squared 0.25, times weight 2
    np.testing.assert_allclose(loop.training_loss(pred, target, "mse", coef, 2.0) - plain, [0.0, 0.5], atol=1e-7)


def test_overall_loss_and_bf16_run_end_to_end(tiny_bert_dir, tmp_path):
    data = synthetic_split(tmp_path / "data")
    lines = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", full_finetune=True, epochs=1,
                                  overall_loss_weight=0.5, precision="bf16"), echo=lines.append)
    info = read_info(out)
    assert info.training["overall_loss_weight"] == 0.5 and info.training["precision"] == "bf16"
    assert any("cpu in bf16" in line for line in lines)
    assert np.isfinite(json.loads((out / "history.json").read_text())[0]["val_mae"])


@pytest.mark.parametrize(("flags", "device", "precision", "expected"), [
    ("avx2", "cpu", "auto", "fp32"),
    ("avx512_bf16 avx512_vnni", "cpu", "auto", "bf16"),
    ("amx_bf16", "cpu", "fp32", "fp32"),
    ("avx2", "cuda", "auto", "bf16"),
    ("avx2", "cpu", "bf16", "bf16"),
])
def test_the_flags_make_auto_bf16_only_where_the_device_computes_it(
        flags, device, precision, expected, tmp_path, monkeypatch):
    from distill.cpu_features import cpu_features

    monkeypatch.setenv("DISTILL_CPU_FLAGS", flags)
    cpu_features.cache_clear()
    try:
        settings = TrainSettings(filter="sustainability/v1", data_dir=tmp_path, precision=precision)
        assert settings.resolved_precision(device) == expected
    finally:
        cpu_features.cache_clear()


def test_distill_json_records_the_precision_auto_resolved_to(tiny_bert_dir, tmp_path, monkeypatch):
    from distill.cpu_features import cpu_features

    monkeypatch.setenv("DISTILL_CPU_FLAGS", "avx2")
    cpu_features.cache_clear()
    try:
        out = loop.train(settings_for(tiny_bert_dir, synthetic_split(tmp_path / "data"), tmp_path / "m",
                                      epochs=1, precision="auto"), echo=lambda _: None)
    finally:
        cpu_features.cache_clear()
    assert read_info(out).training["precision"] == "fp32"


def test_bad_precision_and_negative_overall_weight_are_settings_problems(tmp_path):
    settings = TrainSettings(filter="sustainability/v1", data_dir=tmp_path, precision="fp8",
                             overall_loss_weight=-1.0)
    message = "\n".join(settings.problems())
    assert "--precision" in message and "--overall-loss-weight" in message
