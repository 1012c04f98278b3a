"""Broken model folders, checkpoints and outputs: one clean line through the real CLIs.

One tiny student is trained once; each test corrupts a copy for real (a
truncated safetensors file, random bytes as model.onnx, an edited
distill.json or trainer_state.json, a read-only or full output folder) and
runs distill-evaluate / distill-export / distill-score / distill-train on it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("onnxruntime")

from safetensors.torch import load_file  # noqa: E402
from test_train_loop import settings_for, synthetic_split  # noqa: E402

from distill.errors import ModelArtifactError  # noqa: E402
from distill.evaluate.cli import main as evaluate_main  # noqa: E402
from distill.export.cli import main as export_main  # noqa: E402
from distill.serve.cli import main as score_main  # noqa: E402
from distill.train import loop  # noqa: E402
from distill.train.cli import main as train_main  # noqa: E402


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(model folder after one epoch, with checkpoint-last at step 2; its data folder)."""
    root = tmp_path_factory.mktemp("faults")
    data = synthetic_split(root / "data", n_train=16, n_val=8)
    model = loop.train(settings_for(tiny_bert_dir, data, root / "model", epochs=1, save_steps=1),
                       echo=lambda _: None)
    return model, data


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "export"
    assert run(export_main, [trained[0], "-o", out, "--onnx", "--bench-articles", "0"])[0] == 0
    return out


