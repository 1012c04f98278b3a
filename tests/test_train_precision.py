"""--precision auto: the device's flags settle it, except bf16 flags without AMX, where a bf16
and an fp32 training step are timed; the settled value is what distill.json, the checkpoints
and a resume keep."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_train_loop import settings_for, synthetic_split  # noqa: E402

from distill.artifact import read_info  # noqa: E402
from distill.cpu_features import cpu_features  # noqa: E402
from distill.train import checkpoint as ckpt  # noqa: E402
from distill.train import loop, precision  # noqa: E402
from distill.train.settings import TrainSettings  # noqa: E402

NO_AMX = "avx2 avx512_bf16"
AMX = "avx2 avx512_bf16 amx_bf16 amx_tile"
NO_BF16 = "avx2"
TIMED = re.compile(r"precision auto: bf16 step (\d+\.\d\d) s, fp32 (\d+\.\d\d) s: training in (bf16|fp32)$")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Force what the CPU reports (DISTILL_CPU_FLAGS) for one test."""
    def force(flags: str) -> None:
        monkeypatch.setenv("DISTILL_CPU_FLAGS", flags)
        cpu_features.cache_clear()

    yield force
    cpu_features.cache_clear()


@pytest.fixture
def stub_timing(monkeypatch):
    """Replace the step timing by fixed seconds per precision; returns the calls it got."""
    def install(bf16_seconds: float, fp32_seconds: float) -> list[tuple[tuple[int, ...], bool]]:
        calls: list[tuple[tuple[int, ...], bool]] = []

        def seconds(model, ids, mask, bf16):
            calls.append((tuple(ids.shape), bf16))
            return bf16_seconds if bf16 else fp32_seconds

        monkeypatch.setattr(precision, "step_seconds", seconds)
        return calls
    return install


def saved_precisions(out) -> tuple[str, str]:
    """The precision distill.json and checkpoint-last's trainer_state.json record."""
    state = json.loads((out / "checkpoint-last" / ckpt.STATE_FILE).read_text())
    return read_info(out).training["precision"], state["settings"]["precision"]


@pytest.mark.parametrize(("flags", "timed", "expected"), [
    (NO_AMX, True, "fp32"),  # the stub makes fp32 the faster
    (AMX, False, "bf16"),
    (NO_BF16, False, "fp32"),
])
def test_auto_is_timed_only_on_bf16_flags_without_amx(flags, timed, expected, tiny_bert_dir, tmp_path,
                                                      cpu_flags, stub_timing):
    cpu_flags(flags)
    calls = stub_timing(bf16_seconds=2.0, fp32_seconds=1.0)
    data = synthetic_split(tmp_path / "data")
    lines: list[str] = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", epochs=1, precision="auto"),
                     echo=lines.append)
    timing_lines = [line for line in lines if line.startswith("precision auto:")]
    if timed:
        # one step each on the longest full batch: 8 rows of the 32-token cut
        assert calls == [((8, 32), True), ((8, 32), False)]
        assert timing_lines == ["precision auto: bf16 step 2.00 s, fp32 1.00 s: training in fp32"]
    else:
        assert calls == [] and timing_lines == []
    assert any(f"cpu in {expected}," in line for line in lines)
    assert saved_precisions(out) == (expected, expected)


def test_real_timing_settles_auto_without_disturbing_the_run(tiny_bert_dir, tmp_path, cpu_flags):
    cpu_flags(NO_AMX)
    data = synthetic_split(tmp_path / "data", n_train=16)
    lines: list[str] = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "auto", epochs=1, precision="auto"),
                     echo=lines.append)
    found = [m for m in map(TIMED.match, lines) if m]
    assert len(found) == 1
    chosen = found[0].group(3)
    bf16, fp32 = float(found[0].group(1)), float(found[0].group(2))
    assert chosen == ("bf16" if bf16 < fp32 else "fp32") or bf16 == fp32  # equal after rounding: either
    assert saved_precisions(out) == (chosen, chosen)
    # the same run asked for the winner outright, untimed, trains the same model
    asked = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "asked", epochs=1, precision=chosen),
                       echo=lambda _: None)
    histories = [json.loads((folder / "history.json").read_text()) for folder in (out, asked)]
    assert histories[0][0]["val_mae"] == pytest.approx(histories[1][0]["val_mae"], abs=1e-7)


def test_a_resume_keeps_the_settled_precision_and_does_not_time_again(tiny_bert_dir, tmp_path, cpu_flags,
                                                                      stub_timing):
    cpu_flags(NO_AMX)
    stub_timing(bf16_seconds=2.0, fp32_seconds=1.0)
    data = synthetic_split(tmp_path / "data")
    loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", epochs=1), echo=lambda _: None)

    calls = stub_timing(bf16_seconds=1.0, fp32_seconds=2.0)  # a second timing would now switch to bf16
    lines: list[str] = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", epochs=2, resume=True),
                     echo=lines.append)
    assert calls == []
    assert any("precision: auto, settled as 'fp32' when the run started; keeping it" in line for line in lines)
    assert any("cpu in fp32," in line for line in lines)
    assert saved_precisions(out) == ("fp32", "fp32")


