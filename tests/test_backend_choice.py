"""The per-machine backend choice: ranking by CPU features, what the folder and the
install allow, the start-up probe and its fallback, scoring without torch."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_student, write_jsonl

from distill.artifact import StudentInfo
from distill.cpu_features import CpuFeatures, cpu_features
from distill.errors import ConfigError
from distill.filter_spec import load_filter
from distill.serve import backends
from distill.serve.backends import backend_candidates, open_best_backend, ranked_choices
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings
from distill.student.probe import PROBE_FILE, compare, read_probe

SPEC = load_filter("sustainability/v1")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "corpus.jsonl"


def example_articles() -> list[dict]:
    """The example corpus's well-formed articles (it also holds bad lines on purpose)."""
    found = []
    for line in EXAMPLES.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("content"):
            found.append(obj)
    return found
AMX = CpuFeatures(frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}))
AVX2 = CpuFeatures(frozenset({"avx2", "fma"}))
VNNI = CpuFeatures(frozenset({"avx2", "avx512f", "avx512_vnni"}))  # int8 units, no bf16 ones


def labels(choices) -> list[str]:
    return [c.label for c in choices]


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly these runtimes are installed (find_spec is all the choice looks at)."""
    real = backends.importlib.util.find_spec

    def set_installed(*packages: str) -> None:
        known = set(backends.BACKEND_PACKAGES.values())
        monkeypatch.setattr(backends.importlib.util, "find_spec",
                            lambda name, *a: (real(name, *a) if name in packages else None) if name in known
                            else real(name, *a))
    return set_installed


def folder_with(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def test_bf16_and_static_int8_are_ranked_first_only_where_the_cpu_has_them():
    amx, plain = labels(ranked_choices("cpu", AMX)), labels(ranked_choices("cpu", AVX2))
    assert amx[:4] == ["openvino-cpu-int8", "openvino-cpu-bf16", "torch-cpu-bf16", "onnx-cpu-int8"]
    assert plain[:2] == ["onnx-cpu-int8", "openvino-cpu-int8"] and not any("bf16" in label for label in plain)
    vnni = labels(ranked_choices("cpu", VNNI))
    assert vnni[:2] == ["openvino-cpu-int8", "onnx-cpu-int8"] and not any("bf16" in label for label in vnni)
    assert labels(ranked_choices("cuda", AVX2))[0] == "torch-cuda-bf16"


def test_candidates_follow_the_folder_files_and_the_install(tmp_path, installed):
    installed("torch", "onnxruntime", "openvino")
    shipped = folder_with(tmp_path, "adapter_model.safetensors", "model.int8.onnx", "model.int8w.onnx")
    assert labels(backend_candidates(shipped, "auto", "cpu", "auto", AMX)) == [
        "openvino-cpu-bf16", "torch-cpu-bf16", "onnx-cpu-int8", "torch-cpu-fp32"]
    assert labels(backend_candidates(shipped, "auto", "cpu", "auto", AVX2)) == ["onnx-cpu-int8", "torch-cpu-fp32"]
    installed("onnxruntime")  # the `[score]` install: no torch, no OpenVINO
    assert labels(backend_candidates(shipped, "auto", "cpu", "auto", AMX)) == ["onnx-cpu-int8"]
    with pytest.raises(ConfigError, match=r"--backend openvino needs openvino: pip install 'distill\[openvino\]'"):
        backend_candidates(shipped, "openvino", "cpu", "auto", AMX)
    with pytest.raises(ConfigError, match="no backend can run this model here"):
        backend_candidates(folder_with(tmp_path / "x"), "auto", "cpu", "auto", AMX)
    installed("onnxruntime", "openvino")  # `[score,openvino]`, the README's main command
    with_ir = folder_with(tmp_path / "ir", "openvino_model.int8.xml", "model.int8.onnx", "model.int8w.onnx")
    assert labels(backend_candidates(with_ir, "auto", "cpu", "auto", VNNI)) == ["openvino-cpu-int8", "onnx-cpu-int8"]
    assert labels(backend_candidates(with_ir, "auto", "cpu", "auto", AVX2)) == ["onnx-cpu-int8", "openvino-cpu-int8"]


def test_explicit_flags_give_one_choice_or_one_clear_error(tmp_path, installed):
    installed("torch", "onnxruntime", "openvino")
    folder = folder_with(tmp_path, "model.safetensors", "model.onnx")
    assert labels(backend_candidates(folder, "torch", "cpu", "bf16", AVX2)) == ["torch-cpu-bf16"]
    assert labels(backend_candidates(folder, "openvino", "cpu", "fp32", AVX2)) == ["openvino-cpu-fp32"]
    with pytest.raises(ConfigError, match="no model.int8.onnx .*--quantize int8"):
        backend_candidates(folder, "onnx", "cpu", "int8", AVX2)
    with pytest.raises(ConfigError, match="--precision int8 needs the onnx backend"):
        backend_candidates(folder, "torch", "cpu", "int8", AVX2)
    with pytest.raises(ConfigError, match="--precision bf16: onnx runs"):
        backend_candidates(folder, "onnx", "cpu", "bf16", AVX2)
    with pytest.raises(ConfigError, match="no model.int8w.onnx or model.fp16.onnx or model.onnx|--int8-weights"):
        backend_candidates(folder_with(tmp_path / "y", "model.safetensors"), "openvino", "cpu", "bf16", AMX)
    with pytest.raises(ConfigError, match=r"no openvino_model.int8.xml \(run distill-export --onnx --openvino-int8\)"):
        backend_candidates(folder, "openvino", "cpu", "int8", VNNI)


def test_cpu_flags_come_from_cpuinfo_or_the_override(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512_bf16 amx_bf16\n\nprocessor\t: 1\n")
    monkeypatch.delenv("DISTILL_CPU_FLAGS")
    cpu_features.cache_clear()
    try:
        found = cpu_features(cpuinfo)
        assert found.bf16 and not found.int8 and "amx_bf16" in found.describe()
        assert cpu_features(tmp_path / "missing").flags == frozenset()
        monkeypatch.setenv("DISTILL_CPU_FLAGS", "avx2 avx512_vnni")
        cpu_features.cache_clear()
        assert cpu_features(cpuinfo).int8 and not cpu_features(cpuinfo).bf16
    finally:
        cpu_features.cache_clear()


# --- real exports of a tiny BERT ---------------------------------------------------------


def student_info() -> StudentInfo:
    return StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, "tiny",
                       "encoder", "full", 256, 0.8, [5.0] * 8, [2.0] * 8)


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_bert_dir) -> Path:
    """An export with every CPU variant: model.onnx, model.int8.onnx, model.int8w.onnx,
    openvino_model.int8.xml (calibrated on the same articles: the gate is not under test), probe.json."""
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings

    student = tiny_student(tmp_path_factory, tiny_bert_dir, student_info())
    rng = random.Random(0)
    rows = [{"id": f"v{i}", "text": a["content"], "dimension_scores": [rng.randint(0, 9) for _ in SPEC.dimension_names]}
            for i, a in enumerate(example_articles())]
    validation = write_jsonl(tmp_path_factory.mktemp("val") / "val.jsonl", rows)
    folder = tmp_path_factory.mktemp("exports") / "tiny"
    # The gate is not under test here (a random head's int8 error is arbitrary in score units).
    run_export(ExportSettings(model_dir=student, output=folder, onnx=True, quantize="int8", int8_weights=True,
                              openvino_int8=True, calibration_data=validation, calibration_limit=16,
                              validation_data=validation, mae_tolerance=100.0, bench_articles=0, threads=1),
               echo=lambda _: None)
    return folder


def test_export_writes_a_probe_every_variant_passes(export):
    probe = read_probe(export)
    assert probe is not None and probe.reference == "torch-fp32" and len(probe.sequences) >= 4
    assert len({len(s) for s in probe.sequences}) > 1  # varied lengths
    for backend, precision in (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "bf16"), ("openvino", "int8")):
        model = backends.open_model(export, student_info(), backends.BackendChoice(backend, "cpu", precision), 1)
        result = compare(model.predict(probe.sequences), probe, precision)
        assert result.passed, (backend, precision, result)
    report = json.loads((export / "export_report.json").read_text())
    assert report["onnx"]["int8w_quantised_weights"] > 0
    assert report["openvino_int8"]["calibration_articles"] == 16
    assert {"int8", "int8w", "openvino_int8"} <= set(report["mae"])
    for variant in ("fp32", "int8", "int8w", "openvino_int8"):  # tiered as distill-score tiers, beside the MAE
        tiers = report["mae"][variant]["tiers"]
        assert 0 <= tiers["accuracy"] <= 1 and tiers["rare_tier"] in SPEC.tier_names[:-1] and tiers["support"] > 0
    assert report["files"]["openvino_model.int8.bin"]["bytes"] > 0


def test_static_int8_graph_runs_its_matmuls_in_int8(export):
    """The IR holds quantise/dequantise pairs NNCF placed (FakeQuantize), and the compiled
    model on this CPU keeps them: the file is not an fp32 graph under an int8 name."""
    import openvino as ov

    model = ov.Core().read_model(str(export / "openvino_model.int8.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) >= 8


@pytest.mark.parametrize("flags", ["avx2 avx512_vnni", "avx2 avx512_bf16 avx512_vnni"])
def test_a_cpu_with_int8_units_scores_with_static_int8(tmp_path, export, monkeypatch, flags):
    """With bf16 flags too, the precision between the int8 MatMuls is timed at start-up
    (bf16 won on one CPU with avx512_bf16 and lost on another) and the note says so."""
    monkeypatch.setenv("DISTILL_CPU_FLAGS", flags)
    cpu_features.cache_clear()
    try:
        corpus = write_jsonl(tmp_path / "c.jsonl", example_articles()[:8])
        summary = score_corpus(ScoreSettings(inputs=[corpus], model=[export], output=tmp_path / "o.jsonl",
                                             workers=0, threads=1, progress=False))
    finally:
        cpu_features.cache_clear()
    assert summary.backend == "openvino-cpu-int8"
    [note] = [note for note in summary.notes if note.startswith("backend openvino-cpu-int8 chosen for this CPU")]
    assert "start-up probe max" in note
    timed = re.search(r"; (bf16|f32) between the int8 MatMuls \(a 8x256 batch took (\d+) ms in bf16, (\d+) ms in f32\)",
                      note)
    if "avx512_bf16" not in flags:
        assert timed is None and "between the int8 MatMuls" not in note
    else:
        assert timed is not None, note
        faster = "bf16" if int(timed.group(2)) <= int(timed.group(3)) else "f32"
        assert timed.group(1) == faster or timed.group(2) == timed.group(3)


def broken_int8(export: Path, folder: Path) -> Path:
    """A copy of the export whose model.int8.onnx loads but answers wrongly (head bias off by 2 std)."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(export, folder)
    proto = onnx.load(str(export / "model.onnx"))
    bias = [init for init in proto.graph.initializer if init.name.endswith("classifier.bias")]
    assert len(bias) == 1, "the tiny BERT's head is named classifier"
    bias[0].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias[0]) + 2.0, bias[0].name))
    onnx.save(proto, str(folder / "model.int8.onnx"))
    return folder


