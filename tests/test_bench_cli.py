"""distill-bench as a command group: help without torch, and the throughput report as a results table."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from distill.benchmarks.cli import command, throughput_result
from distill.benchmarks.corpus import CorpusSettings
from distill.benchmarks.gpu_shapes import GpuShapesSettings
from distill.benchmarks.quality import QualitySettings
from distill.settings import flag_of
from distill.tables import markdown_table


def test_every_subcommand_help_shows_defaults_without_importing_torch():
    code = (
        "import sys\nfrom distill.benchmarks.cli import main\n"
        "for sub in ('corpus', 'gpu-shapes', 'quality', 'throughput'):\n"
        "    try:\n        main([sub, '--help'])\n    except SystemExit as e:\n        assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("[default:") > 20
    assert "--output-dir" in result.stdout and "benchmarks/results" in result.stdout


@pytest.mark.parametrize(("sub", "settings"), [("corpus", CorpusSettings), ("gpu-shapes", GpuShapesSettings),
                                              ("quality", QualitySettings)])
def test_each_subcommand_has_a_flag_with_the_dataclass_help_per_setting(sub, settings):
    from dataclasses import fields

    help_text = " ".join(CliRunner().invoke(command, [sub, "--help"], terminal_width=10_000, max_content_width=10_000).output.split())
    for f in fields(settings):
        assert flag_of(f) in help_text and " ".join(f.metadata["help"].split()) in help_text, f.name


def test_a_bad_flag_value_exits_2_naming_the_flag():
    for args, flag in ((["quality", "--model", "m", "--data", "d", "--split", "train"], "--split"),
                       (["corpus", "-o", "c.jsonl", "--count", "lots"], "--count"),
                       (["gpu-shapes", "--device", "tpu"], "--device")):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output


def test_throughput_report_becomes_rows_with_speedups_and_parity_notes():
    raw = {
        "machine": {"threads": 2, "load_avg_1m": 0.5},
        "model": "all-MiniLM-L6-v2 + fresh 8-dim head", "max_tokens": 256, "data": "x.jsonl",
        "results": [
            {"name": "transformers baseline (fp32, batch 8)", "articles": 100, "seconds": 10.0,
             "articles_per_s": 10.0, "ms_per_article": 100.0, "speedup_vs_baseline": 1.0,
             "floor_ms": 50.0, "x_floor": 2.0},
            {"name": "distill-score onnx-cpu-int8", "articles": 100, "seconds": 2.5, "articles_per_s": 40.0,
             "ms_per_article": 25.0, "speedup_vs_baseline": 4.0, "padding_share": 0.031,
             "floor_ms": 12.5, "x_floor": 2.0, "rounds_speedup": [4.0, 3.9, 4.1]},
        ],
        "floor": {"gflop_per_article": 5.1, "mean_tokens": 220.0, "cpu_flags": ["avx2"],
                  "peak_gflops": {"fp32": 102.0, "bf16": 1.5, "int8": 408.0},
                  "peak_gflops_measured": [{"fp32": 102.0, "bf16": 1.5, "int8": 390.0},
                                           {"fp32": 99.0, "bf16": 1.4, "int8": 408.0}]},
        "parity": {"onnx-int8 vs onnx-fp32": {"compared": 100, "max_abs": 0.014, "mean_abs": 0.003}},
    }
    result = throughput_result(raw)
    assert [row["x baseline"] for row in result.rows] == [1.0, 4.0]
    assert result.rows[1]["padding"] == "3%" and result.rows[0]["padding"] is None
    assert result.rows[1]["rounds x baseline"] == "4, 3.9, 4.1" and result.rows[0]["rounds x baseline"] is None
    assert "parity onnx-int8 vs onnx-fp32: max |diff| 1.40e-02" in result.notes[0]
    table = "\n".join(markdown_table(result.columns, result.cells()))
    assert "| distill-score onnx-cpu-int8 | 100 | 25.00 | 40.00 | 4.00 | 12.50 | 2.00 | 3% |" in table
    assert any("matmul peak fp32 102.0 GFLOP/s, bf16 1.5 GFLOP/s, int8 408.0" in n and "avx2" in n
               and "before and after the runs: fp32 102.0, bf16 1.5, int8 390.0 / fp32 99.0" in n for n in result.notes)
    assert result.settings["data"] == "x.jsonl" and "results" not in result.settings


def test_a_rows_speedup_compares_runs_of_the_same_round():
    """The VM drifts between rounds: a slow baseline round must not lift a variant's ratio.
    Medians of each would give 41 / 12 = 3.42 here; the rounds themselves say ~3.9."""
    from distill.benchmarks.throughput import round_speedups

    baseline = [{"ms_per_article": ms} for ms in (40.0, 55.0, 41.0)]
    auto = [{"ms_per_article": ms} for ms in (10.0, 14.0, 12.0)]
    ratios = round_speedups(baseline, auto)
    assert ratios == [4.0, 3.93, 3.42]
    assert sorted(ratios)[1] == 3.93
    with pytest.raises(ValueError):  # rounds that do not pair up are a bug, not a shorter list
        round_speedups(baseline, auto[:2])
