"""CPU scoring throughput: distill-score backends against a plain transformers loop.

    distill-bench throughput --data labelled.jsonl --work /tmp/bench

Builds (once, in --work) an all-MiniLM-L6-v2 student with a fresh regression
head and a distill.json (`distill.train.model.build_student`), exports it with
`distill.export` (model.onnx + per-channel int8), then times on the same
real articles:

- baseline: plain transformers, fp32, batch 8 in input order, padding to the
  longest, the tokenizer's own truncation at the student's max tokens;
- distill-score with torch fp32, ONNX Runtime fp32 and int8, OpenVINO fp32,
  bf16 (over the int8-weight export) and static int8 (NNCF, calibrated on
  the data's first 300 articles), torch bf16 and torch bf16 compiled
  (the whole runner: read, prefilter, tokenise, batch, infer, postfilter,
  write; bf16 pays off on CPUs with AMX or AVX-512 BF16);
- distill-score with `auto` flags: what the README's main command runs on
  this machine (its choice and start-up probe are part of the row), timed
  right after the baseline in each round.

Each row's speed-up is the median over rounds of that round's baseline time
over the row's, so drift between rounds cancels.

Times exclude model loading and, for the compiled variant, the compile
(both are reported as start-up seconds). `run` returns the machine, the
figures and the score parity between backends; `distill-bench throughput`
turns them into its table and results files. The head is random, so
this measures speed and agreement, not quality. Each row also gives its
precision's compute floor on this machine (benchmarks/floor.py: the matmul
peak at the model's shapes) and how many times the floor it took.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.common import describe_machine
from distill.benchmarks.floor import higher_peaks, measure_floor
from distill.export.openvino_int8 import INSTALL_HINT, missing_packages
from distill.records import iter_json_lines
from distill.student.files import OPENVINO_INT8_FILE
from distill.truncation import article_text

FILTER = "sustainability/v1"
# (backend, precision, torch.compile); ("auto", "auto") is the default path, timed right
# after the baseline in every round, so the ratio the README quotes compares runs seconds apart.
VARIANTS = (("auto", "auto", False), ("torch", "fp32", False), ("onnx", "fp32", False), ("onnx", "int8", False),
            ("openvino", "fp32", False), ("openvino", "bf16", False), ("openvino", "int8", False),
            ("torch", "bf16", False), ("torch", "bf16", True))


def build_minilm_artifact(work: Path, data: Path, seed: int = 0) -> tuple[Path, Path]:
    """(student folder, export folder) for MiniLM + a fresh head; reused when present."""
    import torch

    from distill.artifact import StudentInfo, TargetScaler
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings
    from distill.filter_spec import load_filter
    from distill.local_models import minilm_dir
    from distill.student.load import portable_base_name
    from distill.train.model import build_student, save_student

    student, export = work / "minilm-student", work / "minilm-export"
    spec = load_filter(FILTER)
    if not (student / "distill.json").is_file():
        torch.manual_seed(seed)
        model, tokenizer, arch = build_student(str(minilm_dir()), len(spec.dimensions), full_finetune=True)
        scaler = TargetScaler.fit(_label_matrix(data, spec.dimension_names))
        info = StudentInfo(
            spec.name, spec.version, spec.config_hash, spec.dimension_names,
            portable_base_name(str(minilm_dir())), arch, "full", spec.truncation.student_tokens,
            spec.truncation.head_share, scaler.mean.tolist(), scaler.std.tolist(),
            training={"note": "fresh random regression head (benchmark artifact, not trained)", "seed": seed},
        )
        save_student(model, tokenizer, info, student)
    static_int8 = not missing_packages()
    if not (export / "model.int8w.onnx").is_file() or (static_int8 and not (export / OPENVINO_INT8_FILE).is_file()):
        run_export(ExportSettings(model_dir=student, output=export, onnx=True, quantize="int8", int8_weights=True,
                                  openvino_int8=static_int8, calibration_data=data if static_int8 else None,
                                  validation_data=data, validation_limit=200, bench_articles=0,
                                  overwrite=True), echo=lambda _: None)
    return student, export


def _label_matrix(path: Path, dimensions: list[str]) -> np.ndarray:
    rows = [[obj["scores"][d] for d in dimensions] for _, obj in iter_json_lines(path)
            if isinstance(obj, dict) and isinstance(obj.get("scores"), dict)]
    return np.array(rows, dtype=np.float64)


def write_corpus(data: Path, target: Path, limit: int) -> int:
    """The first `limit` lines of `data` (0: all) as the corpus to score."""
    count = 0
    with open(data, encoding="utf-8") as source, open(target, "w", encoding="utf-8") as out:
        for line in source:
            if limit and count == limit:
                break
            out.write(line)
            count += 1
    return count


def time_baseline(model_dir: Path, corpus: Path, max_tokens: int, threads: int) -> dict[str, Any]:
    """Plain transformers: fp32, batch 8, input order, padding to the longest."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    texts = [article_text(obj.get("title") or "", obj.get("content") or obj.get("text") or "")
             for _, obj in iter_json_lines(corpus) if isinstance(obj, dict)]
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), 8):
            batch = tokenizer(texts[i:i + 8], truncation=True, max_length=max_tokens,
                              padding="longest", return_tensors="pt")
            model(**batch).logits.numpy()
    return _figures("transformers baseline (fp32, batch 8)", len(texts), time.perf_counter() - start)


