"""The compute floor: FLOPs an article needs, the matmul peak per precision, and the CPU flags."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from distill.benchmarks.floor import (
    article_gflop,
    cpu_flags,
    higher_peaks,
    matmul_peak,
    projection_shapes,
)


def minilm_like() -> SimpleNamespace:
    return SimpleNamespace(model_type="bert", hidden_size=384, intermediate_size=1536,
                           num_attention_heads=12, num_hidden_layers=6)


def test_minilm_article_at_220_tokens_needs_about_5_gflop():
    # DESIGN.md's measured figure for MiniLM-L6 at ~220 tokens is about 5.1 GFLOP
    assert article_gflop(minilm_like(), 220) == pytest.approx(5.12, abs=0.01)
    # attention grows with the square of the length: twice the tokens is more than twice the work
    assert article_gflop(minilm_like(), 440) > 2 * article_gflop(minilm_like(), 220)


def test_decoder_shapes_have_grouped_kv_and_a_gated_mlp():
    qwen = SimpleNamespace(model_type="qwen2", hidden_size=896, intermediate_size=4864,
                           num_attention_heads=14, num_key_value_heads=2, num_hidden_layers=24)
    shapes = projection_shapes(qwen)
    assert shapes.count((896, 128)) == 2  # k and v at 2 of 14 heads
    assert shapes.count((896, 4864)) == 2 and (4864, 896) in shapes


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_matmul_peak_is_a_positive_rate_for_each_precision(precision):
    pytest.importorskip("torch")
    peak = matmul_peak(precision, [(64, 128), (128, 64)], rows=64, threads=1, seconds=0.02)
    assert 0 < peak < 1e6  # GFLOP/s: above zero, below any CPU's reach


def test_two_measurements_keep_each_precisions_higher_peak_and_its_floor():
    # A disturbed measurement reads a peak too low; the floor must come from the quieter one.
    before = {"gflop_per_article": 6.0, "mean_tokens": 250.0, "cpu_flags": ["avx2"],
              "peak_gflops": {"fp32": 92.0, "bf16": 420.0, "int8": 380.0}, "floor_ms": {}}
    after = dict(before, peak_gflops={"fp32": 180.0, "bf16": 200.0, "int8": 800.0})
    floor = higher_peaks(before, after)
    assert floor["peak_gflops"] == {"fp32": 180.0, "bf16": 420.0, "int8": 800.0}
    assert floor["floor_ms"] == {"fp32": 33.33, "bf16": 14.29, "int8": 7.5}
    assert floor["peak_gflops_measured"] == [before["peak_gflops"], after["peak_gflops"]]


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        matmul_peak("fp16", [(8, 8)], rows=8, threads=1)


def test_cpu_flags_reads_only_the_features_that_matter(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16 foo\n")
    assert cpu_flags(info) == ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    assert cpu_flags(tmp_path / "missing") == []


def test_variants_of_an_emulated_precision_are_skipped_with_the_reason():
    from distill.benchmarks.throughput import VARIANTS, runnable_variants

    kept, skipped = runnable_variants({"fp32": 100.0, "bf16": 1.5, "int8": 200.0})
    assert [v[1] for v in kept] == ["auto", "fp32", "fp32", "int8", "fp32", "int8"]  # auto picks per machine itself
    assert len(skipped) == 3 and all("bf16 matmul peak 1.5 GFLOP/s" in reason for reason in skipped)
    assert runnable_variants({"fp32": 100.0, "bf16": 300.0, "int8": 200.0}) == (list(VARIANTS), [])
    kept, skipped = runnable_variants({"fp32": 100.0, "bf16": 300.0, "int8": 200.0}, static_int8=False)
    assert ("openvino", "int8", False) not in kept and skipped == [
        "openvino-int8: no static int8 export (pip install 'distill[openvino-int8]' (nncf and openvino))"]
