"""distill-label throughput and retry cost against the fake Gemini server.

Runs the real labelling path (google-genai SDK, journal, limiter, output) on
synthetic articles against tests/fake_gemini.py in this process. Measures
articles/s at a given concurrency with a fixed per-call latency, and oracle
calls per article when a share of calls get a random injected fault.

    python benchmarks/label_fake_server.py --articles 800 --out label_fake_server.json

Needs a source checkout (the fake server lives in tests/). Client and fake
share one Python process, so on a small machine the figure includes the
fake's own CPU cost: it is a floor for the client, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fake_gemini import API_VERSION, FAULTS, FakeGemini  # noqa: E402

from distill.filter_spec import load_filter  # noqa: E402
from distill.label.run import run_labelling  # noqa: E402
from distill.label.settings import LabelSettings  # noqa: E402
from distill.records import JsonlWriter  # noqa: E402


def write_articles(path: Path, n: int) -> None:
    body = "A utility commissioned grid battery storage next to a solar farm, cutting evening gas use. " * 12
    with JsonlWriter(path) as out:
        for i in range(n):
            out.append({"id": f"b{i}", "title": f"Storage project {i}", "content": f"Report {i}. {body}"})


def measure(n: int, concurrency: int, latency_s: float, fault_rate: float, timeout_s: float, seed: int) -> dict:
    spec = load_filter("sustainability/v1")
    with tempfile.TemporaryDirectory() as tmp, FakeGemini(
        latency_s=latency_s, slow_s=timeout_s * 1.5, retry_delay_s=0.2, fault_rate=fault_rate,
        fault_kinds=FAULTS, seed=seed,
    ) as fake:
        source = Path(tmp) / "articles.jsonl"
        write_articles(source, n)
        settings = LabelSettings(
            source=(str(source),), output_dir=Path(tmp) / "out", base_url=fake.url, api_version=API_VERSION,
            concurrency=concurrency, timeout_s=timeout_s, backoff_base_s=0.1, backoff_max_s=1.0,
            progress=False,
        )
        stats, _ = run_labelling(spec, settings)
        outcomes = fake.outcomes()
    return {
        "articles": n,
        "concurrency": concurrency,
        "fake_latency_s": latency_s,
        "fault_rate": fault_rate,
        "labelled": stats.labelled,
        "failed_articles": dict(stats.failed_articles),
        "failed_attempts": dict(stats.call_failures),
        "elapsed_s": round(stats.elapsed_s, 3),
        "articles_per_s": round(stats.labelled / stats.elapsed_s, 1),
        "calls": stats.calls,
        "calls_per_article": round(stats.calls / n, 3),
        "calls_per_labelled_article": round(stats.calls / max(1, stats.labelled), 3),
        "fake_outcomes": dict(outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=800, help="synthetic articles per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--latency", type=float, default=0.05, help="fake server seconds per answer")
    parser.add_argument("--fault-rate", type=float, default=0.10, help="share of calls with a random fault")
    parser.add_argument("--timeout", type=float, default=1.0, help="client timeout; 'slow' faults exceed it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draw")
    parser.add_argument("--out", type=Path, default=Path("label_fake_server.json"), help="JSON results file")
    args = parser.parse_args()
    os.environ.setdefault("GEMINI_API_KEY", "fake-key-for-the-fake-server")

    runs = [
        measure(args.articles, args.concurrency, args.latency, 0.0, args.timeout, args.seed),
        measure(args.articles, args.concurrency, args.latency, args.fault_rate, args.timeout, args.seed),
    ]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"distill-label vs fake Gemini ({args.latency * 1000:.0f} ms per call)")
    for column in ("faults", "concurrency", "articles", "labelled", "articles/s", "calls/article", "failed"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(f"{r['fault_rate']:.0%}", str(r["concurrency"]), str(r["articles"]), str(r["labelled"]),
                      f"{r['articles_per_s']:.1f}", f"{r['calls_per_article']:.3f}",
                      ", ".join(f"{k}: {v}" for k, v in r["failed_articles"].items()) or "0")
    Console(width=110).print(table)
    result = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "runs": runs}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
