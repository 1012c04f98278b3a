"""Model cards: Hugging Face front matter, and a recipe that scores like distill-score."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import move_from_init, write_jsonl  # noqa: E402

from distill.artifact import Calibration, StudentInfo  # noqa: E402
from distill.filter_spec import load_filter  # noqa: E402
from distill.model_card import NOTES_END, NOTES_START, read_card, refresh_metrics, write_card  # noqa: E402
from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train.model import build_student, save_student  # noqa: E402

SPEC = load_filter("sustainability/v1")
SHIPPED = Path(__file__).resolve().parents[1] / "filters/sustainability/v1/student"
WORDS = "solar battery grid storage plant wind carbon capture megawatt pilot".split()


def _article(i: int, words: int) -> dict:
    body = " ".join(WORDS[(i * 7 + k) % len(WORDS)] + ("." if k % 9 == 8 else "") for k in range(words))
    return {"id": f"a{i}", "title": f"Project {i} opens", "content": body}


# Short ones fit the 64-token cut; long ones are cut at head and tail.
ARTICLES = [_article(i, n) for i, n in enumerate([22, 30, 40, 25, 120, 300, 80])]


def _text(article: dict) -> str:
    return f"{article['title']}\n\n{article['content']}"


@pytest.fixture(scope="module")
def adapter(tiny_bert_dir, tmp_path_factory) -> Path:
    """A LoRA student for sustainability/v1 whose weights moved from their init, with a
    calibration and an operating point."""
    torch.manual_seed(3)
    model, tokenizer, arch = build_student(str(tiny_bert_dir), len(SPEC.dimensions), lora_rank=4)
    move_from_init(model, 0.3)
    info = StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, str(tiny_bert_dir), arch,
                       "peft-lora", 64, 0.8, [4.0] * 8, [15.0] * 8, metrics={"val_mae": 1.25})
    folder = save_student(model, tokenizer, info, tmp_path_factory.mktemp("adapter") / "student")
    knots = {d: ([0.0, 3.0, 6.0, 10.0], [0.0, 2.5, 7.0, 10.0]) for d in SPEC.dimension_names[:5]}
    Calibration(knots, "isotonic", {"promising": 0.4}).save(folder)
    return folder


@pytest.fixture(scope="module")
def export(adapter, tmp_path_factory) -> Path:
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings

    folder = tmp_path_factory.mktemp("exports") / "sust-tiny"
    run_export(ExportSettings(model_dir=adapter, output=folder, bench_articles=0, threads=1), echo=lambda _: None)
    return folder


def _recipe(folder: Path) -> dict:
    """The card's python block, run as a module that is not __main__."""
    block = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    namespace: dict = {"__name__": "card_recipe"}
    exec(compile(block, str(folder / "README.md"), "exec"), namespace)
    return namespace


def _distill_score(folder: Path, tmp_path: Path) -> dict[str, dict]:
    from distill.serve.runner import score_corpus
    from distill.serve.settings import ScoreSettings

    corpus = write_jsonl(tmp_path / "corpus.jsonl", ARTICLES)
    out = tmp_path / "scored.jsonl"
    # fp32 torch, as the recipe runs: on an AMX CPU the automatic choice is bf16.
    score_corpus(ScoreSettings(inputs=[corpus], model=folder, output=out, workers=0, threads=1, progress=False,
                               backend="torch", precision="fp32"))
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {r["id"]: r for r in records}


def _assert_same(recipe: list[dict], scored: list[dict], tolerance: float) -> None:
    for mine, theirs in zip(recipe, scored, strict=True):
        assert mine["tier"] == theirs["tier"]
        assert abs(mine["overall_score"] - theirs["overall_score"]) <= tolerance
        for name in SPEC.dimension_names:
            assert abs(mine["scores"][name] - theirs["scores"][name]) <= tolerance, name


