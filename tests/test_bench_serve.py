"""distill-bench serve: the load generator's arithmetic, and a tiny real run (server, load, offline)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_student

from distill.artifact import StudentInfo
from distill.benchmarks.cli import command
from distill.benchmarks.serve import (
    COLUMNS,
    ServeBenchSettings,
    add_ratios,
    metric_sum,
    percentile,
    read_articles,
    target_notes,
)
from distill.filter_spec import load_filter
from distill.settings import flag_of

EXAMPLES = Path(__file__).resolve().parents[1] / "examples/corpus.jsonl"


def test_help_lists_every_setting_without_importing_torch_or_httpx():
    code = ("import sys\nfrom distill.benchmarks.cli import main\ntry:\n    main(['serve', '--help'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None)\n"
            "assert not {'torch', 'transformers', 'httpx'} & set(sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for f in fields(ServeBenchSettings):
        assert flag_of(f) in text and " ".join(f.metadata["help"].split()) in text, f.name


def test_settings_report_every_problem_at_once(tmp_path):
    problems = ServeBenchSettings(data=tmp_path / "none.jsonl", requests=0, concurrency=(0,),
                                  max_batch=0).problems()
    assert len(problems) == 4
    assert all(any(flag in p for p in problems) for flag in ("--data", "--requests", "--concurrency", "--max-batch"))
    args = ServeBenchSettings(max_batch=16).server_args(batching=False)
    assert args[args.index("--max-batch") + 1] == "1" and "--port" in args and "0" in args


def test_percentiles_metrics_ratios_and_targets():
    values = [i / 100 for i in range(1, 101)]  # 0.01 .. 1.00
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile([], 0.5)) == (0.5, 0.99, None)
    assert percentile([3.0], 0.99) == 3.0
    text = ("# HELP distill_batch_articles articles per batch\n# TYPE distill_batch_articles histogram\n"
            'distill_batch_articles_bucket{le="1.0"} 2.0\ndistill_batch_articles_sum{model="a"} 30.0\n'
            'distill_batch_articles_sum{model="b"} 10.0\ndistill_batch_articles_count 8.0\n')
    assert (metric_sum(text, "distill_batch_articles_sum"), metric_sum(text, "distill_batch_articles_count")) == (40.0, 8.0)
    assert metric_sum(text, "distill_queue_tokens") == 0.0
    rows = [
        {"run": "batching on", "clients": 32, "articles/s": 40.0, "p99 ms": 900.0},
        {"run": "batching on", "clients": 16, "articles/s": 36.0, "p99 ms": 700.0},
        {"run": "batching off (max batch 1)", "clients": 32, "articles/s": 10.0, "p99 ms": 3000.0},
        {"run": "distill-score offline", "clients": None, "articles/s": 45.0},
    ]
    add_ratios(rows)
    assert rows[0]["x batching off"] == 4.0 and "x batching off" not in rows[1]
    assert rows[0]["% of offline"] == "89%" and "% of offline" not in rows[3]
    notes = " | ".join(target_notes(rows))
    assert "4.00x (met)" in notes and "89% (met)" in notes and "p99 <= 1 s: 700 ms (met)" in notes


def test_articles_are_real_distinct_and_trimmed_to_id_title_content(real_articles):
    articles = read_articles(real_articles, 50)
    assert len(articles) == 50 and len({a["id"] for a in articles}) == 50
    assert all(set(a) <= {"id", "title", "content"} and len(a["content"]) > 50 for a in articles)


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert_dir) -> Path:
    spec = load_filter("sustainability/v1")
    return tiny_student(tmp_path_factory, tiny_bert_dir, StudentInfo(
        spec.name, spec.version, spec.config_hash, spec.dimension_names, "tiny",
        "encoder", "full", 64, 0.8, [6.0] * 8, [40.0] * 8))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_tiny_run_measures_both_modes_and_offline(tmp_path, student):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    args = ["serve", "-m", str(student), "-f", "sustainability/v1", "--data", str(EXAMPLES),
            "--requests", "12", "--concurrency", "4,2", "--warmup", "2", "--threads", "1",
            "--output-dir", str(tmp_path), "--tag", "tiny"]
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "serve-tiny.json").read_text())
    assert (tmp_path / "serve-tiny.md").is_file() and "articles/s" in result.output
    assert data["columns"] == COLUMNS and data["machine"]["load_avg_1m"] is not None
    runs = [(r["run"], r["clients"]) for r in data["rows"]]
    assert runs == [("batching on", 4), ("batching on", 2), ("batching off (max batch 1)", 4),
                    ("batching off (max batch 1)", 2), ("distill-score offline", None)]
    for row in data["rows"][:4]:
        assert (row["requests"], row["answered"], row["failed"]) == (12, 12, 0), row["statuses"]
        assert row["articles/s"] > 0 and 0 < row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"]
        assert row["% of offline"].endswith("%")
    on, off = data["rows"][0], data["rows"][2]
    assert off["mean batch"] == 1.0 and on["mean batch"] >= 1.0
    assert on["x batching off"] == pytest.approx(on["articles/s"] / off["articles/s"])
    offline = data["rows"][4]
    assert offline["requests"] == 12 and offline["articles/s"] > 0
    assert any("distill-score offline: backend torch-cpu-fp32" in note for note in data["notes"])
    assert any("load average at start" in note for note in data["notes"])
