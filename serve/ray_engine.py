"""`distill-score --engine ray`: the local engine's job as a Ray Data pipeline.

    read (one task on the driver's node: parse, rejects, first id wins,
          resume skip, prefilter per filter, cut into windows)
      -> tokenise  (actor pool, --workers actors, one encoder per distinct tokenizer)
      -> score     (actor pool, --actors actors with their CPU or GPU share,
                    every model of the run, length-sorted token-budget batches)
      -> driver: postfilter per filter -> JsonlWriter appends, in input order

One dataset row is one window, the same windows the local engine cuts
(jobs.windows), so every model sees the same batches and both engines write
the same numbers. Rows come back in input order (preserve_order) and the
driver appends each window's records with the JsonlWriter: a killed run
leaves whole lines plus at most a torn last one, and the rerun resumes from
the output exactly as the local engine does. Reading stays one sequential
task because first-id-wins and resume are decisions over the whole input in
order; it is the cheap stage (the model is the expensive one), and it runs
on the driver's node so the input and output paths mean the same there.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from distill.columnar import OutputWriter, open_output, publish_outputs
from distill.errors import ConfigError, DistillError, RecordError
from distill.records import Reject, RejectsWriter
from distill.serve.batcher import Timings
from distill.serve.jobs import (
    Entry,
    Plan,
    ReadCounts,
    build_plan,
    group_rows,
    open_backends,
    read_chunks,
    score_window,
    windows,
    write_window,
)
from distill.serve.runner import RunSummary, start_run
from distill.serve.settings import ScoreSettings
from distill.serve.tokenize import StudentEncoder

PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM")


def score_corpus_ray(settings: ScoreSettings, progress: Callable[[int], None] | None = None) -> RunSummary:
    """Score like runner.score_corpus, with tokenising and the models on Ray actors."""
    ray = _import_ray()
    start = time.perf_counter()
    with ExitStack() as locked:  # the output lock, held until the writers are closed
        plan, summary = start_run(settings, locked, progress)
        started_here = _connect(ray, settings)
        try:
            dataset = _pipeline(ray, settings, plan)
            summary.startup = time.perf_counter() - start
            with ExitStack() as stack:
                writers = [stack.enter_context(open_output(job.output)) for job in plan.jobs]
                rejects = stack.enter_context(RejectsWriter(plan.rejects))
                _drain(dataset, plan, writers, rejects, summary, progress, settings.strict)
                summary.rejected = rejects.count
                publish_outputs(writers)
        finally:
            if started_here:
                ray.shutdown()
    summary.seconds = time.perf_counter() - start - summary.startup
    return summary


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra of ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray Data: pip install 'distill[ray]'") from None
    return ray


def _connect(ray: Any, settings: ScoreSettings) -> bool:
    """Join --ray-address, reuse a running Ray, or start a local one; True if started here."""
    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    ray.init(address=settings.ray_address, num_cpus=None if settings.ray_address else settings.ray_cpus,
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": env} if env else None)
    return True


def _pipeline(ray: Any, settings: ScoreSettings, plan: Plan) -> Any:
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # windows come back in input order
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    device = _device(ray, settings)
    gpus = settings.gpus_per_actor if settings.gpus_per_actor is not None else float(device == "cuda")
    tokenisers = max(settings.workers or 0, 1)
    cpus = 1.0 if gpus else _cpus_per_actor(ray, settings, tokenisers)
    done = ray.put([job.done for job in plan.jobs])
    with warnings.catch_warnings():  # newer Ray names these arguments; ray_remote_args still works
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        dataset = ray.data.read_datasource(_window_source(settings, done), ray_remote_args=_read_task_args(ray))
    dataset = dataset.map(_Tokenise, fn_constructor_args=(plan.groups,), num_cpus=1,
                          compute=ActorPoolStrategy(size=tokenisers))
    return dataset.map(_Score, fn_constructor_args=(settings, plan, device), num_cpus=cpus, num_gpus=gpus,
                       compute=ActorPoolStrategy(size=settings.actors))


def _device(ray: Any, settings: ScoreSettings) -> str:
    if settings.device != "auto":
        return settings.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def _cpus_per_actor(ray: Any, settings: ScoreSettings, tokenisers: int) -> float:
    """Each CPU model actor asks for --threads CPUs, or its share of what the tokenisers leave."""
    total = ray.cluster_resources().get("CPU", 0)
    spare = (total - tokenisers) / settings.actors
    if spare <= 0:
        raise ConfigError(f"--engine ray: the cluster has {total:g} CPUs, too few for {tokenisers} tokenizer "
                          f"and {settings.actors} model actors; lower --workers or --actors")
    return min(float(settings.threads), spare)


def _read_task_args(ray: Any) -> dict[str, Any]:
    """Read on the driver's node with no CPU reserved (it would starve the actors), never retried."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "max_retries": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def _window_source(settings: ScoreSettings, done: Any) -> Any:
    """A Ray Data source with one read task that yields one row per window (see module doc)."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    size = sum(Path(p).stat().st_size for p in settings.inputs)

    class WindowSource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return size

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            metadata = BlockMetadata(num_rows=None, size_bytes=size, exec_stats=None,
                                     input_files=tuple(map(str, settings.inputs)))
            return [ReadTask(lambda: _read_windows(settings, done), metadata)]

    return WindowSource()


def _read_windows(settings: ScoreSettings, done_ref: Any) -> Iterator[Any]:
    """One single-row Arrow table per window, then a last row with the final counts."""
    import pyarrow as pa
    import ray

    plan = build_plan(settings)
    for job, done in zip(plan.jobs, ray.get(done_ref), strict=True):
        job.done = done
    rejects: list[Reject] = []
    counts = ReadCounts()
    try:
        for entries in windows(read_chunks(settings, plan, rejects, counts), settings.window):
            yield pa.table(_window_row(plan, entries, rejects, counts))
            rejects.clear()
    except RecordError as exc:  # --strict: hand the line to the driver (Ray cannot rebuild this error)
        rejects.append(Reject(exc.path, exc.line_no, exc.reason, ""))
    yield pa.table(_window_row(plan, [], rejects, counts))


def _window_row(plan: Plan, entries: list[Entry], rejects: list[Reject], counts: ReadCounts) -> dict[str, list]:
    row = {
        "entries": [json.dumps([e.to_json() for e in entries])],
        "rejects": [json.dumps([r.to_json() for r in rejects])],
        # Counts so far, from the reader's copy of the jobs: the driver takes the last row's.
        "counts": [json.dumps({"resumed": counts.resumed, "jobs": [[j.resumed, j.blocked] for j in plan.jobs]})],
    }
    for group in range(len(plan.groups)):
        row[f"texts_{group}"] = [[entries[i].text for i in group_rows(plan, entries, group)]]
    return row


class _Tokenise:
    """Actor: each window's texts -> token ids, per distinct tokenizer, exactly as the local engine."""

    def __init__(self, groups: list):
        self.encoders = [StudentEncoder(g.folder, g.max_tokens, g.head_share) for g in groups]

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        for group, encoder in enumerate(self.encoders):
            texts = list(row.pop(f"texts_{group}"))
            row[f"tokens_{group}"], row[f"lengths_{group}"] = pack(encoder.encode(texts) if texts else [])
        row["tokenise_s"] = time.perf_counter() - started
        return row


