"""distill-score end to end on real articles with a tiny BERT student (torch and ONNX)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import first_rows, tiny_student, write_jsonl

from distill.artifact import Calibration, StudentInfo, write_info
from distill.errors import ConfigError, ModelArtifactError, RecordError
from distill.filter_spec import load_filter
from distill.scoring import score_record, tier_for
from distill.serve.backends import choose_backend, open_backend
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings

SPEC = load_filter("sustainability/v1")
GOSSIP = "celebrity gossip " + " ".join(f"word{i}" for i in range(40))


def student_info(architecture: str = "encoder", max_tokens: int = 64) -> StudentInfo:
    # A wide std spreads the random head's tiny outputs over the 0-10 scale.
    return StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, "tiny",
                       architecture, "full", max_tokens, 0.8, [6.0] * 8, [40.0] * 8)


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert_dir) -> Path:
    return tiny_student(tmp_path_factory, tiny_bert_dir, student_info())


@pytest.fixture(scope="module")
def export(tmp_path_factory, student) -> Path:
    """A real export folder (merged safetensors + model.onnx) from distill.export."""
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings

    folder = tmp_path_factory.mktemp("exports") / "tiny"
    run_export(ExportSettings(model_dir=student, output=folder, onnx=True, bench_articles=0, threads=1),
               echo=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def real_rows(real_articles) -> list[dict]:
    return first_rows(real_articles, 150)


@pytest.fixture
def corpus(tmp_path, real_rows) -> tuple[Path, list[str]]:
    """40 real articles among bad lines, a duplicate and two the prefilter blocks."""
    rows = real_rows[:20] + [
        "{not json",
        {"title": "no id", "content": "text " * 50},
        {"id": "no-text"},
        dict(real_rows[3], title="same id again"),
        {"id": "short-1", "title": "Tiny", "content": "Too short to judge."},
        {"id": "gossip-1", "content": GOSSIP},
    ] + real_rows[20:40]
    valid = [r["id"] for r in real_rows[:20]] + ["short-1", "gossip-1"] + [r["id"] for r in real_rows[20:40]]
    return write_jsonl(tmp_path / "corpus.jsonl", rows), valid


def run(inputs, model, output, **options) -> object:
    options = {"workers": 0, "threads": 1, "progress": False, **options}
    return score_corpus(ScoreSettings(inputs=list(inputs), model=model, output=output, **options))


def read_output(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_scores_real_articles_with_prefilter_rejects_and_shared_rules(tmp_path, student, corpus):
    path, valid = corpus
    out = tmp_path / "scored.jsonl"
    summary = run([path], student, out, carry=("url",))
    records = read_output(out)
    assert [r["id"] for r in records] == valid  # input order, every valid id once
    assert (summary.scored, summary.blocked, summary.rejected) == (40, 2, 4)
    blocked = {r["id"]: r for r in records if r["prefilter"] != "passed"}
    assert blocked["short-1"]["prefilter"].startswith("too_short")
    assert blocked["gossip-1"]["prefilter"].startswith("excluded")
    assert blocked["short-1"]["scores"] is None and blocked["short-1"]["tier"] is None
    scored = [r for r in records if r["prefilter"] == "passed"]
    assert len({r["overall_score"] for r in scored}) > 10  # the model really differs per article
    for record in scored:
        result = score_record(SPEC, record["scores"])
        assert abs(result.overall_score - record["overall_score"]) < 1e-3
        assert record["tier"] == tier_for(SPEC, record["overall_score"])
        assert record["model"] == "sustainability/v1:tiny" and "url" in record
    assert sum(summary.tiers.values()) == 40
    rejects = read_output(tmp_path / "scored.rejects.jsonl")
    assert [(r["line"], r["file"]) for r in rejects] == [(n, str(path)) for n in (21, 22, 23, 24)]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "not JSON" in reasons and "field 'id'" in reasons and "field 'content'" in reasons
    assert f"duplicate id {valid[3]!r}" in reasons


def test_onnx_and_torch_give_the_same_scores(tmp_path, export, corpus):
    path, valid = corpus
    onnx = run([path], export, tmp_path / "onnx.jsonl", workers=1)  # also through a worker process
    torch = run([path], export, tmp_path / "torch.jsonl", backend="torch")
    assert onnx.backend == "onnx-cpu-fp32" and torch.backend == "torch-cpu-fp32"
    a, b = read_output(tmp_path / "onnx.jsonl"), read_output(tmp_path / "torch.jsonl")
    assert [r["id"] for r in a] == [r["id"] for r in b] == valid
    diffs = [abs(x["scores"][d] - y["scores"][d]) for x, y in zip(a, b, strict=True) if x["scores"] for d in x["scores"]]
    assert max(diffs) <= 1e-3
    assert [r["tier"] for r in a] == [r["tier"] for r in b]


def test_compiled_torch_backend_scores_like_eager(tmp_path, student, corpus):
    path, valid = corpus
    eager = run([path], student, tmp_path / "eager.jsonl")
    compiled = run([path], student, tmp_path / "compiled.jsonl", compile=True)
    assert compiled.backend == "torch-cpu-fp32-compiled" and eager.backend == "torch-cpu-fp32"
    a, b = read_output(tmp_path / "eager.jsonl"), read_output(tmp_path / "compiled.jsonl")
    assert [r["id"] for r in b] == valid
    diffs = [abs(x["scores"][d] - y["scores"][d]) for x, y in zip(a, b, strict=True) if x["scores"] for d in x["scores"]]
    assert max(diffs) <= 1e-3
    assert [r["tier"] for r in a] == [r["tier"] for r in b]


def test_rerun_skips_scored_ids_and_trims_a_torn_line(tmp_path, student, corpus):
    path, valid = corpus
    reference = tmp_path / "reference.jsonl"
    run([path], student, reference)
    lines = reference.read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "scored.jsonl"
    out.write_text("".join(lines[:7]) + lines[7][:25], encoding="utf-8")  # killed mid-line
    summary = run([path], student, out)
    assert summary.resumed == 7 and summary.scored + summary.blocked == len(valid) - 7
    assert any("torn" in note for note in summary.notes)
    assert [r["id"] for r in read_output(out)] == valid
    again = run([path], student, out)  # nothing left to do
    assert (again.scored, again.resumed) == (0, len(valid))
    assert read_output(out) == read_output(reference)


def test_sigkill_at_any_point_then_rerun_leaves_every_id_once(tmp_path, student, real_rows):
    rows = [dict(r, id=f"{r['id']}-{k}") for k in range(4) for r in real_rows]
    corpus = write_jsonl(tmp_path / "big.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    command = [sys.executable, "-c", "from distill.serve.cli import main; main()", str(corpus),
               "-m", str(student), "-o", str(out), "--window", "16", "--workers", "1",
               "--threads", "1", "--backend", "torch", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    kills = 0
    for lines_before_kill in (1, 150):  # right after the first window, then mid-run again
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while proc.poll() is None and _lines(out) < lines_before_kill and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1 and 0 < _lines(out) < len(rows)
    run([corpus], student, out)
    records = read_output(out)
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    clean = tmp_path / "clean.jsonl"
    run([corpus], student, clean)
    for got, want in zip(records, read_output(clean), strict=True):
        if want["scores"]:
            assert max(abs(got["scores"][d] - want["scores"][d]) for d in want["scores"]) <= 1e-3


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_strict_stops_at_the_first_bad_line(tmp_path, student, corpus):
    path, _ = corpus
    with pytest.raises(RecordError, match=rf"{path.name}:21: not JSON"):
        run([path], student, tmp_path / "scored.jsonl", strict=True)


def test_calibration_in_the_model_folder_is_applied(tmp_path, student, corpus):
    path, _ = corpus
    folder = tmp_path / "calibrated"
    shutil.copytree(student, folder)
    Calibration({d: ([0.0, 10.0], [8.0, 8.0]) for d in SPEC.dimension_names}).save(folder)
    summary = run([path], folder, tmp_path / "scored.jsonl")
    scored = [r for r in read_output(tmp_path / "scored.jsonl") if r["scores"]]
    assert all(set(r["scores"].values()) == {8.0} and r["tier"] == "breakthrough" for r in scored)
    assert summary.tiers == {"breakthrough": 40}


def test_model_for_another_filter_is_refused(tmp_path, student, corpus):
    path, _ = corpus
    with pytest.raises(ModelArtifactError, match="trained for dimensions"):
        run([path], student, tmp_path / "scored.jsonl", filter="uplifting/v1")


def test_decoder_backend_pools_the_last_token_like_hf(tmp_path, tiny_qwen_dir):
    import torch

    folder = tmp_path / "qwen"
    shutil.copytree(tiny_qwen_dir, folder)
    write_info(folder, student_info("decoder", 32))
    choice = choose_backend(folder, "auto", "cpu", "auto")
    backend = open_backend(folder, student_info("decoder", 32), choice, threads=1, token_budget=64)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(10, 5000, size=n).tolist() for n in (5, 17, 32, 9, 1)]
    got = backend.predict(sequences)
    pad = backend.pad_id
    width = max(map(len, sequences))
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    with torch.inference_mode():
        want = backend.model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_settings_report_every_problem_at_once(tmp_path):
    settings = ScoreSettings(inputs=[tmp_path / "missing.jsonl"], model=tmp_path / "nope",
                             output=tmp_path / "out.jsonl.gz", window=0, precision="int8",
                             backend="torch", carry=("tier",))
    with pytest.raises(ConfigError) as error:
        settings.validate()
    message = str(error.value)
    for part in ("missing.jsonl: no such file", "--model", "--window", "--precision: int8", "--carry tier", ".jsonl"):
        assert part in message


def test_cli_help_is_fast_and_errors_are_one_line(tmp_path, corpus):
    # --help itself runs in a fresh interpreter: importing the CLI is not enough to prove it.
    code = ("import sys; from distill.serve.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'torch'")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    help_text = shown.stdout
    for flag in ("--backend", "--precision", "--token-budget", "--workers", "--window", "--strict", "[default: auto]"):
        assert flag in help_text
    path, _ = corpus
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "from distill.serve.cli import main; main()", str(path), "-m", str(empty),
         "-o", str(tmp_path / "o.jsonl"), "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {empty}: no distill.json; is this a distill model folder?"]


def test_every_setting_is_a_flag_with_its_dataclass_help():
    from dataclasses import fields

    from distill.serve.cli import command
    from distill.settings import flag_of

    wide = {"terminal_width": 10_000, "max_content_width": 10_000}  # no line breaks inside a help text
    help_text = " ".join(CliRunner().invoke(command, ["--help"], **wide).output.split())
    for f in fields(ScoreSettings):
        flag = "INPUTS..." if f.name == "inputs" else flag_of(f)
        assert flag in help_text, flag
        if f.name != "inputs":  # an argument's help is the command's docstring
            assert " ".join(f.metadata["help"].split()) in help_text, f.name
    for short in ("-o, --output", "-m, --model", "-f, --filter", "--write-blocked / --skip-blocked"):
        assert short in help_text


def test_flags_fill_the_settings_and_a_bad_value_exits_2_naming_the_flag(tmp_path, monkeypatch):
    import distill.serve.runner as runner
    from distill.serve.cli import command

    seen = []

    def stop_after_seeing(settings, progress=None):
        seen.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "score_corpus", stop_after_seeing)
    CliRunner().invoke(command, ["a.jsonl", "b.jsonl", "-o", "out", "-m", "m1", "-m", "m2", "-f", "x/v1",
                                 "--carry", "url", "--carry", "title", "--skip-blocked", "--window", "9"])
    (settings,) = seen
    assert settings.inputs == [Path("a.jsonl"), Path("b.jsonl")] and settings.output == Path("out")
    assert settings.model == [Path("m1"), Path("m2")] and settings.filter == ["x/v1"]
    assert settings.carry == ("url", "title") and settings.write_blocked is False and settings.window == 9
    assert settings.threads == (os.cpu_count() or 1) and settings.engine == "local"
    for args, flag in ((["--backend", "tensorrt"], "--backend"), (["--window", "many"], "--window"),
                       (["--carry"], "--carry")):
        result = CliRunner().invoke(command, ["a.jsonl", "-o", "out", *args])
        assert result.exit_code == 2 and f"'{flag}'" in result.output, result.output
    assert "Missing option '-o' / '--output'" in CliRunner().invoke(command, ["a.jsonl"]).output


def test_the_library_checks_the_settings_once_whoever_calls(tmp_path, student, corpus, monkeypatch):
    from distill.serve.cli import main

    with pytest.raises(ConfigError, match="--model: give a model folder, or a --filter"):
        score_corpus(ScoreSettings(inputs=[corpus[0]], output=tmp_path / "o.jsonl"))
    checks = []
    real = ScoreSettings.problems
    monkeypatch.setattr(ScoreSettings, "problems", lambda self: checks.append(1) or real(self))
    main([str(corpus[0]), "-m", str(student), "-o", str(tmp_path / "o.jsonl"), "--workers", "0",
          "--threads", "1", "--no-progress"])
    assert len(checks) == 1
    assert (tmp_path / "o.jsonl").read_text().count("\n") == len(corpus[1])
