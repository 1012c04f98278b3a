"""Read labelled JSONL into validated examples; every bad line becomes a reject.

A label file made for another filter (or another version with renamed
dimensions) is a configuration mistake, not a bad line: the first record of
each file that carries a scores object is compared with the filter and one
ConfigError lists what is missing and what is unexpected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.columnar import data_files
from distill.errors import ConfigError, RecordError
from distill.filter_spec import FilterSpec
from distill.records import (
    LabelledRecord,
    ReadStats,
    Reject,
    iter_objects,
    score_like_names,
    scores_object,
)
from distill.scoring import score_record
from distill.truncation import article_text


@dataclass(frozen=True)
class Example:
    id: str
    text: str  # article_text(title, content); student truncation comes later
    body: str  # content alone: what near-duplicate detection compares
    scores: tuple[float, ...]  # filter dimension order
    overall_score: float
    tier: str
    path: str  # where it was read, for duplicate reports
    line: int
    fields: dict[str, Any] = field(default_factory=dict)  # the article's plain fields (language, source, ...)

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class InputFile:
    path: str
    sha256: str = ""
    lines: int = 0
    examples: int = 0
    rejected: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class LoadResult:
    examples: list[Example] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    inputs: list[InputFile] = field(default_factory=list)


def load_labelled(
    paths: Iterable[str | Path], spec: FilterSpec, scores_field: str = "scores", strict: bool = False
) -> LoadResult:
    """Every valid labelled record of `paths`, in file then line order."""
    result = LoadResult()
    for path in paths:
        info = InputFile(str(path), sha256=file_sha256(path))
        result.inputs.append(info)
        checked = False
        stats = ReadStats()
        for line_no, obj in iter_objects(path, stats):
            if not isinstance(obj, Reject) and not checked:
                checked = check_dimension_names(obj, spec, scores_field, f"{path}:{line_no}")
            try:
                if isinstance(obj, Reject):
                    raise ValueError(obj.reason)
                example = parse_labelled(obj, spec, scores_field, str(path), line_no)
            except ValueError as exc:
                raw = obj.raw if isinstance(obj, Reject) else json.dumps(obj, ensure_ascii=False)
                if strict:
                    raise RecordError(str(path), line_no, str(exc)) from None
                result.rejects.append(Reject(str(path), line_no, str(exc), raw))
                info.rejected += 1
                continue
            result.examples.append(example)
            info.examples += 1
        info.lines = stats.lines
    return result


def parse_labelled(
    obj: dict[str, Any], spec: FilterSpec, scores_field: str, path: str = "", line: int = 0
) -> Example:
    """One Example from a JSON object; ValueError names the bad field."""
    record = LabelledRecord.from_json(obj, spec.dimension_names, scores_field)
    scores = tuple(record.scores.values())
    result = score_record(spec, scores, record.content_type)
    return Example(
        id=record.article.id,
        text=article_text(record.article.title, record.article.text),
        body=record.article.text,
        scores=scores,
        overall_score=result.overall_score,
        tier=result.tier,
        path=path,
        line=line,
        fields=plain_fields(record.article.extra),
    )


def plain_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """The article fields a split carries: strings, numbers, booleans and nulls.
    Nested objects (another tool's analysis, say) would only bloat every line."""
    return {k: v for k, v in extra.items() if v is None or isinstance(v, (str, int, float, bool))}


def check_dimension_names(obj: dict[str, Any], spec: FilterSpec, scores_field: str, where: str) -> bool:
    """Compare a file's dimension names with the filter's; False if `obj` has no scores object."""
    try:
        raw = scores_object(obj, scores_field)
    except ValueError:
        return False
    wanted = set(spec.dimension_names)
    found = score_like_names(raw) | (set(raw) & wanted)
    missing, unexpected = sorted(wanted - found), sorted(found - wanted)
    if missing or unexpected:
        parts = [f"missing: {', '.join(missing)}" if missing else "",
                 f"unexpected: {', '.join(unexpected)}" if unexpected else ""]
        raise ConfigError(
            f"{where}: the dimensions in field '{scores_field}' do not match filter {spec.id} "
            f"({'; '.join(p for p in parts if p)}); pass the --filter these labels were made with"
        )
    return True


def file_sha256(path: str | Path) -> str:
    """The file's sha256; a datasets folder's is that of its data files in order."""
    digest = hashlib.sha256()
    for part in data_files(Path(path)) if Path(path).is_dir() else [Path(path)]:
        with open(part, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
