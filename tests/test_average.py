"""distill-average: the weight-mean of several students, as one student folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import move_from_init  # noqa: E402

from distill.artifact import StudentInfo, read_info, write_info  # noqa: E402
from distill.errors import ModelArtifactError  # noqa: E402
from distill.filter_spec import load_filter  # noqa: E402
from distill.student.load import load_student  # noqa: E402
from distill.student.predict import predict_scores  # noqa: E402
from distill.train.average import average_students  # noqa: E402
from distill.train.average_cli import main as average_main  # noqa: E402
from distill.train.model import build_student, save_student  # noqa: E402

SPEC = load_filter("sustainability/v1")
TEXTS = ["solar battery grid storage opens", "wind farm pilot megawatt carbon capture plant"]


def student(base: Path, folder: Path, seed: int, *, full: bool = True, max_tokens: int = 64) -> Path:
    torch.manual_seed(seed)
    model, tokenizer, arch = build_student(str(base), len(SPEC.dimensions), lora_rank=4, full_finetune=full)
    move_from_init(model, 0.1 * seed)
    info = StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, str(base), arch,
                       "full" if full else "peft-lora", max_tokens, 0.8, [4.0] * 8, [2.0] * 8,
                       metrics={"val_mae": 1.0 + seed}, training={"seed": seed})
    return save_student(model, tokenizer, info, folder)


def weights(folder: Path) -> dict:
    model, _, _ = load_student(folder)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_the_average_holds_the_mean_of_every_weight_and_scores(tiny_bert_dir, tmp_path):
    a, b = student(tiny_bert_dir, tmp_path / "a", 1), student(tiny_bert_dir, tmp_path / "b", 2)
    out = average_students([a, b], tmp_path / "soup", echo=lambda _: None)
    wa, wb, mean = weights(a), weights(b), weights(out)
    floats = [name for name, tensor in mean.items() if tensor.is_floating_point()]
    assert floats and all(torch.allclose(mean[n], (wa[n] + wb[n]) / 2, atol=1e-6) for n in floats)
    assert not torch.allclose(mean[floats[-1]], wa[floats[-1]])  # the two inputs did differ
    info = read_info(out)
    assert info.weights_format == "full" and info.metrics == {}
    assert [(s["seed"], s["val_mae"]) for s in info.training["averaged_from"]] == [(1, 2.0), (2, 3.0)]
    model, tokenizer, info = load_student(out)
    scores = predict_scores(model, tokenizer, TEXTS, info)
    assert scores.shape == (2, len(SPEC.dimensions))


def test_a_lora_student_is_merged_before_it_is_averaged(tiny_bert_dir, tmp_path):
    lora = student(tiny_bert_dir, tmp_path / "lora", 1, full=False)
    full = student(tiny_bert_dir, tmp_path / "full", 2)
    out = average_students([lora, full], tmp_path / "soup", echo=lambda _: None)
    merged_lora, _, info = load_student(lora)
    expected = merged_lora.merge_and_unload().state_dict()
    mean, other = weights(out), weights(full)
    name = next(n for n in mean if "query" in n and n.endswith("weight"))  # a LoRA-adapted layer
    assert torch.allclose(mean[name], (expected[name] + other[name]) / 2, atol=1e-6)


@pytest.mark.parametrize(("change", "field"), [
    (lambda info: dataclasses.replace(info, max_tokens=128), "max_tokens"),
    (lambda info: dataclasses.replace(info, target_mean=[5.0] * 8), "target_mean"),
])
def test_students_that_do_not_line_up_are_refused_naming_the_folder(tiny_bert_dir, tmp_path, change, field):
    a, b = student(tiny_bert_dir, tmp_path / "a", 1), student(tiny_bert_dir, tmp_path / "b", 2)
    write_info(b, change(read_info(b)))
    with pytest.raises(ModelArtifactError, match=f"{b}: {field}"):
        average_students([a, b], tmp_path / "soup", echo=lambda _: None)
    assert not (tmp_path / "soup").exists()


def test_the_command_averages_and_a_lone_folder_is_a_one_line_error(tiny_bert_dir, tmp_path, capsys):
    a, b = student(tiny_bert_dir, tmp_path / "a", 1), student(tiny_bert_dir, tmp_path / "b", 2)
    average_main([str(a), str(b), "-o", str(tmp_path / "soup")])
    assert "Averaged 2 students" in capsys.readouterr().out
    assert (tmp_path / "soup" / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as stopped:
        average_main([str(a), "-o", str(tmp_path / "other")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "at least two model folders" in err and "Traceback" not in err