class _Score:
    """Actor: every model of the run, each over the window's articles that need it."""

    def __init__(self, settings: ScoreSettings, plan: Plan, device: str):
        self.plan = plan
        self.backends = open_backends(settings, plan, device)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        entries = [Entry.from_json(obj) for obj in json.loads(row["entries"])]
        timings = Timings()
        groups = range(len(self.plan.groups))
        sequences = [unpack(row.pop(f"tokens_{g}"), row.pop(f"lengths_{g}")) for g in groups]
        for m, output in score_window(self.plan, self.backends, entries, sequences, timings).items():
            row[f"outputs_{m}"] = output.tobytes()
        row["timings"] = json.dumps(timings.__dict__)
        row["backend"] = ", ".join(dict.fromkeys(b.name for b in self.backends))
        return row


def pack(sequences: list[list[int]]) -> tuple[bytes, bytes]:
    """Ragged token ids as two flat int32 buffers (ids, lengths): cheap to ship between actors."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int32, count=len(sequences))
    flat = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(lengths.sum()))
    return flat.tobytes(), lengths.tobytes()


def unpack(flat: bytes, lengths: bytes) -> list[list[int]]:
    ids = np.frombuffer(flat, dtype=np.int32)
    ends = np.cumsum(np.frombuffer(lengths, dtype=np.int32))
    return [ids[end - n:end].tolist() for end, n in zip(ends, np.frombuffer(lengths, dtype=np.int32), strict=True)]


def _drain(dataset: Any, plan: Plan, writers: list[OutputWriter], rejects: RejectsWriter,
           summary: RunSummary, progress: Callable[[int], None] | None, strict: bool) -> None:
    """Write each window's rejects and records as it arrives, in input order."""
    counts, handled = {"resumed": 0, "jobs": [[0, 0] for _ in plan.jobs]}, 0
    try:
        for row in dataset.iter_rows():
            for obj in json.loads(row["rejects"]):
                if strict:
                    raise RecordError(obj["file"], obj["line"], obj["reason"])
                rejects.append(Reject(obj["file"], obj["line"], obj["reason"], obj["raw"], obj.get("raw_length")))
            entries = [Entry.from_json(obj) for obj in json.loads(row["entries"])]
            dims = [len(slot.info.dimensions) for slot in plan.models]
            outputs = {m: np.frombuffer(row[f"outputs_{m}"], dtype=np.float32).reshape(-1, d)
                       for m, d in enumerate(dims)}
            write_window(plan, entries, outputs, writers)
            _add_timings(summary, row)
            summary.articles += sum(1 for e in entries if e.models)
            counts, handled = json.loads(row["counts"]), handled + len(entries)
            if progress is not None:
                progress(handled + counts["resumed"] + rejects.count)
    except DistillError:
        raise
    except Exception as exc:  # Ray wraps what its tasks raise: surface our own errors as themselves
        cause = _distill_cause(exc)
        if cause is None:
            raise
        raise cause from None
    summary.resumed = counts["resumed"]
    for job, (resumed, unwritten_blocked) in zip(plan.jobs, counts["jobs"], strict=True):
        job.resumed = resumed
        job.blocked += unwritten_blocked


def _add_timings(summary: RunSummary, row: dict[str, Any]) -> None:
    t = summary.timings
    for name, value in json.loads(row["timings"]).items():
        setattr(t, name, getattr(t, name) + value)
    t.tokenise += row["tokenise_s"]
    summary.backend = summary.backend or row["backend"]


def _distill_cause(exc: BaseException) -> DistillError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DistillError):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None