@pytest.mark.parametrize("with_probe_file", [True, False])
def test_a_path_that_fails_the_probe_falls_back_and_says_so(tmp_path, export, with_probe_file):
    folder = broken_int8(export, tmp_path / "export")
    if not with_probe_file:  # then the reference is computed live, from the fp32 path
        (folder / PROBE_FILE).unlink()
    chosen = open_best_backend(folder, student_info(), "onnx", "cpu", "auto", threads=1)
    assert chosen.name == "onnx-cpu-fp32"
    assert "onnx-cpu-int8 failed its start-up probe" in chosen.note and "fell back" in chosen.note
    assert ("vs torch-fp32" if with_probe_file else "vs onnx-cpu-fp32") in chosen.note


def test_a_run_reports_the_choice_and_its_probe(tmp_path, export):
    corpus = write_jsonl(tmp_path / "c.jsonl", example_articles()[:8])
    summary = score_corpus(ScoreSettings(inputs=[corpus], model=[export], output=tmp_path / "o.jsonl",
                                         workers=0, threads=1, progress=False))
    assert summary.backend == "onnx-cpu-int8"  # DISTILL_CPU_FLAGS=avx2 (conftest): no bf16 here
    assert any(note.startswith("backend onnx-cpu-int8 chosen for this CPU") and "start-up probe" in note
               for note in summary.notes)