def test_a_bf16_run_resumed_where_bf16_is_emulated_continues_in_fp32(tiny_bert_dir, tmp_path, cpu_flags):
    """Settled as bf16 (a GPU, or AMX here) and resumed under auto on a CPU without bf16 units:
    emulated bf16 would be many times slower, so the resume trains in fp32 and says so."""
    cpu_flags(AMX)
    data = synthetic_split(tmp_path / "data")
    loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", epochs=1), echo=lambda _: None)
    assert saved_precisions(tmp_path / "m") == ("bf16", "bf16")

    cpu_flags(NO_BF16)
    lines: list[str] = []
    out = loop.train(settings_for(tiny_bert_dir, data, tmp_path / "m", epochs=2, resume=True), echo=lines.append)
    assert any("settled as 'bf16' when the run started, but this machine has no bf16 units" in line
               for line in lines)
    assert any("cpu in fp32," in line for line in lines)
    assert saved_precisions(out) == ("fp32", "fp32")


@pytest.mark.parametrize(("asked", "device", "expected"), [
    ("bf16", "cpu", "bf16"), ("fp32", "cpu", "fp32"), ("auto", "cuda", "bf16"),
])
def test_explicit_precision_and_cuda_are_never_timed(asked, device, expected, tmp_path, cpu_flags, stub_timing):
    cpu_flags(NO_AMX)
    calls = stub_timing(bf16_seconds=2.0, fp32_seconds=1.0)
    settings = TrainSettings(filter="sustainability/v1", data_dir=tmp_path, precision=asked)
    lines: list[str] = []
    settled = precision.settle_precision(settings, None, (None, None), device, lines.append)
    assert settled.precision == expected and calls == [] and lines == []


def test_bf16_is_kept_where_it_times_faster(tmp_path, cpu_flags, stub_timing):
    cpu_flags(NO_AMX)
    stub_timing(bf16_seconds=1.0, fp32_seconds=2.0)
    settings = TrainSettings(filter="sustainability/v1", data_dir=tmp_path)
    lines: list[str] = []
    settled = precision.settle_precision(settings, None, (torch.zeros(1, 1), None), "cpu", lines.append)
    assert settled.precision == "bf16" and settings.precision == "auto"
    assert lines == ["precision auto: bf16 step 1.00 s, fp32 2.00 s: training in bf16"]


@pytest.mark.parametrize("bf16", [True, False])
def test_timing_leaves_the_random_stream_and_the_gradients_as_they_were(bf16, tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).train()
    ids, mask = precision.longest_batch([[101, 7, 8, 9, 102], [101, 5, 102]], 4, 0)
    assert ids.shape == (2, 5) and mask.tolist()[1] == [1, 1, 1, 0, 0]

    torch.manual_seed(7)
    model(input_ids=ids, attention_mask=mask)  # a plain forward pass draws dropout masks ...
    moved = torch.rand(4)
    torch.manual_seed(7)
    untouched = torch.rand(4)
    assert not torch.equal(moved, untouched)  # ... so an unforked timing would shift the stream

    torch.manual_seed(7)
    seconds = precision.step_seconds(model, ids, mask, bf16=bf16)
    assert torch.equal(torch.rand(4), untouched)
    assert seconds > 0
    assert all(p.grad is None for p in model.parameters())


def test_resume_reconciles_a_settled_precision():
    saved = {"precision": "fp32", "seed": 3}
    merged, notes = ckpt.reconcile_settings(saved, {"precision": "auto", "seed": 3})
    assert merged["precision"] == "fp32"
    assert notes == ["precision: auto, settled as 'fp32' when the run started; keeping it"]
    merged, notes = ckpt.reconcile_settings(saved, {"precision": "bf16", "seed": 3})
    assert merged["precision"] == "bf16"  # an explicit flag still wins, and says so
    assert notes == ["precision: checkpoint had 'fp32'; using 'bf16' from the flags"]
    # settled as bf16 on a machine with bf16 units: kept where this one has them, fp32 where it emulates
    assert ckpt.reconcile_settings({"precision": "bf16"}, {"precision": "auto"})[0]["precision"] == "bf16"
    assert ckpt.reconcile_settings({"precision": "bf16"}, {"precision": "auto"}, bf16_units=False)[0] == {
        "precision": "fp32"}
    assert ckpt.reconcile_settings({"precision": "bf16"}, {"precision": "bf16"}, bf16_units=False)[0] == {
        "precision": "bf16"}  # asked for outright: kept
