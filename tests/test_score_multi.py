"""distill-score with several filters in one pass (local engine, tiny BERT students, real articles)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import first_rows, tiny_student, write_jsonl

from distill.artifact import StudentInfo
from distill.errors import ConfigError
from distill.filter_spec import load_filter
from distill.scoring import score_record
from distill.serve.jobs import build_plan
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings

SUSTAIN = load_filter("sustainability/v1")
UPLIFT = load_filter("uplifting/v1")


def info_for(spec, name: str) -> StudentInfo:
    return StudentInfo(spec.name, spec.version, spec.config_hash, spec.dimension_names, name,
                       "encoder", "full", 64, 0.8, [5.0] * 8, [30.0] * 8)


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """Two students with the same tokenizer: one per filter (the weights are the same random BERT)."""
    folders = {}
    for spec, name in ((SUSTAIN, "tiny-s"), (UPLIFT, "tiny-u")):
        folders[spec.name] = tiny_student(tmp_path_factory, tiny_bert_dir, info_for(spec, name), name)
    return folders


@pytest.fixture(scope="module")
def strict_tiers(tmp_path_factory) -> Path:
    """sustainability/v1 with higher tier minimums: same dimensions, another verdict."""
    folder = tmp_path_factory.mktemp("filters") / "sustainability-strict" / "v1"
    shutil.copytree(_filter_dir(), folder)
    config = (folder / "config.yaml").read_text(encoding="utf-8")
    config = config.replace("name: sustainability\n", "name: sustainability-strict\n")
    config = config.replace("breakthrough: 7.5", "breakthrough: 9.5").replace("promising: 5.0", "promising: 8.0").replace("monitoring: 3.0", "monitoring: 6.0")
    (folder / "config.yaml").write_text(config, encoding="utf-8")
    return folder


def _filter_dir() -> Path:
    import distill.filters

    return Path(distill.filters.__file__).parent / "sustainability" / "v1"


@pytest.fixture
def corpus(tmp_path, real_articles) -> Path:
    rows = first_rows(real_articles, 60)
    rows.insert(10, "{broken")
    rows.append({"id": "short-1", "title": "Tiny", "content": "Too short to judge."})
    return write_jsonl(tmp_path / "corpus.jsonl", rows)


def run(corpus: Path, model, output: Path, **options):
    options = {"workers": 0, "threads": 1, "progress": False, "window": 16, **options}
    return score_corpus(ScoreSettings(inputs=[corpus], model=model, output=output, **options))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_model_two_filters_share_the_forward_pass(tmp_path, students, strict_tiers, corpus):
    model = students["sustainability"]
    summary = run(corpus, model, tmp_path / "out", filter=["sustainability/v1", str(strict_tiers)])
    base, strict = read(tmp_path / "out/sustainability-v1.jsonl"), read(tmp_path / "out/sustainability-strict-v1.jsonl")
    single = read_single(tmp_path, corpus, model)
    assert summary.articles == 60 and summary.scored == 120  # 60 articles through the model once, 2 filters
    assert [r["id"] for r in base] == [r["id"] for r in strict] == [r["id"] for r in single]
    assert base == single  # the same windows and batches as a one-filter run: identical records
    spec = load_filter(strict_tiers)
    for a, b in zip(base, strict, strict=True):
        assert a["scores"] == b["scores"]  # one model output, two postfilters
        if b["scores"]:
            assert b["tier"] == score_record(spec, b["scores"]).tier
    assert {r["tier"] for r in base} != {r["tier"] for r in strict}  # stricter tiers really applied
    assert len(read(tmp_path / "out/rejects.jsonl")) == 1
    assert any("config hash differs" in note for note in summary.notes)


def read_single(tmp_path: Path, corpus: Path, model: Path) -> list[dict]:
    out = tmp_path / "single.jsonl"
    run(corpus, model, out)
    return read(out)


def test_two_models_tokenise_once_and_resume_per_output(tmp_path, students, corpus):
    models = [students["sustainability"], students["uplifting"]]
    template = tmp_path / "scored-{filter}.jsonl"
    settings = ScoreSettings(inputs=[corpus], model=models, output=template)
    plan = build_plan(settings)
    assert len(plan.models) == 2 and len(plan.groups) == 1  # same tokenizer files: one tokenisation
    run(corpus, models, template)
    outputs = [tmp_path / "scored-sustainability-v1.jsonl", tmp_path / "scored-uplifting-v1.jsonl"]
    first = [read(path) for path in outputs]
    assert [r["model"] for r in first[1]][:1] == ["uplifting/v1:tiny-u"]
    assert (tmp_path / "scored-rejects.jsonl").is_file()
    lines = outputs[1].read_text(encoding="utf-8").splitlines(keepends=True)
    outputs[1].write_text("".join(lines[:25]) + lines[25][:10], encoding="utf-8")  # killed mid-line
    again = run(corpus, models, template)
    sustain, uplift = again.jobs
    assert (sustain.resumed, sustain.scored + sustain.blocked) == (61, 0)
    assert (uplift.resumed, uplift.scored + uplift.blocked) == (25, 36)
    assert again.articles == uplift.scored  # only the articles missing from one output ran
    resumed = [read(path) for path in outputs]
    assert resumed[0] == first[0]
    assert [r["id"] for r in resumed[1]] == [r["id"] for r in first[1]]
    for got, want in zip(resumed[1], first[1], strict=True):
        if want["scores"]:
            assert max(abs(got["scores"][d] - want["scores"][d]) for d in want["scores"]) <= 1e-3


def test_output_layout_and_pairing_are_checked_up_front(tmp_path, students, corpus):
    models = [students["sustainability"], students["uplifting"]]
    bad = ScoreSettings(inputs=[corpus], model=models, output=tmp_path / "one.jsonl",
                        filter=["sustainability/v1", "uplifting/v1", "sustainability/v1"])
    with pytest.raises(ConfigError) as error:
        bad.validate()
    message = str(error.value)
    assert "given 3 times for 2 models" in message and "named twice" in message and "{filter}" in message
    same = ScoreSettings(inputs=[corpus], model=[models[0], models[0]], output=tmp_path / "out")
    with pytest.raises(ConfigError, match="same filter twice"):
        build_plan(same)


def test_cli_scores_two_filters_into_a_folder(tmp_path, students, corpus):
    from distill.serve.cli import command

    result = CliRunner().invoke(command, [
        str(corpus), "-m", str(students["sustainability"]), "-m", str(students["uplifting"]),
        "-o", str(tmp_path / "scored"), "--workers", "0", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in ("sustainability-v1", "uplifting-v1"):
        assert len(read(tmp_path / "scored" / f"{name}.jsonl")) == 61
    assert len(read(tmp_path / "scored" / "rejects.jsonl")) == 1


def test_help_shows_engines_and_multi_filter_flags_without_importing_ray():
    import subprocess
    import sys

    # --help itself runs in a fresh interpreter: importing the CLI is not enough to prove it.
    code = ("import sys; from distill.serve.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    help_text = " ".join(shown.stdout.split())
    for part in ("--engine [local|ray]", "--ray-address", "--ray-cpus", "--actors", "--gpus-per-actor",
                 "{filter}", "Repeat to score several filters"):
        assert part in help_text


def test_repeated_flags_pair_models_and_filters_and_the_engine_is_a_choice(monkeypatch):
    import distill.serve.runner as runner
    from distill.serve.cli import command

    seen = []

    def stop_after_seeing(settings, progress=None):
        seen.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "score_corpus", stop_after_seeing)
    CliRunner().invoke(command, ["c.jsonl", "-o", "out/{filter}.jsonl", "-m", "a", "-m", "b",
                                 "-f", "sustainability/v1", "-f", "uplifting/v1", "--engine", "ray", "--actors", "2"])
    (settings,) = seen
    assert settings.model_filter_pairs() == [(Path("a"), "sustainability/v1"), (Path("b"), "uplifting/v1")]
    assert (settings.engine, settings.actors) == ("ray", 2)
    bad = CliRunner().invoke(command, ["c.jsonl", "-o", "out", "--engine", "spark"])
    assert bad.exit_code == 2 and "Invalid value for '--engine'" in bad.output and "'spark'" in bad.output
