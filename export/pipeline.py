"""`distill-export` from top to bottom: merge, export, check, quantise, time, publish.

Everything is written into a hidden staging folder beside the target and
renamed into place only after every check passed, so a failed or interrupted
export leaves nothing half-written behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import Calibration, writing
from distill.export import bench, report, tensorrt
from distill.export.encode import Labelled, read_labelled, sample_texts, spread_by_length
from distill.export.merge import Student, load_merged, save_merged
from distill.export.onnx_export import export_onnx
from distill.export.openvino_int8 import OpenVinoSession, quantize_openvino_int8
from distill.export.quantize import convert_fp16, fusion_for, quantize_int8, quantize_int8_weights
from distill.export.settings import ExportSettings
from distill.export.validate import (
    ExportCheckError,
    check_parity,
    gate,
    ort_session,
    run_onnx,
    tier_figures,
    variant_mae,
)
from distill.filter_spec import installed_filter
from distill.model_card import write_card
from distill.student.encode import encode_batch, encode_texts
from distill.student.files import ONNX_FILES, OPENVINO_INT8_FILE
from distill.student.predict import torch_outputs
from distill.student.probe import Probe, write_probe

Echo = Callable[[str], None]
# Batches of 8 mixed-length texts: enough padding to exercise both padding sides.
PARITY_BATCH = 8
# Articles in probe.json: enough to catch a broken path, cheap at every start-up.
PROBE_ARTICLES = 8


def run_export(settings: ExportSettings, echo: Echo = print) -> dict[str, Any]:
    """Build the export folder `settings.output`; returns the report written there."""
    settings.validate()
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    student = load_merged(settings.model_dir, settings.base_model)
    echo(f"loaded {settings.model_dir} ({student.info.weights_format}, {student.info.architecture})")
    data = _validation(settings, student)
    staging = settings.output.parent / f".{settings.output.name}.staging-{os.getpid()}"
    # A read-only folder or a full disk is one line; the staging folder goes, an
    # existing export stays as it was, and the same command reruns the export.
    with writing(settings.output, "write the export", then=" (an earlier export there is kept as it was)",
                 name_target=True):
        staging.mkdir(parents=True)
        try:
            result = _build(settings, student, data, staging, echo)
            report.write(staging, result)
            write_card(staging, source=settings.model_dir, export=result, name=settings.output.name)
            _publish(staging, settings.output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return result


def _build(settings: ExportSettings, student: Student, data: Labelled | None, folder: Path, echo: Echo) -> dict[str, Any]:
    save_merged(student, settings.model_dir, folder)
    echo("merged model saved (safetensors)")
    result = report.start(settings, student)
    if not settings.onnx:
        return report.finish(result, folder)
    example = data.texts[:2] if data and len(data.texts) >= 2 else sample_texts()[:2]
    batch = encode_batch(student.tokenizer, example, student.info.max_tokens, student.info.head_share)
    result["onnx"] = export_onnx(student.model, student.info.architecture == "decoder", batch,
                                 folder / ONNX_FILES["fp32"], settings.opset)
    sessions = {"fp32": ort_session(folder / ONNX_FILES["fp32"], settings.threads)}
    parity_texts = spread_by_length(data.texts, settings.parity_texts) if data else sample_texts()
    result["parity"] = check_parity(student, sessions["fp32"], parity_texts, PARITY_BATCH, settings.parity_tolerance)
    echo(_parity_line(result["parity"]))
    result["probe"] = _write_probe(student, parity_texts, folder)
    sessions.update(_variants(settings, student, folder, result["onnx"]))
    if settings.openvino_int8:
        result["openvino_int8"] = _openvino_int8(settings, student, folder, echo)
        sessions["openvino_int8"] = OpenVinoSession(folder / OPENVINO_INT8_FILE, "int8", settings.threads)
    if data is not None:
        result["mae"] = _mae_gate(settings, student, data, sessions, echo)
    if settings.bench_articles:
        result["speed"] = _speed(settings, student, data, sessions)
        echo("articles/s: " + ", ".join(f"{k} {v}" for k, v in result["speed"]["articles_per_s"].items()))
    result["tensorrt"] = _tensorrt(settings, student, folder, echo)
    return report.finish(result, folder)


def _validation(settings: ExportSettings, student: Student) -> Labelled | None:
    if settings.validation_data is None:
        return None
    data = read_labelled(settings.validation_data, student.info.dimensions, settings.validation_limit)
    if len(data.texts) < 2:
        raise ExportCheckError(
            f"--validation-data {settings.validation_data}: {len(data.texts)} usable records "
            f"({data.rejected} rejected); need labelled records for {student.info.dimensions}"
        )
    return data


def _variants(settings: ExportSettings, student: Student, folder: Path, onnx_info: dict[str, Any]) -> dict[str, Any]:
    made = {}
    external = onnx_info["external_data"]
    if settings.quantize == "int8":
        fusion = fusion_for(student.model.config)
        onnx_info["int8_fused_for"] = fusion.model_type if fusion else None
        quantize_int8(folder / ONNX_FILES["fp32"], folder / ONNX_FILES["int8"], external, fusion)
        made["int8"] = ort_session(folder / ONNX_FILES["int8"], settings.threads)
    if settings.int8_weights:
        onnx_info["int8w_quantised_weights"] = quantize_int8_weights(
            folder / ONNX_FILES["fp32"], folder / ONNX_FILES["int8w"], external)
        made["int8w"] = ort_session(folder / ONNX_FILES["int8w"], settings.threads)
    if settings.fp16:
        convert_fp16(folder / ONNX_FILES["fp32"], folder / ONNX_FILES["fp16"], external)
        made["fp16"] = ort_session(folder / ONNX_FILES["fp16"], settings.threads)
    return made


def _openvino_int8(settings: ExportSettings, student: Student, folder: Path, echo: Echo) -> dict[str, Any]:
    """Static int8 calibrated on --calibration-data (read like --validation-data)."""
    info = student.info
    articles = read_labelled(settings.calibration_data, info.dimensions, settings.calibration_limit)
    echo(f"OpenVINO static int8: measuring activation ranges on {len(articles.texts)} articles "
         f"of {settings.calibration_data}")
    calibration = encode_texts(student.tokenizer, articles.texts, info.max_tokens, info.head_share)
    figures = quantize_openvino_int8(folder / ONNX_FILES["fp32"], folder / OPENVINO_INT8_FILE, calibration)
    return figures | {"calibration_data": str(settings.calibration_data), "rejected_lines": articles.rejected}


def _write_probe(student: Student, texts: list[str], folder: Path) -> dict[str, Any]:
    """probe.json: PyTorch fp32's outputs on a few of the parity texts, which the
    scorer checks its chosen backend against at start-up (distill.student.probe)."""
    info = student.info
    chosen = texts[:: max(1, len(texts) // PROBE_ARTICLES)][:PROBE_ARTICLES]
    sequences = encode_texts(student.tokenizer, chosen, info.max_tokens, info.head_share)
    outputs = [torch_outputs(student.model, encode_batch(student.tokenizer, [text], info.max_tokens, info.head_share))[0]
               for text in chosen]  # one at a time: no padding in the reference
    write_probe(folder, Probe(sequences, np.array(outputs), "torch-fp32"))
    return {"articles": len(sequences), "reference": "torch-fp32"}


def _mae_gate(settings: ExportSettings, student: Student, data: Labelled, sessions: dict[str, Any], echo: Echo) -> dict[str, Any]:
    """MAE against the labels per variant (the gate: within --mae-tolerance of fp32's), and beside
    it, reported but not gated, tier accuracy and rare-tier precision / recall as distill-score tiers."""
    # No tier figures for a filter that is not installed here.
    spec = installed_filter(student.info.filter_name, student.info.filter_version)
    calibration = Calibration.load(settings.model_dir)
    fp32 = variant_mae("fp32", sessions["fp32"], student, data, settings.bench_batch)
    figures: dict[str, Any] = {"articles": len(data.texts), "rejected_lines": data.rejected,
                               "fp32": {"mae": round(fp32.mae, 5), "per_dimension": fp32.per_dimension}}
    if spec is not None:
        figures["fp32"]["tiers"] = tier_figures(spec, calibration, fp32.scores, data.labels)
    echo(f"MAE vs labels ({len(data.texts)} articles): fp32 {fp32.mae:.4f}" + _tier_words(figures["fp32"]))
    for name in sessions:
        if name == "fp32":
            continue
        variant = variant_mae(name, sessions[name], student, data, settings.bench_batch)
        figures[name] = gate(variant, fp32, settings.mae_tolerance)
        if spec is not None:
            figures[name]["tiers"] = tier_figures(spec, calibration, variant.scores, data.labels)
        echo(f"MAE {name} {figures[name]['mae']:.4f} ({figures[name]['mae_increase']:+.4f})" + _tier_words(figures[name]))
        if not figures[name]["accepted"]:
            raise ExportCheckError(
                f"{name} export rejected: MAE {figures[name]['mae']:.4f} vs fp32 {fp32.mae:.4f} "
                f"(+{figures[name]['mae_increase']:.4f} > {settings.mae_tolerance:g}); export not written"
            )
    return figures


def _tier_words(figures: dict[str, Any]) -> str:
    tiers = figures.get("tiers")
    if not tiers or tiers.get("rare_tier") is None:
        return ""
    return (f"; tier accuracy {tiers['accuracy']:.1%}, {tiers['rare_tier']} precision / recall "
            f"{tiers['precision']:.3f} / {tiers['recall']:.3f} of {tiers['support']}")


def _speed(settings: ExportSettings, student: Student, data: Labelled | None, sessions: dict[str, Any]) -> dict[str, Any]:
    pool = data.texts if data else sample_texts()
    texts = [pool[i % len(pool)] for i in range(settings.bench_articles)]
    _fastest_torch_attention(student.model)
    runners = {"pytorch_fp32": lambda batch: torch_outputs(student.model, batch)}
    for name, session in sessions.items():
        label = name if name.startswith("openvino") else f"onnx_{name}"
        runners[label] = lambda batch, session=session: run_onnx(session, batch)
    figures = bench.throughput(student, runners, texts, settings.bench_batch, settings.bench_rounds)
    torch_rate = figures["articles_per_s"]["pytorch_fp32"]
    figures["pytorch_attention"] = student.model.config._attn_implementation
    figures["speedup_vs_pytorch"] = {k: round(v / torch_rate, 2) for k, v in figures["articles_per_s"].items()}
    return figures


def _fastest_torch_attention(model: Any) -> None:
    """Time PyTorch as it would serve (SDPA), not with the eager attention the trace needed."""
    try:
        model.set_attn_implementation("sdpa")
    except (ValueError, ImportError):
        pass  # this architecture has no SDPA path: eager it is


def _tensorrt(settings: ExportSettings, student: Student, folder: Path, echo: Echo) -> dict[str, Any] | None:
    if not settings.tensorrt:
        return None
    if not tensorrt.available():
        echo(tensorrt.NOT_INSTALLED)
        return {"built": False, "reason": tensorrt.NOT_INSTALLED}
    return tensorrt.build_engine(folder / ONNX_FILES["fp32"], folder / "model.plan",
                                 settings.bench_batch, student.info.max_tokens, settings.fp16)


def _parity_line(parity: dict[str, Any]) -> str:
    return (f"parity ONNX fp32 vs PyTorch on {parity['texts']} texts: max abs diff "
            f"right-padded {parity['max_abs_diff_right_padded']:.1e}, "
            f"left-padded {parity['max_abs_diff_left_padded']:.1e}")


def _publish(staging: Path, target: Path) -> None:
    """Rename into place; an old export (with --overwrite) goes only once the new one is ready."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        if old is not None:  # put the old export back rather than leave none
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