def time_runner(model_dir: Path, corpus: Path, output: Path, backend: str, precision: str,
                threads: int, compile_model: bool = False) -> dict[str, Any]:
    """The whole distill-score pipeline on the corpus, fresh output."""
    from distill.serve.runner import score_corpus
    from distill.serve.settings import ScoreSettings

    output.unlink(missing_ok=True)
    settings = ScoreSettings(inputs=[corpus], model=model_dir, output=output, backend=backend,
                             device="cpu", precision=precision, threads=threads, progress=False,
                             compile=compile_model)
    summary = score_corpus(settings)
    t = summary.timings
    name = f"distill-score {summary.backend}" + (" (auto: the main command's path)" if backend == "auto" else "")
    result = _figures(name, summary.scored, summary.seconds)
    result.update(blocked=summary.blocked, startup_s=round(summary.startup, 2),
                  split_s={k: round(getattr(t, k), 2) for k in ("read", "tokenise", "wait", "infer", "write")},
                  padding_share=round(t.padding_share, 4), batches=t.batches, output=str(output),
                  choice=[note for note in summary.notes if note.startswith("backend ")])
    return result


def _figures(name: str, articles: int, seconds: float) -> dict[str, Any]:
    return {"name": name, "articles": articles, "seconds": round(seconds, 2),
            "articles_per_s": round(articles / seconds, 1), "ms_per_article": round(1000 * seconds / articles, 2)}


def score_parity(a: Path, b: Path) -> dict[str, Any]:
    """Max and mean absolute score difference between two scored outputs, by id."""
    def load(path: Path) -> dict[str, np.ndarray]:
        return {obj["id"]: np.array(list(obj["scores"].values())) for _, obj in iter_json_lines(path)
                if isinstance(obj, dict) and obj.get("scores")}

    left, right = load(a), load(b)
    diffs = np.stack([np.abs(left[k] - right[k]) for k in left if k in right])
    return {"compared": len(diffs), "max_abs": float(diffs.max()), "mean_abs": float(diffs.mean())}


def run(data: Path, work: Path, limit: int, threads: int, rounds: int = 1) -> dict[str, Any]:
    """The figures `distill-bench throughput` reports; the machine is described before the runs start.

    With `rounds` > 1 every variant runs once per round, round after round, and
    each row is its median round: shared VMs drift by tens of percent within
    minutes, and interleaving spreads that drift over all variants alike.
    """
    machine = describe_machine() | {"threads": threads, "load_avg_1m": round(os.getloadavg()[0], 2)}
    work.mkdir(parents=True, exist_ok=True)
    student, export = build_minilm_artifact(work, data)
    corpus = work / "corpus.jsonl"
    write_corpus(data, corpus, limit)
    from distill.artifact import read_info

    max_tokens = read_info(student).max_tokens
    floor = measure_floor(student, mean_tokens(student, corpus), threads)
    variants, skipped = runnable_variants(floor["peak_gflops"], (export / OPENVINO_INT8_FILE).is_file())
    timed: list[list[dict[str, Any]]] = [[] for _ in range(len(variants) + 1)]
    for _ in range(rounds):
        timed[0].append(time_baseline(student, corpus, max_tokens, threads))
        for k, (backend, precision, compile_model) in enumerate(variants, start=1):
            timed[k].append(time_runner(export, corpus, work / _output_name(backend, precision, compile_model),
                                        backend, precision, threads, compile_model))
    floor = higher_peaks(floor, measure_floor(student, floor["mean_tokens"], threads))
    results = [_median_round(runs) for runs in timed]
    precisions = ["fp32"] + [_precision_of(v, r) for v, r in zip(variants, results[1:], strict=True)]
    for r, runs, precision in zip(results, timed, precisions, strict=True):
        r["rounds_speedup"] = round_speedups(timed[0], runs)
        r["speedup_vs_baseline"] = round(float(np.median(r["rounds_speedup"])), 2)
        r["floor_ms"] = floor["floor_ms"][precision]
        r["x_floor"] = round(r["ms_per_article"] / r["floor_ms"], 2)
    reference = work / _output_name("torch", "fp32", False)
    parity = {f"{b}-{p}{'-compiled' if c else ''} vs torch-fp32": score_parity(reference, work / _output_name(b, p, c))
              for b, p, c in variants if p != "fp32" or b != "torch"}
    return {"machine": machine, "model": "all-MiniLM-L6-v2 + fresh 8-dim head", "max_tokens": max_tokens,
            "data": str(data), "rounds": rounds, "results": results, "parity": parity, "floor": floor,
            "skipped": skipped, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}


