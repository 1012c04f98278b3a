"""distill-prepare on small synthetic label files: format, split guarantees,
balancing, determinism, and every kind of bad input."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import write_jsonl

import distill.prepare.pipeline as pipeline
from distill.errors import ConfigError, RecordError
from distill.filter_spec import load_filter
from distill.prepare.cli import main
from distill.prepare.pipeline import run_prepare
from distill.prepare.settings import PrepareSettings
from distill.scoring import score_record
from distill.splits import SPLITS

SPEC = load_filter("sustainability/v1")
DIMS = SPEC.dimension_names
# All dimensions at this level give an overall score inside the tier.
LEVEL = {"breakthrough": 8, "promising": 6, "monitoring": 4, "not_relevant": 1}


def letters(i: int) -> str:
    """A number spelt in letters: near-duplicate hashing ignores digits."""
    return "".join("abcdefghij"[int(d)] for d in str(i))


def record(i: int, tier: str, words: int = 40, **fields) -> dict:
    body = " ".join(f"w{letters(i)}{letters(k)}" for k in range(words))
    scores = {d: LEVEL[tier] for d in DIMS}
    return {"id": f"a{i:04d}", "title": f"Title {letters(i)}", "content": body, "scores": scores} | fields


def mixed(counts: dict[str, int], start: int = 0) -> list[dict]:
    rows, i = [], start
    for tier, n in counts.items():
        for _ in range(n):
            rows.append(record(i, tier))
            i += 1
    random.Random(1).shuffle(rows)
    return rows


def prepare(tmp_path: Path, inputs: list[Path], out: str = "out", **kwargs) -> dict:
    settings = PrepareSettings(inputs=inputs, filter="sustainability/v1", output_dir=tmp_path / out, **kwargs)
    return run_prepare(settings).report


def read_split(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


COUNTS = {"breakthrough": 4, "promising": 12, "monitoring": 60, "not_relevant": 124}


def test_splits_are_stratified_disjoint_and_in_training_form(tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    report = prepare(tmp_path, [data])
    out = tmp_path / "out"
    splits = {name: read_split(out, name) for name in SPLITS}
    for name, rows in splits.items():
        for row in rows:
            assert set(row) == {"id", "text", "dimension_scores", "overall_score", "tier"}
            result = score_record(SPEC, row["dimension_scores"])
            assert (row["overall_score"], row["tier"]) == (result.overall_score, result.tier)
        natural = Counter(r["tier"] for r in {r["id"]: r for r in rows}.values())
        assert all(natural[t] > 0 for t in COUNTS), (name, natural)  # every tier has >= 3
    ids = {name: {r["id"] for r in rows} for name, rows in splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(map(len, ids.values())) == 200
    assert len(splits["val"]) == len(ids["val"]) and len(splits["test"]) == len(ids["test"])
    assert 150 <= len(ids["train"]) <= 170  # ~80%
    assert report["counts"] == {"records_read": 200, "rejected": 0, "duplicate_ids": 0, "examples": 200}
    assert report["filter"]["config_hash"] == SPEC.config_hash
    assert report["inputs"][0]["sha256"] and report["inputs"][0]["examples"] == 200


def test_oversampling_raises_minority_tiers_in_train_only(tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    report = prepare(tmp_path, [data], oversample_ratio=0.3)
    train = read_split(tmp_path / "out", "train")
    written = Counter(r["tier"] for r in train)
    largest = report["splits"]["train"]["tiers"]["not_relevant"]
    target = math.ceil(0.3 * largest)
    assert report["balancing"]["target"] == target
    for tier in ("breakthrough", "promising", "monitoring"):
        natural = report["splits"]["train"]["tiers"][tier]
        assert written[tier] == max(natural, target)
        assert report["balancing"]["added"].get(tier, 0) == written[tier] - natural
    assert written["not_relevant"] == largest
    # copies repeat ids of train examples only; the order is mixed, not grouped by tier
    assert len({r["id"] for r in train}) == report["splits"]["train"]["examples"]
    assert [r["tier"] for r in train[:20]] != sorted(r["tier"] for r in train[:20])


def test_weighting_writes_inverse_frequency_weights_instead_of_copies(tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    report = prepare(tmp_path, [data], weighting=True)
    train = read_split(tmp_path / "out", "train")
    assert len(train) == len({r["id"] for r in train})  # no copies
    mean = sum(r["weight"] for r in train) / len(train)
    assert mean == pytest.approx(1.0, abs=1e-5)
    weight = {r["tier"]: r["weight"] for r in train}
    assert weight["breakthrough"] > weight["promising"] > weight["monitoring"] > weight["not_relevant"]
    assert report["balancing"]["method"] == "weighting"
    assert not any("weight" in r for r in read_split(tmp_path / "out", "val"))


def test_weighting_and_oversample_ratio_together_is_a_usage_error(tmp_path, capsys):
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    args = ["--filter", "sustainability/v1", "--input", str(data), "--output-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--weighting", "--oversample-ratio", "0.5"])
    assert exc.value.code == 2
    assert "--weighting replaces oversampling" in capsys.readouterr().err


def test_output_is_byte_identical_and_independent_of_input_order(tmp_path):
    rows = mixed(COUNTS)
    first = write_jsonl(tmp_path / "a.jsonl", rows)
    reordered = write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)))
    prepare(tmp_path, [first], out="one")
    prepare(tmp_path, [first], out="two")
    prepare(tmp_path, [reordered], out="three")
    prepare(tmp_path, [first], out="other-seed", seed=7)
    for name in [*(f"{s}.jsonl" for s in SPLITS), "prepare_report.json"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes().replace(b"/two", b"/one")
    for name in SPLITS:
        assert (tmp_path / "one" / f"{name}.jsonl").read_bytes() == (tmp_path / "three" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "one/test.jsonl").read_bytes() != (tmp_path / "other-seed/test.jsonl").read_bytes()


def test_small_tiers_fall_back_to_score_bins_and_three_reach_every_split(tmp_path):
    counts = {"breakthrough": 2, "promising": 3, "monitoring": 40, "not_relevant": 55}
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(counts))
    report = prepare(tmp_path, [data])
    strata = {tuple(s["tiers"]): s for s in report["strata"]}
    assert ("breakthrough", "promising") in strata
    assert strata[("breakthrough", "promising")]["overall_score_bin"] == [5.0, 10.0]
    for name in SPLITS:
        assert report["splits"][name]["tiers"]["promising"] >= 1
    assert report["warnings"] == []


def test_near_duplicates_stay_in_one_split(tmp_path):
    rows = mixed(COUNTS)
    base = rows[0]["content"]
    variants = [base.upper(), base.replace(" ", "  ") + " 2024!", "  " + base + " ... (12)"]
    tiers = ["promising", "monitoring", "not_relevant"]
    for k, (text, tier) in enumerate(zip(variants, tiers, strict=True)):
        rows.append(record(900 + k, tier) | {"content": text})
    data = write_jsonl(tmp_path / "labelled.jsonl", rows)
    report = prepare(tmp_path, [data])
    group = sorted([rows[0]["id"], "a0900", "a0901", "a0902"])
    assert group in report["near_duplicates"]["list"]
    homes = {name for name in SPLITS for r in read_split(tmp_path / "out", name) if r["id"] in group}
    assert len(homes) == 1


def test_duplicate_ids_keep_the_first_and_report_the_rest(tmp_path):
    rows = mixed(COUNTS)
    first = write_jsonl(tmp_path / "a.jsonl", rows)
    again = record(999, "breakthrough") | {"id": rows[5]["id"]}
    second = write_jsonl(tmp_path / "b.jsonl", [again, record(1000, "monitoring")])
    report = prepare(tmp_path, [first, second])
    assert report["counts"]["duplicate_ids"] == 1
    assert report["duplicates"] == [{"id": rows[5]["id"], "kept": f"{first}:6", "dropped": f"{second}:1"}]
    kept = [r for name in SPLITS for r in read_split(tmp_path / "out", name) if r["id"] == rows[5]["id"]]
    assert kept[0]["dimension_scores"] == [float(rows[5]["scores"][d]) for d in DIMS]
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["file"] == str(second) and rejects[0]["line"] == 1
    assert "duplicate id" in rejects[0]["reason"]


def bad_lines() -> list[tuple[str, str]]:
    """(raw line, words the reject reason must contain)."""
    good = record(500, "monitoring")
    scores = good["scores"]
    dim = DIMS[0]

    def with_scores(**change):
        return json.dumps(good | {"scores": scores | change})

    return [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in good.items() if k != "id"}), "field 'id'"),
        (json.dumps({k: v for k, v in good.items() if k != "content"}), "field 'content': missing"),
        (json.dumps(good | {"content": "   "}), "field 'content'"),
        (json.dumps(good | {"scores": [1, 2, 3]}), "field 'scores': missing or not an object"),
        (json.dumps({k: v for k, v in good.items() if k != "scores"}), "field 'scores': missing"),
        (with_scores(**{dim: 11}), f"field 'scores.{dim}': 11 is outside 0..10"),
        (with_scores(**{dim: -0.5}), f"field 'scores.{dim}': -0.5 is outside"),
        (with_scores(**{dim: "high"}), f"field 'scores.{dim}': not a number"),
        (with_scores(**{dim: True}), f"field 'scores.{dim}': not a number"),
        (with_scores(**{dim: None}), f"field 'scores.{dim}': not a number"),
        (with_scores(**{dim: {"reasoning": "no score"}}), f"field 'scores.{dim}': not a number"),
        (with_scores(**{dim: float("nan")}), f"field 'scores.{dim}': nan is outside"),
        (with_scores(**{dim: float("inf")}), f"field 'scores.{dim}': inf is outside"),
        (json.dumps(good | {"scores": {d: 4 for d in DIMS[1:]}}), f"missing dimension(s) {dim}"),
        (with_scores(novelty=3), "unexpected dimension(s) novelty"),
    ]


def test_each_bad_line_is_rejected_with_file_line_and_field(tmp_path):
    cases = bad_lines()
    rows = mixed(COUNTS)
    lines = [rows[0], *(raw for raw, _ in cases), *rows[1:]]
    data = write_jsonl(tmp_path / "labelled.jsonl", lines)
    report = prepare(tmp_path, [data])
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == list(range(2, 2 + len(cases)))
    for reject, (_raw, expected) in zip(rejects, cases, strict=True):
        assert reject["file"] == str(data) and reject["raw"]  # the line is kept for fixing
        assert expected in reject["reason"], (reject["reason"], expected)
    assert report["counts"]["rejected"] == len(cases) and report["counts"]["examples"] == 200
    assert report["rejects"]["count"] == len(cases)
    # a clean rerun into the same folder removes the stale rejects file
    prepare(tmp_path, [write_jsonl(tmp_path / "clean.jsonl", rows)])
    assert not (tmp_path / "out/rejects.jsonl").exists()


def test_strict_stops_at_the_first_bad_line(tmp_path):
    data = write_jsonl(tmp_path / "labelled.jsonl", [record(1, "monitoring"), "{oops", record(2, "monitoring")])
    with pytest.raises(RecordError) as exc:
        prepare(tmp_path, [data], strict=True)
    assert exc.value.line_no == 2 and str(data) in str(exc.value)


def test_dimension_names_of_another_filter_are_one_clear_error(tmp_path, capsys):
    wrong = record(1, "monitoring")
    wrong["scores"] = {("climate_impact" if d == DIMS[0] else d): 4 for d in DIMS} | {"hype": 2}
    data = write_jsonl(tmp_path / "labelled.jsonl", ["{bad line", wrong, *mixed(COUNTS)])
    with pytest.raises(ConfigError) as exc:
        prepare(tmp_path, [data])
    message = str(exc.value)
    assert f"{data}:2" in message and "sustainability/v1" in message
    assert f"missing: {DIMS[0]}" in message and "unexpected: climate_impact, hype" in message
    with pytest.raises(SystemExit) as stop:
        main(["--filter", "sustainability/v1", "--input", str(data), "--output-dir", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unexpected: climate_impact, hype" in err and "Traceback" not in err


def test_nested_scores_field_accepts_score_objects(tmp_path):
    rows = []
    for row in mixed(COUNTS):
        scores = row.pop("scores")
        analysis = {d: {"score": v, "reasoning": "because"} for d, v in scores.items()}
        rows.append(row | {"sustainability_analysis": analysis | {"content_type": "news", "summary": "text"}})
    data = write_jsonl(tmp_path / "labelled.jsonl", rows)
    report = prepare(tmp_path, [data], scores_field="sustainability_analysis")
    assert report["counts"]["examples"] == 200 and report["counts"]["rejected"] == 0
    row = read_split(tmp_path / "out", "val")[0]
    assert row["dimension_scores"][0] in {1.0, 4.0, 6.0, 8.0}
    with pytest.raises(ConfigError, match="no usable labelled records"):
        prepare(tmp_path, [data], out="plain")  # default field 'scores' is absent everywhere


def test_long_texts_get_the_filter_word_head_tail(tmp_path):
    rows = mixed(COUNTS)
    long_body = " ".join(f"t{letters(k)}" for k in range(600))
    rows.append(record(777, "monitoring") | {"title": "Long one", "content": long_body})
    data = write_jsonl(tmp_path / "labelled.jsonl", rows)
    report = prepare(tmp_path, [data])
    row = next(r for name in SPLITS for r in read_split(tmp_path / "out", name) if r["id"] == "a0777")
    words = row["text"].split()
    budget, head = SPEC.truncation.student_tokens, round(SPEC.truncation.student_tokens * SPEC.truncation.head_share)
    original = ["Long", "one", *long_body.split()]
    assert words == original[:head] + original[-(budget - head):]
    assert row["text"].startswith("Long one\n\n")  # the title's blank line survives
    assert report["truncation"]["unit"] == "words" and report["truncation"]["truncated_examples"] == 1


def test_settings_problems_are_reported_together(tmp_path):
    settings = PrepareSettings(
        inputs=[tmp_path / "missing.jsonl"], filter="sustainability/v1",
        train_ratio=0.7, val_ratio=0.1, test_ratio=0.1, oversample_ratio=-1,
    )
    with pytest.raises(ConfigError) as exc:
        run_prepare(settings)
    message = str(exc.value)
    for expected in ("no such file", "must sum to 1", "--oversample-ratio"):
        assert expected in message


def test_help_shows_defaults_and_imports_no_torch():
    code = (
        "import sys; from distill.prepare.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[default: 0.2]" in result.stdout and "datasets/<filter name>/v<version>" in result.stdout


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def renamed_filter(folder: Path, name: str) -> Path:
    """A copy of sustainability/v1 whose config says `name: <name>`."""
    shutil.copytree(SPEC.path, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    (folder / "config.yaml").write_text(yaml.safe_dump(config | {"name": name}, sort_keys=False))
    return folder


def run_cli_in(work: Path, monkeypatch, capsys, filter_arg: str, data: Path) -> tuple[int, str]:
    """distill-prepare with the default output folder, run from `work`; (exit code, stderr)."""
    work.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(work)
    try:
        main(["--filter", filter_arg, "--input", str(data)])
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def test_default_output_folder_is_under_datasets(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    code, err = run_cli_in(tmp_path / "work", monkeypatch, capsys, "sustainability/v1", data)
    assert code == 0, err
    out = tmp_path / "work/datasets/sustainability/v1"
    assert {p.name for p in files_under(out)} == {"train.jsonl", "val.jsonl", "test.jsonl", "prepare_report.json"}


def test_filter_name_with_path_parts_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """The issue's case: `name: ../../x` made distill-prepare write outside datasets/."""
    folder = renamed_filter(tmp_path / "filters/evil/v1", "../../escape")
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    before = files_under(tmp_path)
    code, err = run_cli_in(tmp_path / "work/deep", monkeypatch, capsys, str(folder), data)
    assert code == 2
    assert err.startswith(f"error: {folder / 'config.yaml'}: key 'name' must be a plain name (")
    assert "got '../../escape' (e.g. 'escape')" in err and len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == before  # nothing in datasets/, nothing beside it