def run(main, args: list) -> tuple[int, str]:
    """Exit code and everything the command wrote to stdout and stderr."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer), redirect_stderr(buffer):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, buffer.getvalue()


def error_line(main, args: list) -> str:
    """The command must stop with exit 2 and one `error:` line, no traceback."""
    code, text = run(main, args)
    assert code == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def evaluate_args(model: Path, data: Path, tmp_path: Path) -> list:
    return ["--model-checkpoint", model, "--data-dir", data, "--output", tmp_path / "report" / "r.md"]


def score_args(model: Path, data: Path, tmp_path: Path) -> list:
    return [data / "test.jsonl", "--model", model, "-o", tmp_path / "scored.jsonl"]


def stage_args(tool: str, model: Path, data: Path, tmp_path: Path) -> tuple:
    if tool == "evaluate":
        return evaluate_main, evaluate_args(model, data, tmp_path)
    if tool == "export":
        return export_main, [model, "-o", tmp_path / "export"]
    return score_main, score_args(model, data, tmp_path)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- model folders: evaluate, export and score ----------------------------------------


def _drop_a_dimension(info: dict) -> None:
    for key in ("dimensions", "target_mean", "target_std"):
        info[key] = info[key][:7]


def _std(value):
    return lambda info: info["target_std"].__setitem__(2, value)


MODEL_FAULTS = {
    "truncated adapter": (lambda m: truncate(m / "adapter_model.safetensors"),
                          "adapter_model.safetensors: not a readable safetensors file (incomplete metadata"),
    "random bytes as adapter": (lambda m: (m / "adapter_model.safetensors").write_bytes(os.urandom(4096)),
                                "adapter_model.safetensors: not a readable safetensors file"),
    "scaler shorter than dimensions": (
        lambda m: edit_json(m / "distill.json", lambda d: d.update(target_std=d["target_std"][:7])),
        "distill.json: target_std has 7 values for 8 dimensions; restore the file"),
    "NaN std": (lambda m: edit_json(m / "distill.json", _std(float("nan"))),
                "distill.json: target_std for economic_viability is nan; it must be a finite number > 0"),
    "zero std": (lambda m: edit_json(m / "distill.json", _std(0)),
                 "distill.json: target_std for economic_viability is 0; it must be a finite number > 0"),
}


@pytest.mark.parametrize("tool", ["evaluate", "export", "score"])
@pytest.mark.parametrize("fault", list(MODEL_FAULTS))
def test_broken_model_folder_is_one_line(fault, tool, trained, tmp_path):
    corrupt, message = MODEL_FAULTS[fault]
    model = copy(trained[0], tmp_path)
    corrupt(model)
    main, args = stage_args(tool, model, trained[1], tmp_path)
    line = error_line(main, args)
    assert str(model) in line and message in line
    assert not (tmp_path / "export").exists() and not (tmp_path / "scored.jsonl").exists()


@pytest.mark.parametrize("tool", ["evaluate", "export"])
def test_dimensions_that_do_not_fit_the_head(tool, trained, tmp_path):
    """distill.json edited consistently to 7 dimensions: the 8-output head no longer fits."""
    model = copy(trained[0], tmp_path)
    edit_json(model / "distill.json", _drop_a_dimension)
    main, args = stage_args(tool, model, trained[1], tmp_path)
    line = error_line(main, args)
    assert (f"{model / 'adapter_model.safetensors'}: the regression head has 8 outputs but "
            f"{model / 'distill.json'} lists 7 dimensions") in line
    assert "restore distill.json" in line


def test_truncated_base_model(trained, tiny_bert_dir, tmp_path):
    base = copy(tiny_bert_dir, tmp_path, "base")
    truncate(base / "model.safetensors")
    model = copy(trained[0], tmp_path)
    edit_json(model / "distill.json", lambda d: d.update(base_model=str(base)))
    line = error_line(*stage_args("evaluate", model, trained[1], tmp_path))
    assert f"base model '{base}' cannot be loaded" in line and "incomplete metadata" in line
    line = error_line(*stage_args("export", model, trained[1], tmp_path))
    assert f"adapter base model '{base}' cannot be found or loaded" in line and "--base-model" in line
    line = error_line(train_main, train_args(base, trained[1], tmp_path / "new"))
    assert f"base model '{base}' cannot be loaded" in line and "check --model-name" in line


def test_pickled_weights_are_never_loaded(trained, exported, tiny_bert_dir, tmp_path):
    """A pytorch_model.bin beside (or instead of) the safetensors is refused, never unpickled."""
    merged = copy(exported, tmp_path, "merged")
    torch.save(load_file(str(merged / "model.safetensors")), merged / "pytorch_model.bin")
    (merged / "model.safetensors").unlink()
    for tool in ("export", "evaluate"):
        line = error_line(*stage_args(tool, merged, trained[1], tmp_path))
        assert f"{merged}: missing model.safetensors" in line and "pytorch_model.bin is there" in line
    base = copy(tiny_bert_dir, tmp_path, "base")
    torch.save(load_file(str(base / "model.safetensors")), base / "pytorch_model.bin")
    (base / "model.safetensors").unlink()
    model = copy(trained[0], tmp_path)
    edit_json(model / "distill.json", lambda d: d.update(base_model=str(base)))
    line = error_line(*stage_args("export", model, trained[1], tmp_path))
    assert f"adapter base model '{base}'" in line and "model.safetensors" in line


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_random_bytes_as_onnx_model(name, trained, exported, tmp_path):
    folder = copy(exported, tmp_path, "export-copy")
    (folder / name).write_bytes(os.urandom(5000))
    args = score_args(folder, trained[1], tmp_path) + ["--backend", "onnx",
                                                       "--precision", "fp32" if name == "model.onnx" else "int8"]
    line = error_line(score_main, args)
    assert f"{folder / name}: not a usable ONNX model (Protobuf parsing failed.)" in line
    assert "distill-export --onnx" in line


def test_onnx_outputs_that_do_not_fit_the_dimensions(exported):
    """An export whose graph has 8 outputs, opened for a distill.json with 7: caught at load."""
    import dataclasses

    from distill.artifact import read_info
    from distill.serve.backends import BackendChoice, open_backend

    info = read_info(exported)
    seven = dataclasses.replace(info, dimensions=info.dimensions[:7])
    with pytest.raises(ModelArtifactError, match="the model has 8 outputs but .* lists 7 dimensions"):
        open_backend(exported, seven, BackendChoice("onnx", "cpu", "fp32"), threads=1)


def test_corrupt_calibration_and_ensemble_files(trained, tmp_path):
    model = copy(trained[0], tmp_path)
    (model / "calibration.json").write_text('{"dimensions": {"a": {"x": [0')
    line = error_line(*stage_args("score", model, trained[1], tmp_path))
    assert f"{model / 'calibration.json'}: not a calibration file" in line and "--calibrate" in line
    (model / "calibration.json").unlink()
    (model / "ensemble.npz").write_bytes(os.urandom(300))
    line = error_line(*stage_args("score", model, trained[1], tmp_path))
    assert f"{model / 'ensemble.npz'}: not a distill ensemble file" in line and "--ensemble" in line


def test_truncated_merged_export(trained, exported, tmp_path):
    folder = copy(exported, tmp_path, "export-copy")
    (folder / "model.onnx").unlink()  # torch backend: reads model.safetensors
    truncate(folder / "model.safetensors")
    line = error_line(*stage_args("score", folder, trained[1], tmp_path))
    assert f"{folder / 'model.safetensors'}: not a readable safetensors file" in line


# --- training checkpoints: distill-train --resume ---------------------------------------


def train_args(base: Path, data: Path, out: Path, *extra) -> list:
    return ["--filter", "sustainability/v1", "--data-dir", data, "--output-dir", out, "--model-name", base,
            "--epochs", "2", "--batch-size", "8", "--max-length", "32", "--lora-rank", "4", "--seed", "3",
            "--learning-rate", "5e-3", "--num-threads", "1", "--save-steps", "1", *extra]


def _state(change):
    return lambda last: edit_json(last / "trainer_state.json", change)


CHECKPOINT_FAULTS = {
    "truncated weights": (lambda last: truncate(last / "trainable.safetensors"),
                          "trainable.safetensors: not a readable safetensors file"),
    "truncated optimizer": (lambda last: truncate(last / "optimizer.safetensors"),
                            "optimizer.safetensors: not a readable safetensors file"),
    "missing optimizer": (lambda last: (last / "optimizer.safetensors").unlink(),
                          "checkpoint-last is incomplete (no optimizer.safetensors)"),
    "state not JSON": (lambda last: (last / "trainer_state.json").write_text('{"epoch": 1, "glo'),
                       "trainer_state.json is not valid JSON"),
    "state without global_step": (_state(lambda s: s.pop("global_step")), "global_step must be int"),
    "global_step beyond the run": (_state(lambda s: s.update(epoch=5, step_in_epoch=0, global_step=10)),
                                   "beyond this run's 4 steps (2 epochs of 2); pass --epochs 5 or more"),
    "global_step off the data": (_state(lambda s: s.update(global_step=7)),
                                 "does not fit this data's 2 steps per epoch"),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_corrupt_checkpoint_on_resume(fault, trained, tiny_bert_dir, tmp_path):
    corrupt, message = CHECKPOINT_FAULTS[fault]
    model = copy(trained[0], tmp_path)
    corrupt(model / "checkpoint-last")
    before = snapshot(model)
    line = error_line(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert f"--resume: {model / 'checkpoint-last'}" in line and message in line
    assert "start without --resume" in line or "--epochs" in line
    assert snapshot(model) == before


def test_resume_after_a_crash_between_the_checkpoint_renames(trained, tiny_bert_dir, tmp_path):
    """A save interrupted after moving checkpoint-last aside: the rerun puts it back and resumes."""
    model = copy(trained[0], tmp_path)
    (model / "checkpoint-last").rename(model / "checkpoint-last.old")
    (model / "checkpoint-last.partial").mkdir()  # the half-written new one
    code, text = run(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert code == 0, text
    assert "Resuming at epoch 2, step 2" in text
    assert [h["epoch"] for h in json.loads((model / "history.json").read_text())] == [1, 2]
    assert sorted(p.name for p in model.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-best", "checkpoint-last"]


# --- outputs that cannot be written: read-only folders, full disks -----------------------


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` made unwritable for real: chmod, or for root (whom chmod does not stop) chattr +i."""
    folder.chmod(0o555)
    locked = False
    if os.geteuid() == 0:
        locked = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        probe = folder / ".probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            pytest.skip("cannot make a folder read-only here")
        yield folder
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_train_into_read_only_folder_keeps_everything_and_resumes(trained, tiny_bert_dir, tmp_path):
    model = copy(trained[0], tmp_path)
    before = snapshot(model)
    with read_only(model):
        line = error_line(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
        assert line.startswith(f"error: {model}: cannot write into the model folder: ")
        assert "no permission to write there" in line
    assert snapshot(model) == before
    code, text = run(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert code == 0 and "Resuming at epoch 2" in text, text


def test_evaluate_into_read_only_folder(trained, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    with read_only(reports):
        line = error_line(evaluate_main, ["--model-checkpoint", trained[0], "--data-dir", trained[1],
                                          "--output", reports / "r.md"])
        assert line.startswith(f"error: {reports}") and "cannot write the evaluation report" in line
    assert list(reports.iterdir()) == []


def test_export_into_read_only_folder(exported, tmp_path):
    parent = tmp_path / "exports"
    parent.mkdir()
    with read_only(parent):
        line = error_line(export_main, [exported, "-o", parent / "x"])
        assert f"{parent / 'x'}: cannot write the export: " in line and "no permission to write there" in line
    assert list(parent.iterdir()) == []


def test_disk_full_during_a_checkpoint_keeps_the_last_one(trained, tiny_bert_dir, tmp_path, monkeypatch):
    """ENOSPC as safetensors reports it (text, not OSError) at the next save: checkpoint-last
    stays whole at step 2, nothing is left half-written, and the rerun resumes from it."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    model = copy(trained[0], tmp_path)
    before = snapshot(model)
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    line = error_line(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert "cannot save a checkpoint: No space left on device; the disk is full: free space" in line
    assert f"add --resume: {model / 'checkpoint-last'} is intact" in line
    assert snapshot(model) == before
    monkeypatch.undo()
    code, text = run(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert code == 0 and "Resuming at epoch 2, step 2" in text, text
    assert [h["epoch"] for h in json.loads((model / "history.json").read_text())] == [1, 2]


def test_disk_full_during_export_keeps_the_old_export(trained, exported, tmp_path, monkeypatch):
    import onnx

    def full_disk(proto, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    old = copy(exported, tmp_path, "export")
    before = snapshot(old)
    monkeypatch.setattr(onnx, "save_model", full_disk)
    line = error_line(export_main, [trained[0], "-o", old, "--onnx", "--overwrite", "--bench-articles", "0"])
    assert f"{old}: cannot write the export: No space left on device; the disk is full" in line
    assert "an earlier export there is kept as it was" in line
    assert snapshot(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging folder left


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB file system (tmpfs), for root where mount works; else the test is skipped."""
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root to mount a small tmpfs")
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run([mount, "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is really full; remove it to free the space."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    return filler


def test_really_full_disk_train_then_export(trained, exported, tiny_bert_dir, small_disk):
    model = copy(trained[0], small_disk)
    before = snapshot(model)
    filler = fill(small_disk)
    line = error_line(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert "No space left on device; the disk is full" in line and "add --resume" in line
    line = error_line(export_main, [exported, "-o", small_disk / "export"])
    assert f"{small_disk / 'export'}: cannot write the export: No space left on device" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["copy", "filler"]
    filler.unlink()
    assert snapshot(model) == before
    code, text = run(train_main, train_args(tiny_bert_dir, trained[1], model, "--resume"))
    assert code == 0 and "Resuming at epoch 2" in text, text
