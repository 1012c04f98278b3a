"""The README's main job: the shipped student scores the example corpus, offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from distill.artifact import Calibration
from distill.filter_spec import load_filter
from distill.scoring import score_record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "corpus.jsonl"


def test_sustainability_ships_a_student_with_its_report():
    student = load_filter("sustainability/v1").shipped_student
    assert student is not None
    info = json.loads((student / "distill.json").read_text())
    assert info["dimensions"] == load_filter("sustainability/v1").dimension_names
    assert info["weights_format"] == "full" and (student / "model.safetensors").stat().st_size < 100_000_000
    for export in ("model.int8.onnx", "model.int8w.onnx"):
        assert (student / export).stat().st_size < 30_000_000  # what the torch-free main command scores
    assert (student / "report" / "model_evaluation.md").is_file()


def test_main_command_scores_the_example_corpus_with_the_shipped_student(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "scored.jsonl"
    result = subprocess.run(
        ["distill-score", str(EXAMPLES), "--filter", "sustainability/v1", "-o", str(out), "--no-progress"],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 36  # the duplicate id and two bad lines are not scored
    rejects = [json.loads(line) for line in out.with_name("scored.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == [35, 37, 39]
    spec = load_filter("sustainability/v1")
    blocked = {r["id"]: r["prefilter"] for r in records if r["prefilter"] != "passed"}
    assert set(blocked) == {"ex-009", "ex-017", "ex-022"}
    calibration = Calibration.load(spec.shipped_student)  # its tiers' operating point, if it ships one
    shifts = calibration.tier_shifts if calibration else None
    for record in records:
        if record["scores"] is None:
            continue
        expected = score_record(spec, record["scores"], shifts=shifts)
        assert record["tier"] == expected.tier
        assert record["overall_score"] == pytest.approx(expected.overall_score, abs=1e-3)
    assert "scored" in result.stderr


def test_filter_without_a_shipped_student_needs_a_model(tmp_path):
    result = subprocess.run(
        ["distill-score", str(EXAMPLES), "--filter", "uplifting/v1", "-o", str(tmp_path / "o.jsonl")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "ships no student" in result.stderr and "Traceback" not in result.stderr