def test_the_cards_recipe_scores_like_distill_score(export, tmp_path):
    recipe = _recipe(export)
    texts = [_text(a) for a in ARTICLES]
    ours = recipe["to_records"](recipe["outputs_any_length"](texts, export), export)
    scored = _distill_score(export, tmp_path)
    assert {r["prefilter"] for r in scored.values()} == {"passed"}
    # distill-score writes 4 decimals: equal within half of the last one plus 1e-5.
    _assert_same(ours, [scored[a["id"]] for a in ARTICLES], 5e-5 + 1e-5)

    # And within 1e-5 of distill's unrounded scores (the same load, cut, scaler, calibration).
    model, tokenizer, info = load_student(export)
    expected = predict_scores(model, tokenizer, texts, info, calibration=Calibration.load(export))
    got = np.array([[r["scores"][d] for d in SPEC.dimension_names] for r in ours])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.ptp(got) > 1.0  # scores spread over the scale: the comparison means something


def test_the_pipeline_recipe_maps_standardised_outputs_back_for_short_articles(export, tmp_path):
    recipe = _recipe(export)
    short = [a for a in ARTICLES if len(a["content"].split()) <= 40]
    outputs = recipe["outputs_with_pipeline"]([_text(a) for a in short], export)
    assert np.abs(outputs).max() < 5  # standardised, not 0-10 scores
    scored = _distill_score(export, tmp_path)
    _assert_same(recipe["to_records"](outputs, export), [scored[a["id"]] for a in short], 5e-5 + 1e-5)
    with pytest.raises(ValueError, match="longer than 64 tokens"):
        recipe["outputs_with_pipeline"]([_text(ARTICLES[5])], export)


def test_the_recipe_loads_a_lora_adapter_folder_too(adapter):
    recipe = _recipe(adapter)
    texts = [_text(a) for a in ARTICLES[:5]]
    ours = recipe["to_records"](recipe["outputs_any_length"](texts, adapter), adapter)
    model, tokenizer, info = load_student(adapter)
    expected = predict_scores(model, tokenizer, texts, info, calibration=Calibration.load(adapter))
    # The recipe merges LoRA into the base first: float sums in another order, times std 15.
    np.testing.assert_allclose([[r["scores"][d] for d in SPEC.dimension_names] for r in ours], expected, atol=1e-4)


def test_front_matter_is_a_hub_model_card(export, adapter):
    hub = pytest.importorskip("huggingface_hub")
    card = hub.ModelCard.load(export / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-classification" and data["library_name"] == "transformers"
    assert "filter:sustainability/v1" in data["tags"] and data["distill"]["filter_version"] == 1
    assert data["distill"]["weights_format"] == "merged"
    assert "base_model" not in data  # a path on this machine, not a hub id
    assert yaml.safe_load((adapter / "README.md").read_text().split("---")[1])["library_name"] == "peft"
    text = (export / "README.md").read_text()
    assert "64 tokens, special tokens included" in text and "| `promising` | 5 | 4.6 |" in text
    assert "tier_shifts" in text and "isotonic" in text and "## Export" in text


def test_evaluation_metrics_refresh_the_card_and_notes_survive(export, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for item in export.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    card = (folder / "README.md").read_text()
    (folder / "README.md").write_text(card.replace(f"{NOTES_START}\n{NOTES_END}",
                                                   f"{NOTES_START}\nTrained on a laptop.\n{NOTES_END}"))
    metrics = json.loads((SHIPPED / "report/metrics.json").read_text())
    assert refresh_metrics(folder, metrics) == folder / "README.md"
    meta = read_card(folder)["meta"]
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["MAE, mean over dimensions"] == round(metrics["student"]["mae"], 4)
    assert values["tier accuracy"] == round(metrics["student"]["tiers"]["accuracy"], 4)
    assert "breakthrough recall" not in values  # no test support: NaN is left out, not written
    assert "Trained on a laptop." in (folder / "README.md").read_text()
    (folder / "README.md").write_text("# my own notes\n")
    assert refresh_metrics(folder, metrics) is None  # a hand-written README is left alone


def test_the_shipped_student_card_is_current():
    """filters/sustainability/v1/student/README.md is what write_card makes of the folder."""
    before = (SHIPPED / "README.md").read_text(encoding="utf-8")
    meta = read_card(SHIPPED)["meta"]
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["license"] == "apache-2.0"
    assert meta["distill"]["evaluation"]["mae"] == 0.5988
    assert "## How it was trained" in before  # the human notes are kept
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as temp:
        copy = Path(temp) / "student"
        shutil.copytree(SHIPPED, copy)
        write_card(copy, name="student")
        assert (copy / "README.md").read_text(encoding="utf-8") == before
