"""distill-export on tiny real models: merge, ONNX parity, quantised variants, bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("peft")

from conftest import move_from_init, write_jsonl  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from distill.artifact import StudentInfo, write_info  # noqa: E402
from distill.export import onnx_export  # noqa: E402
from distill.export.cli import main  # noqa: E402
from distill.export.encode import sample_texts  # noqa: E402
from distill.export.validate import VariantMAE, gate  # noqa: E402
from distill.filter_spec import load_filter  # noqa: E402
from distill.student.encode import encode_batch  # noqa: E402
from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train.model import build_student, save_student  # noqa: E402

DIMS = load_filter("sustainability/v1").dimension_names
TEXTS = ["Solar plant opens in Spain. " * 40, "A short note.", "Battery pilot results in Utrecht.", "Wind."]


def _student(base: Path, folder: Path, full: bool = False) -> Path:
    """A saved student whose head and LoRA weights moved away from their init, as training does."""
    torch.manual_seed(1)
    model, tokenizer, arch = build_student(str(base), len(DIMS), lora_rank=4, full_finetune=full)
    move_from_init(model, 0.25)
    info = StudentInfo("t", 1, "hash", DIMS, str(base), arch, "full" if full else "peft-lora",
                       48, 0.8, [5.0] * 8, [2.0] * 8)
    return save_student(model, tokenizer, info, folder)


@pytest.fixture(scope="module")
def bert_lora(tiny_bert_dir, tmp_path_factory) -> Path:
    return _student(tiny_bert_dir, tmp_path_factory.mktemp("bert") / "student")


@pytest.fixture(scope="module")
def validation(tmp_path_factory) -> Path:
    """Training-example records with labels, texts of varied length."""
    rng = np.random.default_rng(0)
    rows = [{"id": str(i), "text": sample_texts()[i % 12] + f" Item {i}.",
             "dimension_scores": [int(v) for v in rng.integers(0, 10, 8)]} for i in range(24)]
    return write_jsonl(tmp_path_factory.mktemp("val") / "val.jsonl", rows + ["{not json"])


def _run(args: list[str], capsys) -> tuple[int, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_lora_bert_exports_validates_and_quantises(bert_lora, validation, tmp_path, capsys):
    out = tmp_path / "exports" / "bert"
    code, text = _run([bert_lora, "-o", out, "--onnx", "--quantize", "int8", "--fp16",
                       "--validation-data", validation, "--bench-articles", "8", "--bench-rounds", "1",
                       "--bench-batch", "4", "--mae-tolerance", "1.0"], capsys)
    assert code == 0, text
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "model.fp16.onnx", "model.safetensors", "config.json",
            "distill.json", "export_report.json", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") for n in names) and _leftovers(out.parent) == []
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["max_abs_diff_right_padded"] <= 1e-4
    assert report["parity"]["max_abs_diff_left_padded"] <= 1e-4
    assert report["merge"]["merge_max_abs_diff"] <= 1e-4
    assert report["mae"]["articles"] == 24 and report["mae"]["rejected_lines"] == 1
    assert report["mae"]["int8"]["fp32_mae"] == report["mae"]["fp32"]["mae"]
    assert set(report["speed"]["articles_per_s"]) == {"pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_fp16"}
    assert report["files"]["model.int8.onnx"]["bytes"] < report["files"]["model.onnx"]["bytes"]
    assert report["onnx"]["int8_fused_for"] == "bert"
    assert json.loads((out / "distill.json").read_text())["weights_format"] == "merged"
    assert list(json.loads((out / "config.json").read_text())["id2label"].values()) == DIMS


def test_exported_onnx_matches_the_adapter_it_came_from(bert_lora, tmp_path, capsys):
    """The merged folder loads as a plain model, and the ONNX graph has the agreed interface."""
    out = tmp_path / "bert"
    assert _run([bert_lora, "-o", out, "--onnx", "--bench-articles", "0"], capsys)[0] == 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("input_ids", "tensor(int64)", ["batch", "sequence"]),
        ("attention_mask", "tensor(int64)", ["batch", "sequence"]),
    ]
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [("scores", "tensor(float)", ["batch", 8])]
    adapter, tokenizer, info = load_student(bert_lora)
    merged, _, merged_info = load_student(out)
    np.testing.assert_allclose(predict_scores(adapter, tokenizer, TEXTS, info),
                               predict_scores(merged, tokenizer, TEXTS, merged_info), atol=1e-5)
    batch = encode_batch(tokenizer, TEXTS, info.max_tokens, info.head_share, "right")
    with torch.no_grad():
        expected = adapter(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(session.run(None, batch)[0], expected, atol=1e-4)


def test_tiny_qwen_matches_pytorch_left_and_right_padded(tiny_qwen_dir, validation, tmp_path, capsys):
    student = _student(tiny_qwen_dir, tmp_path / "qwen")
    out = tmp_path / "qwen-export"
    code, text = _run([student, "-o", out, "--onnx", "--quantize", "int8", "--validation-data", validation,
                       "--mae-tolerance", "1.0", "--bench-articles", "0"], capsys)
    assert code == 0, text
    assert "left-padded" in text
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["reference"] == "pytorch right-padded"
    assert report["onnx"]["decoder_pooling"] == "attention_mask"
    assert report["onnx"]["int8_fused_for"] is None and "int8" in report["mae"]
    model, tokenizer, info = load_student(student)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    right = encode_batch(tokenizer, TEXTS, info.max_tokens, info.head_share, "right")
    left = encode_batch(tokenizer, TEXTS, info.max_tokens, info.head_share, "left")
    assert (left["attention_mask"][:, 0] == 0).any()  # really left-padded
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in right.items()}).logits.numpy()
    for batch in (right, left):
        np.testing.assert_allclose(session.run(None, batch)[0], expected, atol=1e-4)


def test_parity_on_real_articles(tiny_qwen_dir, shared_labelled, tmp_path, capsys):
    """Real labelled articles of varied length drive parity and the MAE figure."""
    student = _student(tiny_qwen_dir, tmp_path / "qwen")
    out = tmp_path / "real"
    code, text = _run([student, "-o", out, "--onnx", "--validation-data", shared_labelled,
                       "--validation-limit", "64", "--parity-texts", "24", "--bench-articles", "0"], capsys)
    assert code == 0, text
    report = json.loads((out / "export_report.json").read_text())
    assert report["parity"]["texts"] == 24 and report["mae"]["articles"] == 64
    assert 0 < report["mae"]["fp32"]["mae"] < 10


def test_large_model_path_uses_one_external_data_file(bert_lora, validation, tmp_path, capsys, monkeypatch):
    """Models over 2 GB keep weights in model.onnx.data; forced here on a tiny model."""
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "ext"
    code, text = _run([bert_lora, "-o", out, "--onnx", "--quantize", "int8", "--fp16", "--validation-data",
                       validation, "--bench-articles", "0", "--mae-tolerance", "1.0"], capsys)
    assert code == 0, text
    report = json.loads((out / "export_report.json").read_text())
    assert report["onnx"]["external_data"] is True
    data_files = sorted(p.name for p in out.iterdir() if p.suffix == ".data")
    assert data_files == ["model.fp16.onnx.data", "model.int8.onnx.data", "model.onnx.data"]
    assert (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size
    assert not [p for p in out.iterdir() if p.is_dir()]


def test_tensorrt_absent_is_a_clear_message(bert_lora, tmp_path, capsys):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; this checks the message without it")
    out = tmp_path / "trt"
    code, text = _run([bert_lora, "-o", out, "--onnx", "--tensorrt", "--bench-articles", "0"], capsys)
    assert code == 0 and "TensorRT is not installed" in text
    assert json.loads((out / "export_report.json").read_text())["tensorrt"]["built"] is False


def test_tier_figures_tier_as_distill_score_does_calibration_included():
    """The export report's tier figures: the folder's calibration (here the shipped student's
    rounding) is applied before tiering, as distill-score applies it."""
    from distill.artifact import Calibration
    from distill.export.validate import tier_figures

    spec = load_filter("sustainability/v1")
    labels = np.array([[6.0] * 8, [6.0] * 8, [1.0] * 8, [1.0] * 8])  # promising, promising, not_relevant x2
    scores = np.array([[6.2] * 8, [4.6] * 8, [1.0] * 8, [5.1] * 8])
    raw = tier_figures(spec, None, scores, labels)  # tiers: promising, monitoring, not_relevant, promising
    assert raw == {"accuracy": 0.5, "rare_tier": "promising", "precision": 0.5, "recall": 0.5, "support": 2}
    rounding = Calibration.load(Path(__file__).resolve().parents[1] / "filters/sustainability/v1/student")
    assert rounding is not None and rounding.method == "rounded"
    rounded = tier_figures(spec, rounding, scores, labels)  # 4.6 -> 5: promising, found
    assert rounded == {"accuracy": 0.75, "rare_tier": "promising", "precision": round(2 / 3, 4), "recall": 1.0,
                       "support": 2}


def test_mae_gate_rejects_a_worse_variant():
    fp32 = VariantMAE("fp32", 0.75, {})
    assert gate(VariantMAE("int8", 0.76, {}), fp32, 0.02)["accepted"]
    rejected = gate(VariantMAE("int8", 1.38, {}), fp32, 0.02)
    assert not rejected["accepted"] and rejected["mae_increase"] == pytest.approx(0.63)


def test_failed_parity_leaves_nothing(bert_lora, tmp_path, capsys):
    out = tmp_path / "strict"
    code, text = _run([bert_lora, "-o", out, "--onnx", "--parity-tolerance", "1e-12"], capsys)
    assert code == 2 and "differs from PyTorch by up to" in text
    assert not out.exists() and _leftovers(tmp_path) == []


# --- bad input: one clean line, exit 2, nothing written ---------------------------------


def _assert_clean_failure(args, out: Path, capsys, message: str) -> None:
    code, text = _run(args, capsys)
    assert code == 2, text
    assert message in text and "Traceback" not in text and len(text.strip().splitlines()) == 1
    assert not out.exists() and _leftovers(out.parent) == []


def test_folder_without_distill_json(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "x"
    _assert_clean_failure([tiny_bert_dir, "-o", out], out, capsys, "no distill.json")


def test_adapter_without_head(tiny_bert_dir, tmp_path, capsys):
    folder = _student(tiny_bert_dir, tmp_path / "nohead")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, str(folder / "adapter_model.safetensors"))
    out = tmp_path / "x"
    _assert_clean_failure([folder, "-o", out, "--onnx"], out, capsys, "holds no trained regression head")


def test_reinitialised_head_is_caught(tiny_bert_dir, tmp_path, capsys):
    folder = _student(tiny_bert_dir, tmp_path / "reinit")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file({k: (torch.zeros_like(v) if "classifier" in k else v) for k, v in weights.items()},
              str(folder / "adapter_model.safetensors"))
    out = tmp_path / "x"
    _assert_clean_failure([folder, "-o", out], out, capsys, "differs from the trained one")


def test_full_model_without_head(tiny_bert_dir, tmp_path, capsys):
    folder = _student(tiny_bert_dir, tmp_path / "full", full=True)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "classifier" not in k}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    out = tmp_path / "x"
    _assert_clean_failure([folder, "-o", out], out, capsys, "regression head")


def test_adapter_base_not_found(bert_lora, tmp_path, capsys):
    folder = tmp_path / "moved"
    folder.mkdir()
    for item in bert_lora.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    info = json.loads((folder / "distill.json").read_text())
    write_info(folder, StudentInfo(**{**info, "base_model": str(tmp_path / "gone" / "base")}))
    out = tmp_path / "x"
    _assert_clean_failure([folder, "-o", out], out, capsys, "cannot be found")
    # --base-model points at where the base lives now
    code, text = _run([folder, "-o", out, "--base-model", info["base_model"]], capsys)
    assert code == 0, text


def test_all_flag_problems_reported_at_once(bert_lora, tmp_path, capsys):
    existing = tmp_path / "taken"
    existing.mkdir()
    code, text = _run([bert_lora, "-o", existing, "--quantize", "int8", "--opset", "13"], capsys)
    assert code == 2
    for fragment in ("already exists", "add --onnx", "--validation-data", "--opset 13"):
        assert fragment in text
    assert list(existing.iterdir()) == []


def test_openvino_int8_flag_problems_come_before_any_work(bert_lora, validation, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ov"
    code, text = _run([bert_lora, "-o", out, "--onnx", "--openvino-int8", "--validation-data", validation], capsys)
    assert code == 2 and "--openvino-int8 measures activation ranges on real articles; pass --calibration-data" in text
    code, text = _run([bert_lora, "-o", out, "--onnx", "--calibration-data", validation], capsys)
    assert code == 2 and "--calibration-data is only read by --openvino-int8" in text
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))
    code, text = _run([bert_lora, "-o", out, "--onnx", "--openvino-int8", "--validation-data", validation,
                       "--calibration-data", validation], capsys)
    assert code == 2 and "--openvino-int8 needs nncf: pip install 'distill[openvino-int8]'" in text
    assert not out.exists()


def test_help_imports_no_torch():
    code = ("import sys; from distill.export.cli import command; import click; "
            "result = click.testing.CliRunner().invoke(command, ['--help']); "
            "assert result.exit_code == 0, result.output; "
            "assert '--quantize' in result.output and 'dynamic, per-channel' in result.output, result.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", "import click.testing; " + code], check=True)
