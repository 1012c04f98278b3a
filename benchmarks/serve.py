"""`distill-bench serve`: distill-serve under load, beside batching off and distill-score offline.

One run starts the real `distill-serve` (a subprocess, port 0) twice: with
dynamic batching as configured, then with batching off (`--max-batch 1`).
Against each, a load generator in this process sends `--requests` requests
per concurrency level, one real article per request, from N concurrent
clients (one httpx.AsyncClient each, each sending its next request when the
previous one is answered). Per level: articles/s over the level's wall time,
p50 / p95 / p99 latency of the answered requests and the mean batch size the
server formed (from its /metrics, the difference across the level). Beside
them, `distill-score`'s own pipeline scores the same articles offline with
the same model, backend and threads, in the same run, so the ratios compare
like with like on the same machine at the same time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.benchmarks.common import BenchResult, describe_machine
from distill.errors import ConfigError
from distill.serve.settings import BACKENDS, DEVICES, PRECISIONS
from distill.settings import Settings

# BACKENDS, DEVICES, PRECISIONS: the same choices as distill-score's
DEFAULT_DATA = Path("examples/corpus.jsonl")  # relative to the checkout, like benchmarks/results
LISTENING = re.compile(r"distill-serve listening on (http://\S+)")
TOKEN_ENV = "DISTILL_SERVE_TOKEN"


@dataclass
class ServeBenchSettings(Settings):
    filter: list[str] = field(default_factory=lambda: ["sustainability/v1"], metadata={"aliases": ("-f",), "help": "filter to serve and score (repeat for several; each request asks for all of them)"})
    model: list[Path] = field(default_factory=list, metadata={"aliases": ("-m",), "help": "model folder with distill.json; default: the student shipped with each --filter"})
    data: Path = field(default=DEFAULT_DATA, metadata={"help": "real articles, JSONL with id and content/text (a labelled file works); one per request, cycled if fewer than --requests"})
    requests: int = field(default=400, metadata={"help": "requests per concurrency level and mode (one article each)"})
    concurrency: tuple[int, ...] = field(default=(32, 16), metadata={"separator": ",", "help": "concurrent clients, one level after another, e.g. 32,16"})
    warmup: int = field(default=16, metadata={"help": "requests sent (and not measured) after each server start"})
    backend: str = field(default="auto", metadata={"choices": BACKENDS, "help": "as distill-score: the server's and the offline run's backend"})
    device: str = field(default="auto", metadata={"choices": DEVICES, "help": "as distill-score"})
    precision: str = field(default="auto", metadata={"choices": PRECISIONS, "help": "as distill-score"})
    threads: int = field(default_factory=lambda: os.cpu_count() or 1, metadata={"help": "CPU threads for the model, server and offline alike (default: all cores)"})
    token_budget: int | None = field(default=None, metadata={"help": "padded tokens per batch, batching on and offline; default: the backend's"})
    max_batch: int | None = field(default=None, metadata={"help": "articles per batch at most with batching on, and offline; default: the backend's"})
    max_wait_ms: float | None = field(default=None, metadata={"help": "the server's --max-wait-ms (default: the server's)"})
    streams: int | None = field(default=None, metadata={"help": "the server's --streams, batching on and off (default: the server's)"})
    max_queue_tokens: int | None = field(default=None, metadata={"help": "the server's --max-queue-tokens (default: the server's)"})
    batching_off: bool = field(default=True, metadata={"off_flag": "--skip-batching-off", "help": "also measure the server with batching off (--max-batch 1)"})
    offline: bool = field(default=True, metadata={"off_flag": "--skip-offline", "help": "also measure distill-score offline on the same articles"})
    startup_timeout: float = field(default=300.0, metadata={"help": "seconds to wait for each server to say it is listening"})
    request_timeout: float = field(default=120.0, metadata={"help": "seconds one request may take before it counts as failed"})

    def __post_init__(self) -> None:
        self.filter = list(self.filter)
        self.model = [Path(m) for m in self.model]
        self.data = Path(self.data)
        self.concurrency = tuple(self.concurrency)

    def problems(self) -> list[str]:
        problems = []
        if not self.data.is_file():
            problems.append(f"--data: {self.data}: no such file (give a JSONL of real articles)")
        if not self.filter and not self.model:
            problems.append("--filter: name a filter (or give --model)")
        problems += [f"--model: {m} is not a folder" for m in self.model if not m.is_dir()]
        if not self.concurrency or min(self.concurrency) < 1:
            problems.append(f"--concurrency: give levels of at least 1, e.g. 32,16 (got {self.concurrency})")
        for name in ("requests", "threads"):
            if getattr(self, name) < 1:
                problems.append(f"--{name}: must be at least 1 (got {getattr(self, name)})")
        if self.warmup < 0:
            problems.append(f"--warmup: must be 0 or more (got {self.warmup})")
        for name in ("token_budget", "max_batch", "max_queue_tokens", "streams"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (got {value})")
        if self.max_wait_ms is not None and self.max_wait_ms < 0:
            problems.append(f"--max-wait-ms: must be 0 or more (got {self.max_wait_ms})")
        return problems

    def server_args(self, batching: bool) -> list[str]:
        """distill-serve's flags for one mode (batching off: --max-batch 1)."""
        args = ["--host", "127.0.0.1", "--port", "0", "--no-access-log", "--threads", str(self.threads),
                "--backend", self.backend, "--device", self.device, "--precision", self.precision]
        args += [a for name in self.filter for a in ("--filter", name)]
        args += [a for m in self.model for a in ("--model", str(m))]
        max_batch = self.max_batch if batching else 1
        for flag, value in (("--max-batch", max_batch), ("--token-budget", self.token_budget),
                            ("--max-wait-ms", self.max_wait_ms), ("--max-queue-tokens", self.max_queue_tokens),
                            ("--streams", self.streams)):
            if value is not None:
                args += [flag, str(value)]
        return args


