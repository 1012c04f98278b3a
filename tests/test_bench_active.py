"""distill-bench active: a tiny label-selection simulation on real shared labels."""

from __future__ import annotations

import json

import pytest

from distill.benchmarks.active import ActiveSettings, run_active

TINY = dict(students=("tfidf", "chars"), strategies=("random", "rare", "mixed"), seeds=(0, 1), start=100,
            step=100, budget=300, test_size=200, val_size=100, limit=900)


def test_tiny_simulation_table_json_plot_and_determinism(tmp_path, shared_labelled):
    settings = ActiveSettings(data=shared_labelled, work=tmp_path / "work", **TINY)
    first = run_active(settings, tmp_path / "active.png", log=lambda _: None)
    again = run_active(settings, None, log=lambda _: None)
    assert first.rows == again.rows  # same seeds, same picks, same metrics
    assert [(r["strategy"], r["labels"]) for r in first.rows] == [
        (s, n) for s in ("random", "rare", "mixed") for n in (100, 200, 300)]
    assert first.columns[:2] == ["strategy", "labels"] and "promising F1 tfidf" in first.columns
    for row in first.rows:
        mean, _, spread = row["promising F1 tfidf"].partition(" ± ")
        assert 0 <= float(mean) <= 1 and float(spread) >= 0
        assert 0 < row["MAE"] < 3 and 0 <= row["tier acc"] <= 1
    start = [r for r in first.rows if r["labels"] == 100]
    assert len({r["promising F1 tfidf"] for r in start}) == 1  # every strategy starts from the same labels
    rare = {r["strategy"]: r["promising labelled"] for r in first.rows if r["labels"] == 300}
    assert rare["rare"] > rare["random"]  # the rare strategy finds more of the rare tier
    assert any("rare - random at 300 labels" in note for note in first.notes)
    records = first.to_json()["settings"]["records"]
    assert len(records) == 2 * 3 * 3 and {"tfidf", "chars"} == set(records[0]["metrics"])
    json.dumps(first.to_json(), allow_nan=False)
    assert (tmp_path / "active.png").stat().st_size > 1000


def test_bad_settings_are_reported_together(tmp_path):
    from distill.errors import ConfigError

    settings = ActiveSettings(data=tmp_path / "none.jsonl", strategies=("mixed", "bogus"), students=("tfidf",),
                              mix="rare=0.9")
    with pytest.raises(ConfigError, match=r"(?s)none\.jsonl.*bogus.*two students.*--mix"):
        settings.validate()


@pytest.mark.parametrize(("full", "recipe", "weights"), [(False, "LoRA", "peft-lora"), (True, "full fine-tune", "full")])
def test_finetune_trains_a_student_on_each_strategys_final_labels(tmp_path, shared_labelled, full, recipe, weights):
    tiny = TINY | dict(seeds=(0,), strategies=("random", "mixed"), finetune=("random", "mixed"),
                       finetune_epochs=1, finetune_tokens=32, finetune_full=full)
    result = run_active(ActiveSettings(data=shared_labelled, work=tmp_path / "work", **tiny), None,
                        log=lambda _: None)
    finetuned = result.to_json()["settings"]["finetuned"]
    assert [(r["strategy"], r["labels"]) for r in finetuned] == [("random", 300), ("mixed", 300)]
    for record in finetuned:
        assert 0 < record["metrics"]["mae"] < 4 and 0 <= record["metrics"]["tier_accuracy"] <= 1
        assert record["metrics"]["per_tier"]["promising"]["support"] > 0
        assert (record["recipe"], record["weights_format"]) == (recipe, weights)  # as distill.json records it
    assert any(n.startswith(f"{recipe} student at the budget, mixed") and "paired - random" in n for n in result.notes)


def test_finetune_must_name_simulated_strategies(tmp_path, real_articles):
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="--finetune: 'uncertain' is not among --strategies"):
        ActiveSettings(data=real_articles, **TINY, finetune=("uncertain",)).validate()
