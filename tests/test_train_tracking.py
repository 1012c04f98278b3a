"""distill-train --report-to: metrics through accelerate's trackers, read back from TensorBoard."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from test_train_loop import settings_for, synthetic_split  # noqa: E402

from distill.errors import ConfigError  # noqa: E402
from distill.train import loop, tracking  # noqa: E402


def test_tensorboard_gets_loss_learning_rate_throughput_and_val_metrics(tiny_bert_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = synthetic_split(tmp_path / "data", n_train=24, n_val=8)
    lines: list[str] = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "model", report_to="tensorboard"),
                     echo=lines.append)
    assert "attention " in lines[0] and lines[0].rstrip().split("attention ")[1] in ("eager", "sdpa")

    events = list((out / tracking.RUNS_DIR).rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    scalars: dict[str, list] = {}
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(acc.Scalars(tag))
    steps = 2 * 3  # 2 epochs of 24 examples at batch 8
    for tag in ("train/loss", "train/learning_rate", "train/examples_per_s", "train/tokens_per_s"):
        assert [e.step for e in scalars[tag]] == list(range(1, steps + 1)), tag
    assert all(e.value > 0 for e in scalars["train/examples_per_s"])
    learning_rates = [e.value for e in scalars["train/learning_rate"]]
    assert max(learning_rates) == pytest.approx(5e-3) and learning_rates[-1] < learning_rates[0]

    history = json.loads((out / "history.json").read_text())
    assert [e.step for e in scalars["val/mae"]] == [3, 6]
    assert [e.value for e in scalars["val/mae"]] == pytest.approx([h["val_mae"] for h in history], rel=1e-6)
    assert [e.value for e in scalars["val/loss"]] == pytest.approx([h["val_loss"] for h in history], rel=1e-6)
    assert len([t for t in scalars if t.startswith("val/mae_")]) == 8


def test_a_tracker_whose_package_is_missing_is_one_line_naming_it(tiny_bert_dir, tmp_path, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    data = synthetic_split(tmp_path / "data", n_train=8, n_val=4)
    with pytest.raises(ConfigError) as caught:
        loop.train(settings_for(tiny_bert_dir, data, tmp_path / "model", report_to="wandb"), echo=lambda _: None)
    assert str(caught.value) == "--report-to wandb: the wandb package is not installed: pip install wandb"


def test_an_unknown_tracker_is_a_settings_problem(tmp_path):
    data = synthetic_split(tmp_path / "data", n_train=8, n_val=4)
    problems = settings_for("base", data, tmp_path / "model", report_to="comet").problems()
    assert problems == ["--report-to: one of tensorboard, mlflow, wandb (got 'comet')"]