def round_speedups(baseline: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[float]:
    """Each round's speed-up over that round's baseline: the VM drifts by tens of percent
    within minutes, so a ratio of runs in one round beats a ratio of two medians, which
    may come from different rounds (a slow baseline round once made 3.7x read as 4.1x)."""
    return [round(b["ms_per_article"] / r["ms_per_article"], 2) for b, r in zip(baseline, runs, strict=True)]


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round by ms/article, with every round's ms/article beside it."""
    ordered = sorted(runs, key=lambda r: r["ms_per_article"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["rounds_ms_per_article"] = [r["ms_per_article"] for r in runs]
    return median


def _precision_of(variant: tuple[str, str, bool], result: dict[str, Any]) -> str:
    """The precision a row ran at: the auto row's is in its backend label (e.g. openvino-cpu-bf16)."""
    if variant[1] != "auto":
        return variant[1]
    label = result["name"].split()[1]
    return "bf16" if "bf16" in label else "int8" if "int8" in label else "fp32"


def runnable_variants(peaks: dict[str, float], static_int8: bool = True) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """VARIANTS whose precision this CPU runs natively: a matmul peak under a tenth of
    fp32's means the precision is emulated (bf16 without avx512_bf16/AMX runs at ~1 GFLOP/s,
    hours for a corpus), so that variant is skipped and the reason kept; so is OpenVINO
    static int8 when the export could not be made (`static_int8` False: no nncf)."""
    kept, skipped = [], []
    for variant in VARIANTS:
        precision = variant[1]
        if variant[0] == "openvino" and importlib.util.find_spec("openvino") is None:
            skipped.append(f"{_output_name(*variant)[7:-6]}: openvino is not installed (pip install 'distill[openvino]')")
        elif variant[:2] == ("openvino", "int8") and not static_int8:
            skipped.append(f"{_output_name(*variant)[7:-6]}: no static int8 export ({INSTALL_HINT})")
        elif precision != "auto" and peaks[precision] < peaks["fp32"] / 10:
            skipped.append(f"{_output_name(*variant)[7:-6]}: {precision} matmul peak {peaks[precision]} GFLOP/s "
                           f"against fp32's {peaks['fp32']} (emulated on this CPU)")
        else:
            kept.append(variant)
    return kept, skipped


def _output_name(backend: str, precision: str, compile_model: bool) -> str:
    return f"scored-{backend}-{precision}{'-compiled' if compile_model else ''}.jsonl"


def mean_tokens(model_dir: Path, corpus: Path) -> float:
    """Mean token count of the corpus's articles under the student's own cut."""
    from transformers import AutoTokenizer

    from distill.artifact import read_info
    from distill.student.encode import encode_texts

    info = read_info(model_dir)
    texts = [article_text(obj.get("title") or "", obj.get("content") or obj.get("text") or "")
             for _, obj in iter_json_lines(corpus) if isinstance(obj, dict)]
    ids = encode_texts(AutoTokenizer.from_pretrained(model_dir), texts, info.max_tokens, info.head_share)
    return float(np.mean([len(row) for row in ids]))
