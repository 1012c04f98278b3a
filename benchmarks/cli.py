"""`distill-bench`: benchmark harnesses that put every claim beside its baseline.

Each subcommand prints a table and writes <output-dir>/<name>[-<tag>].json
(machine, date, commit, command, settings, rows) and a markdown table beside
it. The group only dispatches; the work lives in one module per subcommand,
and torch is imported only once a subcommand runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from distill.benchmarks.active import ActiveSettings
from distill.benchmarks.common import DEFAULT_OUTPUT_DIR, BenchResult, report, write_result
from distill.benchmarks.corpus import CorpusSettings
from distill.benchmarks.gpu_shapes import GpuShapesSettings
from distill.benchmarks.quality import QualitySettings
from distill.benchmarks.serve import ServeBenchSettings
from distill.cli import run_main
from distill.settings import options_from


def output_options(func: Any) -> Any:
    func = click.option("--tag", default="", show_default=True,
                        help="suffix of the results files (<name>-<tag>.json), e.g. the machine")(func)
    return click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=DEFAULT_OUTPUT_DIR, show_default=True,
                        help="folder for the results JSON and markdown")(func)


def result_name(name: str, tag: str) -> str:
    return f"{name}-{tag}" if tag else name


def finish(result: BenchResult, output_dir: Path, tag: str) -> None:
    result.name = result_name(result.name, tag)
    report(result, output_dir)


@click.group()
def command() -> None:
    """Benchmarks: active, corpus, throughput, gpu-shapes, quality, serve.

    Every subcommand prints a table and writes JSON + markdown (machine, date,
    commit and command included) under --output-dir. See benchmarks/README.md.
    """


@command.command("active")
@options_from(ActiveSettings)
@output_options
def active_command(output_dir: Path, tag: str, **values: Any) -> None:
    """Label-selection strategies against random on real labels (a labelled pool stands
    in for the oracle): per strategy and round, MAE, tier accuracy and rare-tier
    recall / F1 of fast students on a fixed test split, over several seeds, and a plot.
    """
    from distill.benchmarks.active import run_active

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = result_name("active", tag)
    result = run_active(ActiveSettings(**values), Path(output_dir) / f"{name}.png")
    finish(result, output_dir, tag)


@command.command("corpus")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="file to write (.jsonl, .jsonl.gz or .parquet, which needs pyarrow); replaced if it exists")
@options_from(CorpusSettings)
@output_options
def corpus_command(output: Path, output_dir: Path, tag: str, **values: Any) -> None:
    """Write an N-article JSONL corpus with a realistic length mix for scale runs.

    With --source, real articles are sampled with replacement under new ids and
    lightly perturbed; without it, text is generated. Same seed, same file.
    """
    from distill.benchmarks.corpus import write_corpus

    settings = CorpusSettings(**values)
    stats = write_corpus(settings, output)
    kind = f"sampled from {settings.source}" if settings.source else "generated"
    finish(BenchResult(
        name="corpus", title=f"corpus {output} ({kind})", columns=list(stats.summary_rows()[0]),
        rows=stats.summary_rows(), settings={"output": str(output), **settings.to_json()},
    ), output_dir, tag)


@command.command("gpu-shapes")
@options_from(GpuShapesSettings)
@output_options
def gpu_shapes_command(output_dir: Path, tag: str, **values: Any) -> None:
    """Random-weight Qwen2.5 0.5B/1.5B/7B: scoring ms/article against a plain
    transformers loop, LoRA training tokens/s and peak memory, and what fits
    under a 16 GiB cap. Needs CUDA; without it, says so and exits 0.
    """
    from distill.benchmarks.gpu_shapes import run_gpu_shapes

    result = run_gpu_shapes(GpuShapesSettings(**values), name=result_name("gpu-shapes", tag),
                            after_size=lambda partial: write_result(partial, output_dir))
    if result is None:
        click.echo(_no_cuda_message())
        return
    finish(result, output_dir, tag="")


def _no_cuda_message() -> str:
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (
        f"gpu-shapes needs a CUDA GPU, and torch {torch.__version__} ({build}) sees none; nothing "
        "was measured. Run it on a GPU machine (benchmarks/gpu_check.sh), or check its logic on "
        "this CPU with: distill-bench gpu-shapes --tiny --device cpu"
    )


@command.command("quality")
@options_from(QualitySettings)
@output_options
def quality_command(output_dir: Path, tag: str, **values: Any) -> None:
    """Student against the oracle on held-out labels, beside a mean predictor and
    TF-IDF + ridge trained on the same train split: MAE per dimension,
    overall-score MAE and tier metrics.
    """
    from distill.benchmarks.quality import run_quality

    settings = QualitySettings(**values)
    finish(run_quality(settings), output_dir, tag)


@command.command("serve")
@options_from(ServeBenchSettings)
@output_options
def serve_command(output_dir: Path, tag: str, **values: Any) -> None:
    """distill-serve under load: N concurrent clients (httpx), one real article per
    request; articles/s, p50/p95/p99 latency and mean batch size, with batching on
    and off (--max-batch 1), beside distill-score offline on the same articles.
    """
    from distill.benchmarks.serve import run_serve_bench

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    finish(run_serve_bench(ServeBenchSettings(**values)), output_dir, tag)


@command.command("throughput")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="real labelled article JSONL: the corpus to score (and the scaler / int8 gate)")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("bench-work"),
              show_default=True, help="folder for the benchmark artifact (reused) and scored outputs")
@click.option("--limit", type=int, default=0, show_default=True, help="score only the first N articles (0: all)")
@click.option("--threads", type=int, default=os.cpu_count() or 1, show_default=True,
              help="CPU threads for every variant")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="run every variant once per round, round after round; each row is its median round "
                   "(shared VMs drift within minutes)")
@output_options
def throughput_command(data: Path, work: Path, limit: int, threads: int, rounds: int, output_dir: Path,
                       tag: str) -> None:
    """distill-score's backends against a plain transformers loop (fp32, batch 8,
    input order, padding to the longest) on the same articles, model and machine.
    """
    from distill.benchmarks.throughput import run

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    finish(throughput_result(run(data, work, limit, threads, rounds)), output_dir, tag)


def throughput_result(raw: dict[str, Any]) -> BenchResult:
    """benchmarks/throughput.py's report as a BenchResult (its figures untouched)."""
    rows = [{
        "variant": r["name"], "articles": r["articles"], "ms/article": r["ms_per_article"],
        "articles/s": r["articles_per_s"], "x baseline": r["speedup_vs_baseline"],
        "floor ms": r.get("floor_ms"), "x floor": r.get("x_floor"),
        "padding": f"{r['padding_share']:.0%}" if "padding_share" in r else None,
        "start-up s": r.get("startup_s"),
        "rounds ms/article": ", ".join(f"{ms:g}" for ms in r.get("rounds_ms_per_article", [])) or None,
        "rounds x baseline": ", ".join(f"{x:g}" for x in r.get("rounds_speedup", [])) or None,
    } for r in raw["results"]]
    notes = [f"parity {name}: max |diff| {p['max_abs']:.2e}, mean {p['mean_abs']:.2e} over "
             f"{p['compared']} articles" for name, p in raw.get("parity", {}).items()]
    if "floor" in raw:
        f = raw["floor"]
        notes.append(f"floor: {f['gflop_per_article']} GFLOP an article ({f['mean_tokens']} tokens); matmul peak "
                     + ", ".join(f"{p} {g} GFLOP/s" for p, g in f["peak_gflops"].items())
                     + f" at the model's shapes; CPU flags: {', '.join(f['cpu_flags']) or 'none of note'}"
                     + _peak_runs(f))
    notes += [f"{r['name']}: {note}" for r in raw["results"] if "auto" in r["name"] for note in r.get("choice", [])]
    notes += [f"skipped {reason}" for reason in raw.get("skipped", [])]
    notes.append(f"threads {raw['machine'].get('threads')}, 1-min load average at start "
                 f"{raw['machine'].get('load_avg_1m')}, at end {raw.get('load_avg_1m_at_end')}; "
                 f"each row is the median of {raw.get('rounds', 1)} interleaved round(s), its x baseline the median of "
                 "each round's ratio to that round's baseline; times exclude start-up (model loading, and the compile "
                 "for the compiled variant)")
    return BenchResult(
        name="throughput", title=f"scoring throughput, {raw['model']}, max {raw['max_tokens']} tokens",
        columns=list(rows[0]), rows=rows, notes=notes,
        settings={k: v for k, v in raw.items() if k not in ("results", "machine")},
    )


def _peak_runs(floor: dict) -> str:
    """Both peak measurements, where the run took two (the floor keeps the higher of each)."""
    runs = floor.get("peak_gflops_measured")
    if not runs:
        return ""
    return ("; the higher of two measurements, before and after the runs: "
            + " / ".join(", ".join(f"{p} {g}" for p, g in run.items()) for run in runs))


main = run_main(command)

if __name__ == "__main__":
    main()
