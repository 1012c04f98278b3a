"""distill-bench gpu-shapes: its logic on a CPU with a tiny shape, the real shapes' sizes,
out-of-memory handling, and the clear no-CUDA exit."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from distill.benchmarks.cli import main  # noqa: E402
from distill.benchmarks.gpu_shapes import (  # noqa: E402
    QWEN25_SHAPES,
    GpuShapesSettings,
    attempt,
    body_parameters,
    build_model,
    run_gpu_shapes,
)
from distill.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_result(qwen_tokenizer_dir):
    torch.manual_seed(0)
    settings = GpuShapesSettings(tiny=True, device="cpu", articles=40, token_budget=2048,
                                 train_steps=1, warmup_steps=1, peak_size=128,
                                 tokenizer=qwen_tokenizer_dir)
    return run_gpu_shapes(settings)


def rows_by_run(result) -> dict[str, dict]:
    return {row["run"]: row for row in result.rows}


def test_tiny_shape_runs_every_scoring_variant_and_both_training_modes(tiny_result):
    rows = rows_by_run(tiny_result)
    assert list(rows) == [
        "score baseline (batch 8, input order)",
        "score sorted + mask",
        "score runner path (sorted, no mask)",
        "LoRA train 8x512",
        "LoRA train 8x512 + checkpointing",
    ]  # no 16 GiB cap rows: the cap is a CUDA allocator setting
    for row in rows.values():
        assert row["status"] == "ok" and row["size"] == "tiny"
        assert row["tokens/s"] > 0
    assert rows["LoRA train 8x512"]["loss"] == rows["LoRA train 8x512"]["loss"]  # finite, not NaN


def test_sorted_batches_pad_less_and_the_runner_path_scores_like_plain_transformers(tiny_result):
    rows = rows_by_run(tiny_result)
    baseline = rows["score baseline (batch 8, input order)"]
    runner = rows["score runner path (sorted, no mask)"]
    padding = {name: int(row["padding"].rstrip("%")) for name, row in rows.items() if "padding" in row}
    assert padding["score sorted + mask"] < padding["score baseline (batch 8, input order)"]
    # No mask + head at the last real token must give the masked model's outputs (fp32 on CPU).
    assert runner["max |diff| vs baseline"] < 1e-4
    assert rows["score sorted + mask"]["max |diff| vs baseline"] < 1e-4
    assert baseline["x baseline"] == pytest.approx(1.0)
    assert 0 < runner["% of peak"] and runner["TFLOP/s"] > 0


def test_notes_describe_the_corpus_and_the_measured_peak(tiny_result):
    notes = " ".join(tiny_result.notes)
    assert "matmul peak measured here" in notes
    assert "40 articles" in notes and "512-token cap" in notes
    assert tiny_result.settings["device"] == "cpu"


@pytest.mark.parametrize(("size", "billions"), [("0.5B", 0.36), ("1.5B", 1.31), ("7B", 6.53)])
def test_real_shapes_have_the_published_non_embedding_parameter_counts(size, billions):
    # Built on the meta device: the real shapes' sizes without allocating them.
    model = build_model(QWEN25_SHAPES[size], "meta", torch.bfloat16, seed=0)
    assert body_parameters(model) / 1e9 == pytest.approx(billions, abs=0.01)


def test_out_of_memory_becomes_a_does_not_fit_row():
    def run():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    row = attempt("cpu", run)
    assert row["status"] == "does not fit"
    assert row["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_other_errors_are_not_swallowed():
    def run():
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        attempt("cpu", run)


def test_settings_problems_are_reported_together():
    with pytest.raises(ConfigError) as error:
        GpuShapesSettings(sizes=("3B",), device="cpu", articles=0).validate()
    message = str(error.value)
    assert "--sizes: unknown 3B" in message and "add --tiny" in message and "--articles" in message


def test_sizes_is_one_comma_separated_flag_and_a_bad_size_is_one_line(capsys):
    from distill.benchmarks.cli import gpu_shapes_command

    ctx = gpu_shapes_command.make_context("gpu-shapes", ["--sizes", "0.5B,1.5B,7B", "--device", "cpu"])
    values = {k: v for k, v in ctx.params.items() if k not in ("output_dir", "tag")}
    assert GpuShapesSettings(**values).sizes == ("0.5B", "1.5B", "7B")
    assert gpu_shapes_command.make_context("gpu-shapes", []).params["sizes"] == GpuShapesSettings().sizes
    with pytest.raises(SystemExit) as exit_info:
        main(["gpu-shapes", "--sizes", "0.5B,3B", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--sizes: unknown 3B" in err and "add --tiny" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_without_cuda_it_says_so_and_exits_0(tmp_path, capsys):
    main(["gpu-shapes", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "gpu-shapes needs a CUDA GPU" in out and "--tiny --device cpu" in out
    assert list(tmp_path.iterdir()) == []


def test_cli_tiny_writes_json_and_markdown(tmp_path, qwen_tokenizer_dir):
    main(["gpu-shapes", "--tiny", "--device", "cpu", "--articles", "16", "--train-steps", "1",
          "--warmup-steps", "0", "--token-budget", "1024", "--peak-size", "64",
          "--tokenizer", str(qwen_tokenizer_dir), "--output-dir", str(tmp_path)])
    result = json.loads((tmp_path / "gpu-shapes.json").read_text())
    assert len(result["rows"]) == 5
    assert "gpu-shapes --tiny --device cpu" in result["command"]
    assert result["settings"]["tiny"] is True
    assert "| tiny | score baseline (batch 8, input order) | ok |" in (tmp_path / "gpu-shapes.md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_0_5b_shape_on_cuda_scores_faster_and_fits_under_the_cap(qwen_tokenizer_dir):
    settings = GpuShapesSettings(sizes=("0.5B",), device="cuda", articles=256, train_steps=1,
                                 warmup_steps=1, peak_size=4096, tokenizer=qwen_tokenizer_dir)
    rows = rows_by_run(run_gpu_shapes(settings))
    runner = rows["score runner path (sorted, no mask)"]
    assert all(row["status"] in ("ok", "fits") for row in rows.values()), rows
    # bf16 in other batch shapes: small differences; wrong pooling would be ~the outputs' size.
    assert runner["max |diff| vs baseline"] < 0.1
    assert runner["x baseline"] > 1
    assert rows["LoRA train 8x512 + checkpointing @16 GiB"]["peak GiB"] < 16
    assert rows["score runner path @16 GiB (budget 8192)"]["status"] == "fits"