def test_scoring_an_export_needs_neither_torch_nor_transformers(tmp_path, export):
    """The `[score]` install: the runner never imports torch, transformers or scikit-learn."""
    onnx_only = tmp_path / "onnx-only"
    shutil.copytree(export, onnx_only, ignore=shutil.ignore_patterns("*.safetensors*"))
    out = tmp_path / "scored.jsonl"
    blocked = "import sys\nfor m in ('torch', 'transformers', 'peft', 'accelerate', 'sklearn'): sys.modules[m] = None\n"
    command = [sys.executable, "-c", blocked + "from distill.serve.cli import main; main()", str(EXAMPLES),
               "-m", str(onnx_only), "-o", str(out), "--no-progress", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 36 and sum(r["scores"] is not None for r in records) == 33
    assert "onnx-cpu-int8" in result.stderr


@pytest.mark.parametrize("fixture", ["minilm_dir", "qwen_tokenizer_dir"])
def test_the_torch_free_tokenizer_gives_the_ids_training_saw(fixture, request):
    from transformers import AutoTokenizer

    from distill.student.encode import encode_texts
    from distill.student.fast_tokenizer import load_fast_tokenizer
    from distill.student.load import ensure_pad_token

    folder = request.getfixturevalue(fixture)
    texts = [f"{a.get('title') or ''}\n\n{a['content']}" for a in example_articles()]
    fast, reference = load_fast_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    ensure_pad_token(reference)
    assert fast.pad_token_id == reference.pad_token_id
    for max_tokens in (32, 256):
        assert encode_texts(fast, texts, max_tokens, 0.8) == encode_texts(reference, texts, max_tokens, 0.8)
    assert np.mean([len(ids) for ids in fast(texts)["input_ids"]]) > 50  # real articles, not empty strings


def test_openvino_pads_batches_to_few_shapes_without_changing_outputs(export):
    """OpenVINO keeps kernels per input shape: widths go to a multiple of 32 and rows to a
    power of two or the budget's rows, so a long run sees few shapes; the padding is masked or dropped."""
    pytest.importorskip("openvino")
    choice = backends.BackendChoice("openvino", "cpu", "fp32")
    model = backends.open_model(export, student_info(), choice, threads=1)
    reference = backends.open_model(export, student_info(), backends.BackendChoice("onnx", "cpu", "fp32"), 1)
    rng = np.random.default_rng(0)
    sequences = [[101] + rng.integers(1000, 5000, size=n).tolist() + [102] for n in (35, 20, 7)]
    ids, mask = model._bucketed(sequences)
    assert ids.shape == (4, 64) and mask[:3].sum() == sum(map(len, sequences))
    np.testing.assert_allclose(model.predict(sequences), reference.predict(sequences), atol=1e-4)
    assert model._bucketed([[101] * 250])[0].shape == (1, 256)  # never past the student's max tokens
    assert model.limits.width_step == model.WIDTH_STEP  # the batcher plans in these shapes
    assert model._bucketed([[101] * 200] * 9)[0].shape == (9, 224)  # a budget-full batch: no extra rows


def test_openvino_streams_take_calls_from_several_threads_at_once(export):
    """--streams 2 (distill-serve): two infer requests on one compiled model; concurrent
    predict calls each get their own and give what one call at a time gives."""
    from concurrent.futures import ThreadPoolExecutor

    model = backends.open_model(export, student_info(), backends.BackendChoice("openvino", "cpu", "int8"), 2, streams=2)
    assert model.limits.streams == 2 and model.requests.qsize() == 2
    rng = np.random.default_rng(1)
    batches = [[[101] + rng.integers(1000, 5000, size=n).tolist() + [102] for n in (30 + k, 12, 5)] for k in range(8)]
    one_at_a_time = [model.predict(batch) for batch in batches]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(model.predict, batches))
    for alone, concurrent in zip(one_at_a_time, together, strict=True):
        np.testing.assert_allclose(concurrent, alone, atol=1e-5)
    assert model.requests.qsize() == 2  # every request went back
    assert backends.open_model(export, student_info(), backends.BackendChoice("onnx", "cpu", "int8"), 1,
                               streams=2).limits.streams == 1  # ONNX Runtime runs one call at a time


