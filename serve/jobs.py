"""What one `distill-score` run does, shared by the local and the Ray engine.

A run has one *job* per filter: the filter's prefilter, its postfilter
(scaler, calibration, overall score, tier) and its own output file. Jobs that
use the same model folder share one model, and models whose tokenizer files
and truncation agree share one tokenisation, so each article is read once,
tokenised once per distinct tokenizer and run through each distinct model
once, however many filters are scored:

- `-m M -f a -f b`: one model, two filters (e.g. two versions of one filter
  with the same dimensions): one forward pass, two postfilters.
- `-m A -m B`: two models, each scored under the filter it was trained for;
  `-m A -f a -m B -f b` names them (paired in order).

Reading is the same in both engines: parse, reject bad lines, first id wins,
skip ids each job's output already has, prefilter per job. Work is cut into
the same windows (runs of whole chunks whose articles needing a model reach
`--window`; a chunk is never larger than the window, so a small window takes
effect), so both engines put the same articles into the same length-sorted
batches and write the same numbers.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import StudentInfo, read_info
from distill.columnar import OutputWriter
from distill.filter_spec import FilterSpec, load_filter
from distill.prefilter import PASSED, Prefilter
from distill.records import Article, ReadStats, parse_article, read_records
from distill.serve.batcher import Backend, Timings, predict_window
from distill.serve.postfilter import Item, Postfilter
from distill.serve.resume import load_resume_state
from distill.serve.settings import ScoreSettings
from distill.truncation import article_text

CHUNK = 256  # articles read (and handed to a tokenizer) at a time: amortises the process hop
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "spiece.model", "tokenizer.model")


@dataclass(frozen=True)
class TokenGroup:
    """Models that see identical token ids: same tokenizer files, max tokens and head share."""

    folder: Path  # the first model folder of the group (its tokenizer is loaded)
    max_tokens: int
    head_share: float


@dataclass
class ModelSlot:
    folder: Path
    info: StudentInfo
    group: int  # index into Plan.groups


@dataclass
class Job:
    """One filter's output: what it blocks, how it scores, where it writes."""

    spec: FilterSpec
    model: int  # index into Plan.models
    output: Path
    prefilter: Prefilter
    postfilter: Postfilter
    done: set[str] = field(default_factory=set)  # ids its output already has
    scored: int = 0
    blocked: int = 0
    resumed: int = 0
    tiers: Counter = field(default_factory=Counter)


@dataclass
class Plan:
    models: list[ModelSlot]
    groups: list[TokenGroup]
    jobs: list[Job]
    rejects: Path
    notes: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """One input article on its way through a window (text dropped once tokenised)."""

    id: str
    content_type: str | None
    carried: dict[str, Any]
    reasons: list[str | None]  # per job: "passed", the block reason, or None (not written)
    models: tuple[int, ...]  # models that must score it (a job using them passed it)
    text: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "content_type": self.content_type, "carried": self.carried,
                "reasons": self.reasons, "models": list(self.models)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Entry:
        return cls(obj["id"], obj["content_type"], obj["carried"], obj["reasons"], tuple(obj["models"]))


def build_plan(settings: ScoreSettings) -> Plan:
    """Resolve models, filters and outputs (resume_plan then reads what the outputs hold)."""
    models: list[ModelSlot] = []
    groups: list[TokenGroup] = []
    group_keys: list[tuple] = []
    jobs: list[Job] = []
    notes: list[str] = []
    pairs = settings.model_filter_pairs()
    specs = [_spec_for(folder, name) for folder, name in pairs]
    outputs = settings.output_paths([spec.id for _, spec in specs])
    for (folder, _), (info, spec), output in zip(pairs, specs, outputs, strict=True):
        slot = next((i for i, m in enumerate(models) if m.folder == folder), None)
        if slot is None:
            key = (tokenizer_fingerprint(folder), info.max_tokens, info.head_share)
            if key not in group_keys:
                group_keys.append(key)
                groups.append(TokenGroup(folder, info.max_tokens, info.head_share))
            models.append(ModelSlot(folder, info, group_keys.index(key)))
            slot = len(models) - 1
        if spec.config_hash != info.filter_config_hash:
            notes.append(f"filter {spec.id} changed since the model was trained (config hash differs); "
                         "its current weights, gatekeepers and tiers are used")
        postfilter = Postfilter(spec, info, folder, info.artifact_id)
        jobs.append(Job(spec, slot, output, Prefilter(spec), postfilter))
    return Plan(models, groups, jobs, settings.rejects_path, notes)


def resume_plan(plan: Plan) -> None:
    """Trim each output's torn tail and note the ids it already holds (run under the output lock)."""
    for job in plan.jobs:
        state = load_resume_state(job.output)
        job.done = state.done
        prefix = f"{job.output.name}: " if len(plan.jobs) > 1 else ""
        plan.notes += [prefix + note for note in state.notes(job.postfilter.model_id)]


def _spec_for(folder: Path, filter_name: str | None) -> tuple[StudentInfo, FilterSpec]:
    info = read_info(folder)
    spec = load_filter(filter_name or f"{info.filter_name}/v{info.filter_version}")
    info.check_filter(spec)
    return info, spec