def test_output_guard_refuses_a_default_folder_outside_datasets(tmp_path, monkeypatch, capsys):
    """Second guard: a spec that bypassed the loader still cannot leave datasets/."""
    monkeypatch.setattr(pipeline, "load_filter", lambda _name: replace(SPEC, name="../../escape"))
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    before = files_under(tmp_path)
    code, err = run_cli_in(tmp_path / "work/deep", monkeypatch, capsys, "sustainability/v1", data)
    assert code == 2
    escaped = (tmp_path / "work/deep/datasets/../../escape/v1").resolve()
    root = (tmp_path / "work/deep/datasets").resolve()
    assert err.strip() == (
        f"error: {SPEC.path / 'config.yaml'}: default output folder datasets/../../escape/v1 "
        f"resolves to {escaped}, outside {root} (filter name '../../escape' is not a plain name); "
        "pass --output-dir to write elsewhere"
    )
    assert files_under(tmp_path) == before and not escaped.exists()


def test_output_guard_follows_symlinks_under_datasets(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "work/datasets").mkdir(parents=True)
    (tmp_path / "work/datasets/sustainability").symlink_to(elsewhere)
    data = write_jsonl(tmp_path / "labelled.jsonl", mixed(COUNTS))
    code, err = run_cli_in(tmp_path / "work", monkeypatch, capsys, "sustainability/v1", data)
    assert code == 2
    assert f"resolves to {elsewhere.resolve()}/v1" in err and "(a symlink under datasets/ leads there)" in err
    assert not any(elsewhere.iterdir())
    # naming the folder explicitly is the user's choice, and works
    main(["--filter", "sustainability/v1", "--input", str(data), "--output-dir", str(elsewhere)])
    assert (elsewhere / "train.jsonl").is_file()