@pytest.mark.parametrize("flags", ["avx2 avx512_bf16", "avx2 avx512_bf16 amx_bf16"])
def test_bf16_without_amx_is_timed_against_int8_and_the_faster_kept(tmp_path, export, monkeypatch, flags):
    """bf16 flags without AMX promise nothing (bf16 was fast on an AMD EPYC, slower than fp32 on a
    Xeon with AMX hidden): OpenVINO bf16 races ONNX Runtime int8 on one full batch. With AMX, no race."""
    monkeypatch.setenv("DISTILL_CPU_FLAGS", flags)
    cpu_features.cache_clear()
    try:
        chosen = open_best_backend(export, student_info(), "auto", "cpu", "auto", threads=1)
    finally:
        cpu_features.cache_clear()
    timed = re.search(r"timed against each other on a full batch \(openvino-cpu-bf16 (\d+) ms, "
                      r"onnx-cpu-int8 (\d+) ms\)", chosen.note)
    if "amx_bf16" in flags:
        assert chosen.name == "openvino-cpu-bf16" and timed is None, chosen.note
        return
    assert timed is not None, chosen.note
    bf16_ms, int8_ms = int(timed.group(1)), int(timed.group(2))
    assert chosen.name in ("openvino-cpu-bf16", "onnx-cpu-int8")
    assert chosen.note.startswith(f"backend {chosen.name} chosen for this CPU")
    if bf16_ms != int8_ms:  # (equal once rounded: either may have been faster)
        assert chosen.name == ("onnx-cpu-int8" if int8_ms < bf16_ms else "openvino-cpu-bf16")
    probe = read_probe(export)
    assert compare(chosen.predict(probe.sequences), probe, "int8").passed  # whichever won still agrees with fp32