def tokenizer_fingerprint(folder: Path) -> str:
    """A hash of the folder's tokenizer files: equal hashes give equal token ids."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def chunk_size(settings: ScoreSettings) -> int:
    """Articles per chunk: CHUNK, or the window if smaller (a window is whole chunks)."""
    return min(CHUNK, settings.window)


def read_chunks(settings: ScoreSettings, plan: Plan, rejects: Any, stats: ReadCounts) -> Iterator[list[Entry]]:
    """Entries in input order, chunk_size at a time; bad lines go to `rejects` (a list or RejectsWriter)."""
    size = chunk_size(settings)
    chunk: list[Entry] = []
    for article in read_records(settings.inputs, first_id_wins(), rejects, settings.strict, ReadStats()):
        entry = build_entry(article, settings, plan)
        if entry is None:
            stats.resumed += 1
            continue
        chunk.append(entry)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class ReadCounts:
    resumed: int = 0  # articles every job's output already has


def build_entry(article: Article, settings: ScoreSettings, plan: Plan) -> Entry | None:
    """The article's fate per job, or None when every output already has it."""
    done = [article.id in job.done for job in plan.jobs]
    for job, has_it in zip(plan.jobs, done, strict=True):
        job.resumed += has_it
    if all(done):
        return None
    reasons: list[str | None] = []
    for job, has_it in zip(plan.jobs, done, strict=True):
        reason = None if has_it else job.prefilter.check(article)
        if reason not in (None, PASSED) and not settings.write_blocked:
            job.blocked += 1
            reason = None
        reasons.append(reason)
    models = tuple(sorted({job.model for job, r in zip(plan.jobs, reasons, strict=True) if r == PASSED}))
    text = article_text(article.title, article.text) if models else None
    return Entry(article.id, article.extra.get("content_type"), carried(article, settings.carry),
                 reasons, models, text)


def first_id_wins() -> Callable[[dict], Article]:
    seen: set[str] = set()

    def parse(obj: dict) -> Article:
        article = parse_article(obj)
        if article.id in seen:
            raise ValueError(f"duplicate id {article.id!r}: an earlier line has it and is kept")
        seen.add(article.id)
        return article

    return parse


def carried(article: Article, names: tuple[str, ...]) -> dict:
    """The --carry fields an article has (title and content are Article attributes)."""
    fields = {**article.extra, "title": article.title, "content": article.text}
    return {name: fields[name] for name in names if name in fields}


def needs_model(entry: Entry) -> bool:
    return bool(entry.models)


def windows(chunks: Iterator[list[Entry]], window: int) -> Iterator[list[Entry]]:
    """Whole chunks gathered until `window` of their entries need a model (the local engine's cut)."""
    current: list[Entry] = []
    needing = 0
    for chunk in chunks:
        current += chunk
        needing += sum(map(needs_model, chunk))
        if needing >= window:
            yield current
            current, needing = [], 0
    if current:
        yield current


def group_rows(plan: Plan, entries: list[Entry], group: int) -> list[int]:
    """Positions of the entries that models of `group` must score."""
    members = {i for i, m in enumerate(plan.models) if m.group == group}
    return [i for i, e in enumerate(entries) if members.intersection(e.models)]


def model_rows(entries: list[Entry], model: int) -> list[int]:
    return [i for i, e in enumerate(entries) if model in e.models]


def open_backends(settings: ScoreSettings, plan: Plan, device: str | None = None, streams: int = 1) -> list[Backend]:
    """Each distinct model of the run, once, on the best backend the flags allow for
    `device` (default --device), probed at start-up; each backend's `note` says which
    and why; `streams` as distill-serve's --streams. Every engine (local, Ray, the
    server) opens its models here."""
    from distill.serve.backends import open_best_backend

    backends = []
    for slot in plan.models:
        backends.append(open_best_backend(slot.folder, slot.info, settings.backend, device or settings.device,
                                          settings.precision, settings.threads, settings.token_budget,
                                          settings.max_batch, compile_model=settings.compile, streams=streams))
    return backends


def score_window(plan: Plan, backends: list[Backend], entries: list[Entry],
                 group_sequences: list[list[list[int]]], timings: Timings) -> dict[int, np.ndarray]:
    """Each model over the window's entries that need it: outputs[m] in entry order.

    `group_sequences[g]` holds token ids for `group_rows(plan, entries, g)`, in that order.
    """
    outputs = {}
    for m, (slot, backend) in enumerate(zip(plan.models, backends, strict=True)):
        position = {row: k for k, row in enumerate(group_rows(plan, entries, slot.group))}
        sequences = [group_sequences[slot.group][position[row]] for row in model_rows(entries, m)]
        outputs[m] = predict_window(backend, sequences, timings)
    return outputs


def window_records(plan: Plan, entries: list[Entry], outputs: dict[int, np.ndarray]) -> list[list[dict | None]]:
    """Each job's records for a window: `records[j][i]` is entry i's record for job j, or None
    where it writes none; `outputs[m]` has model m's rows in entry order. Counts what each job wrote."""
    records = []
    for j, job in enumerate(plan.jobs):
        rows = {pos: k for k, pos in enumerate(model_rows(entries, job.model))}
        passed = [i for i, e in enumerate(entries) if e.reasons[j] == PASSED]
        items = [_item(entries[i], PASSED) for i in passed]
        scored = iter(job.postfilter.scored_records(items, outputs[job.model][[rows[i] for i in passed]])
                      if passed else [])
        mine: list[dict | None] = []
        for entry in entries:
            reason = entry.reasons[j]
            record = None
            if reason == PASSED:
                record = next(scored)
                job.scored += 1
                job.tiers[record["tier"]] += 1
            elif reason is not None:
                record = job.postfilter.blocked_record(_item(entry, reason))
                job.blocked += 1
            mine.append(record)
        records.append(mine)
    return records


def write_window(plan: Plan, entries: list[Entry], outputs: dict[int, np.ndarray],
                 writers: list[OutputWriter]) -> None:
    """Each job's records for a window (window_records), in input order, to its writer."""
    for records, writer in zip(window_records(plan, entries, outputs), writers, strict=True):
        for record in records:
            if record is not None:
                writer.append(record)


def _item(entry: Entry, reason: str) -> Item:
    return Item(entry.id, reason, entry.content_type, entry.carried)