# --- the server ---------------------------------------------------------------------------------

SERVE_CLI = [sys.executable, "-c", "from distill.serve.server.cli import main; main()"]


@dataclass
class Server:
    """A running distill-serve: its URL and the lines it has printed so far."""

    process: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)


@contextmanager
def served(args: list[str], env: dict[str, str] | None = None, timeout: float = 300.0) -> Iterator[Server]:
    """Start `distill-serve ARGS`, wait for its "listening on" line, yield it, then SIGTERM it.

    Raises ConfigError with the server's last output if it exits or stays silent past `timeout`.
    """
    process = subprocess.Popen(SERVE_CLI + args, env={**os.environ, **(env or {})}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    server = Server(process)
    ready = threading.Event()
    threading.Thread(target=_read_lines, args=(server, ready), daemon=True).start()
    try:
        if not ready.wait(timeout) or not server.url:
            tail = "\n".join(server.lines[-20:])
            raise ConfigError(f"distill-serve did not say it was listening within {timeout:.0f} s "
                              f"(exit code {process.poll()}); its last output:\n{tail}")
        yield server
    finally:
        stop(process)


def _read_lines(server: Server, ready: threading.Event) -> None:
    for line in server.process.stdout:  # type: ignore[union-attr]
        server.lines.append(line.rstrip("\n"))
        if not server.url and (match := LISTENING.search(line)):
            server.url = match.group(1).rstrip("/")
            ready.set()
    ready.set()  # exited: let the waiter see it


def stop(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """SIGTERM (the server drains), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def auth_headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


# --- articles and /metrics ------------------------------------------------------------------------

def read_articles(path: Path, count: int) -> list[dict[str, Any]]:
    """Up to `count` distinct articles (id, title, content) from a JSONL file, in file order."""
    articles, seen = [], set()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if len(articles) >= count:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            text = obj.get("content") or obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str) or not obj.get("id") or str(obj["id"]) in seen:
                continue
            seen.add(str(obj["id"]))
            article = {"id": str(obj["id"]), "content": text}
            if isinstance(obj.get("title"), str):
                article["title"] = obj["title"]
            articles.append(article)
    if not articles:
        raise ConfigError(f"--data: {path} has no article with an id and content/text")
    return articles


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_sum(text: str, name: str) -> float:
    """The sum over label sets of one sample name in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            total += float(match.group(3))
    return total


def batch_counts(url: str) -> tuple[float, float]:
    """(articles in batches, batches) so far, from the server's /metrics."""
    import httpx

    text = httpx.get(url + "/metrics", headers=auth_headers(), timeout=30).raise_for_status().text
    return metric_sum(text, "distill_batch_articles_sum"), metric_sum(text, "distill_batch_articles_count")


# --- the load generator ---------------------------------------------------------------------------

@dataclass
class LoadResult:
    seconds: float
    latencies: list[float]  # seconds, answered (200) requests only
    statuses: dict[str, int]  # "200", "503", "error: ReadTimeout", ... -> count


async def _client(url: str, work: Iterator[dict], filters: list[str], timeout: float,
                  latencies: list[float], statuses: dict[str, int]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=auth_headers()) as client:
        for article in work:  # a shared iterator: each client takes the next article
            start = time.perf_counter()
            try:
                response = await client.post("/v1/score", json={"articles": [article], "filters": filters})
                status = str(response.status_code)
                if response.status_code == 200 and "error" in response.json()["results"][0]:
                    status = "200 with article error"
            except httpx.HTTPError as exc:
                status = f"error: {type(exc).__name__}"
            if status == "200":
                latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1


async def _load(url: str, articles: list[dict], requests: int, clients: int, filters: list[str],
                timeout: float) -> LoadResult:
    work = iter(_request_articles(articles, requests))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    start = time.perf_counter()
    await asyncio.gather(*(_client(url, work, filters, timeout, latencies, statuses)
                           for _ in range(min(clients, requests))))
    return LoadResult(time.perf_counter() - start, latencies, statuses)


def _request_articles(articles: list[dict], requests: int) -> Iterator[dict]:
    """`requests` articles: the list in order, cycled (later rounds get new ids) if it is shorter."""
    for n, article in enumerate(itertools.islice(itertools.cycle(articles), requests)):
        rounds = n // len(articles)
        yield article if rounds == 0 else {**article, "id": f"{article['id']}~{rounds}"}


def run_load(url: str, articles: list[dict], requests: int, clients: int, filters: list[str],
             timeout: float) -> LoadResult:
    return asyncio.run(_load(url, articles, requests, clients, filters, timeout))


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (share in 0..1) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(share * len(ordered) - 1e-9)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# --- one mode, offline, the result ----------------------------------------------------------------

def measure_mode(settings: ServeBenchSettings, articles: list[dict], batching: bool) -> tuple[list[dict], list[str]]:
    """Start the server for one mode and run every concurrency level against it."""
    label = "batching on" if batching else "batching off (max batch 1)"
    rows, notes = [], []
    with served(settings.server_args(batching), timeout=settings.startup_timeout) as server:
        if settings.warmup:
            run_load(server.url, articles, settings.warmup, min(settings.warmup, max(settings.concurrency)),
                     settings.filter, settings.request_timeout)
        for clients in settings.concurrency:
            before = batch_counts(server.url)
            load = run_load(server.url, articles, settings.requests, clients, settings.filter,
                            settings.request_timeout)
            after = batch_counts(server.url)
            rows.append(_load_row(label, clients, load, before, after))
        notes += [f"{label}: server said: {line}" for line in server.lines if "warning" in line.lower()][:5]
    return rows, notes


def _load_row(label: str, clients: int, load: LoadResult, before: tuple[float, float],
              after: tuple[float, float]) -> dict[str, Any]:
    answered = len(load.latencies)
    batched, batches = after[0] - before[0], after[1] - before[1]
    ms = {f"p{p} ms": (v * 1000 if (v := percentile(load.latencies, p / 100)) is not None else None)
          for p in (50, 95, 99)}
    return {
        "run": label, "clients": clients, "requests": sum(load.statuses.values()), "answered": answered,
        "failed": sum(load.statuses.values()) - answered, "seconds": load.seconds,
        "articles/s": answered / load.seconds if load.seconds else None, **ms,
        "mean batch": batched / batches if batches else None,
        "statuses": dict(sorted(load.statuses.items())),
    }


def measure_offline(settings: ServeBenchSettings, articles: list[dict]) -> tuple[dict[str, Any], str]:
    """distill-score's own pipeline on the same articles, model, backend and threads."""
    from distill.serve.runner import score_corpus
    from distill.serve.settings import ScoreSettings

    with tempfile.TemporaryDirectory(prefix="distill-bench-serve-") as tmp:
        corpus = Path(tmp) / "articles.jsonl"
        corpus.write_text("".join(json.dumps(a) + "\n" for a in articles), encoding="utf-8")
        summary = score_corpus(ScoreSettings(
            inputs=[corpus], output=Path(tmp) / "scored", model=list(settings.model),
            filter=list(settings.filter), backend=settings.backend, device=settings.device,
            precision=settings.precision, threads=settings.threads, token_budget=settings.token_budget,
            max_batch=settings.max_batch, progress=False,
        ))
    rate = len(articles) / summary.seconds if summary.seconds else None
    row = {"run": "distill-score offline", "clients": None, "requests": len(articles), "answered": len(articles),
           "failed": 0, "seconds": summary.seconds, "articles/s": rate,
           "mean batch": summary.articles / summary.timings.batches if summary.timings.batches else None}
    note = (f"distill-score offline: backend {summary.backend}, {summary.articles} of {len(articles)} articles "
            f"through the model ({summary.blocked} blocked by the prefilter), {summary.timings.batches} batches; "
            f"articles/s counts every article over the pipeline's time (start-up {summary.startup:.1f} s excluded)")
    return row, note


COLUMNS = ["run", "clients", "requests", "failed", "articles/s", "p50 ms", "p95 ms", "p99 ms",
           "mean batch", "x batching off", "% of offline"]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each batching-on row against batching off at the same clients, and every row against offline."""
    off = {r["clients"]: r["articles/s"] for r in rows if r["run"].startswith("batching off")}
    offline = next((r["articles/s"] for r in rows if r["run"] == "distill-score offline"), None)
    for row in rows:
        rate = row.get("articles/s")
        if row["run"] == "batching on" and off.get(row["clients"]) and rate is not None:
            row["x batching off"] = rate / off[row["clients"]]
        if offline and rate is not None and row["clients"] is not None:
            row["% of offline"] = f"{rate / offline:.0%}"


def target_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 17's targets, said against the highest level and its half (where measured)."""
    on = {r["clients"]: r for r in rows if r["run"] == "batching on"}
    if not on:
        return []
    top = max(on)
    notes = []
    row = on[top]
    if "x batching off" in row:
        met = "met" if row["x batching off"] >= 3 else "NOT met"
        notes.append(f"target at {top} clients, >= 3x batching off: {row['x batching off']:.2f}x ({met})")
    if "% of offline" in row:
        share = float(row["% of offline"].rstrip("%")) / 100
        notes.append(f"target at {top} clients, >= 80% of distill-score offline: {row['% of offline']} "
                     f"({'met' if share >= 0.8 else 'NOT met'})")
    half = on.get(top // 2)
    if half is not None and half["p99 ms"] is not None:
        met = "met" if half["p99 ms"] <= 1000 else "NOT met"
        notes.append(f"target at {top // 2} clients, p99 <= 1 s: {half['p99 ms']:.0f} ms ({met})")
    return notes


def cpu_features() -> list[str]:
    """The vector extensions that decide CPU inference speed (AVX2 only: no fast bf16 or int8 paths)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]


def run_serve_bench(settings: ServeBenchSettings) -> BenchResult:
    settings.validate()
    machine = describe_machine() | {"load_avg_1m": round(os.getloadavg()[0], 2), "threads": settings.threads,
                                    "cpu_features": cpu_features()}
    articles = read_articles(settings.data, settings.requests)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for batching in (True, False) if settings.batching_off else (True,):
        mode_rows, mode_notes = measure_mode(settings, articles, batching)
        rows += mode_rows
        notes += mode_notes
    if settings.offline:
        row, note = measure_offline(settings, articles)
        rows.append(row)
        notes.append(note)
    add_ratios(rows)
    notes = target_notes(rows) + notes
    notes.append(f"{len(articles)} distinct articles from {settings.data}, one per request "
                 f"({settings.requests} requests per level, cycled with new ids if fewer); "
                 f"{settings.warmup} warm-up requests after each server start, not measured")
    notes.append(f"threads {settings.threads}; 1-min load average at start {machine['load_avg_1m']}, "
                 f"at end {os.getloadavg()[0]:.2f}; latency is per answered request, client-side, "
                 "nearest-rank percentiles; mean batch from the server's distill_batch_articles histogram")
    models = ", ".join(map(str, settings.model)) or "shipped student"
    return BenchResult(
        name="serve", title=f"distill-serve under load, {', '.join(settings.filter)} ({models})",
        columns=COLUMNS, rows=rows, notes=notes, machine=machine,
        settings={**settings.to_json(), "articles": len(articles)},
    )
