"""Streaming JSONL records: articles in, labelled / training / scored records out.

The typed records: `Article` (what distill-label reads), `LabelledRecord` (what
it writes: the article + scores + oracle), `TrainingExample` (one line of a
distill-prepare split), each with `from_json` / `to_json`.

Readers yield one record at a time so memory stays flat on any corpus size;
`iter_objects` also reads Parquet files and datasets.save_to_disk folders
(distill/columnar.py), whose rows count as lines.
A bad line is never fatal and never silent: it becomes a `Reject` naming the
file, line and reason, which callers count and write to a rejects file
(`strict=True` raises instead). Writers append each record as one `write` of
a whole line to a file opened in append mode and flush it, so a killed writer
leaves at most a torn last line, which `repair_tail` trims before resuming; a
write that fails (full disk) is cut back to the last whole line and raised as
an OutputError.

Lines are counted as editors count them: split on "\n" only (a "\r\n" ends a
line too; a bare "\r" stays inside its line), a UTF-8 BOM at the start of a
file is skipped, and a .gz file that ends mid-stream yields every complete
line and then one Reject for the torn end. A string that is not valid
Unicode (a lone surrogate such as the JSON escape "\ud800") rejects its line:
no tokenizer or UTF-8 writer accepts it.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from distill.errors import OutputError, RecordError

RAW_LIMIT = 4096  # characters of a bad line copied into the rejects file (a line may be 50 MB)
# What gzip raises where a file was cut short or damaged (BadGzipFile is an OSError).
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
# Only a line holding such a \u escape can decode to a lone surrogate (pairs decode to one character).
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass
class Article:
    id: str
    text: str
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # every other field, untouched

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "content": self.text, **self.extra}


@dataclass(frozen=True)
class Reject:
    path: str
    line_no: int
    reason: str
    raw: str  # the line, or its first RAW_LIMIT characters
    raw_length: int | None = None  # the whole line's length, set when `raw` holds only its start

    def __post_init__(self) -> None:
        if len(self.raw) > RAW_LIMIT:
            object.__setattr__(self, "raw_length", len(self.raw))
            object.__setattr__(self, "raw", self.raw[:RAW_LIMIT])

    def to_json(self) -> dict[str, Any]:
        row = {"file": self.path, "line": self.line_no, "reason": self.reason, "raw": self.raw}
        if self.raw_length is not None:
            row["raw_length"] = self.raw_length
        return row


@dataclass
class ReadStats:
    lines: int = 0
    records: int = 0
    rejected: int = 0
    blank: int = 0


def open_text(path: str | Path, mode: str = "r") -> TextIO:
    """Open plain or .gz JSONL as text; reading keeps undecodable bytes visible."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8", errors="surrogateescape")
    return open(path, mode, encoding="utf-8", errors="surrogateescape")


def open_lines(path: str | Path) -> BinaryIO:
    """Plain or .gz input as bytes; a .gz cut short reads as ending where its data ends.

    The stream's `raw.error` then holds what gzip raised, for the caller to report.
    """
    if str(path).endswith(".gz"):
        return io.BufferedReader(_GzipToTheEnd(gzip.open(path, "rb")), buffer_size=1 << 16)
    return open(path, "rb")


class _GzipToTheEnd(io.RawIOBase):
    """A gzip stream that stops cleanly at a truncated or corrupt spot and keeps the error."""

    def __init__(self, gz: gzip.GzipFile):
        self._gz = gz
        self.error: Exception | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            return 0
        try:
            data = self._gz.read1(len(buffer))
        except GZIP_ERRORS as exc:
            self.error = exc
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._gz.close()
        super().close()


def iter_json_lines(
    path: str | Path, stats: ReadStats | None = None
) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """Yield (line number, object or Reject) for each non-blank line, then a torn .gz end."""
    stats = stats if stats is not None else ReadStats()
    line_no = 0
    with open_lines(path) as handle:
        for line_no, raw in enumerate(handle, start=1):
            stats.lines += 1
            error = _stream_error(handle)
            if error is not None and not raw.endswith(b"\n"):  # the fragment a torn .gz ends with
                yield line_no, _torn_gzip(path, line_no, error, raw)
                return
            item = parse_line(str(path), line_no, raw.removeprefix(codecs.BOM_UTF8) if line_no == 1 else raw)
            if item is None:
                stats.blank += 1
                continue
            yield line_no, item
        error = _stream_error(handle)
    if error is not None:  # torn exactly at a line end
        yield line_no + 1, _torn_gzip(path, line_no + 1, error, b"")


def iter_objects(
    path: str | Path, stats: ReadStats | None = None
) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """(line or row number, object or Reject) for JSONL (.jsonl, .jsonl.gz), Parquet or a
    datasets.save_to_disk folder: every reader of articles and labels comes through here."""
    from distill import columnar  # imported here: columnar builds on this module

    if columnar.is_columnar(path):
        return columnar.iter_rows(path, stats)
    return iter_json_lines(path, stats)


def parse_line(path: str, line_no: int, raw: bytes) -> dict[str, Any] | Reject | None:
    """One line's JSON object, a Reject saying why not, or None for a blank line."""
    raw = raw.removesuffix(b"\n")
    raw = raw.removesuffix(b"\r")  # a Windows line end; a bare \r inside the line stays
    if not raw.strip():
        return None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Reject(path, line_no, f"invalid UTF-8 (byte {exc.start + 1} of the line)", _safe_raw(raw))
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Reject(path, line_no, f"not JSON ({exc.msg}, column {exc.colno})", line)
    except RecursionError:
        return Reject(path, line_no, "not JSON (nested too deeply)", line)
    if not isinstance(obj, dict):
        return Reject(path, line_no, "not a JSON object", line)
    if SURROGATE_ESCAPE.search(line) and (where := lone_surrogate(obj)) is not None:
        return Reject(path, line_no, f"{where}: holds a lone surrogate (a \\ud800-\\udfff escape), "
                                     "which is not valid Unicode text", line)
    return obj


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where (as "field 'name'") a parsed value holds a string that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field '{_printable(where)}'" if where else "a value"
        return None
    if isinstance(value, dict):
        items = ((f"{where}.{key}" if where else key, key, item) for key, item in value.items())
        for name, key, item in items:
            found = lone_surrogate(key, name) or lone_surrogate(item, name)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{where}[{i}]")
            if found:
                return found
    return None


def _stream_error(handle: BinaryIO) -> Exception | None:
    """What stopped a .gz stream early (see open_lines); None for plain files."""
    return getattr(getattr(handle, "raw", None), "error", None)


def _torn_gzip(path: str | Path, line_no: int, error: Exception, fragment: bytes) -> Reject:
    reason = (f"the gzip data ends here, truncated or corrupt ({error}); every complete line "
              "before this one was read")
    return Reject(str(path), line_no, reason, _safe_raw(fragment))


def parse_article(obj: dict[str, Any]) -> Article:
    """An Article from a JSON object; raises ValueError naming the bad field."""
    article_id = obj.get("id")
    if isinstance(article_id, int) and not isinstance(article_id, bool):
        article_id = str(article_id)
    if not isinstance(article_id, str) or not article_id.strip():
        raise ValueError("field 'id': missing or not a non-empty string")
    if "content" not in obj and "text" not in obj:
        raise ValueError("field 'content': missing (an article needs 'content' or 'text')")
    text_key = "content" if "content" in obj else "text"
    text = obj.get(text_key)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"field '{text_key}': not a non-empty string")
    title = obj.get("title") or ""
    if not isinstance(title, str):
        raise ValueError("field 'title': not a string")
    extra = {k: v for k, v in obj.items() if k not in ("id", "content", "text", "title")}
    return Article(id=article_id, text=text, title=title, extra=extra)


def scores_object(obj: Mapping[str, Any], scores_field: str = "scores") -> dict[str, Any]:
    """The object at `scores_field` (dots walk nested objects); ValueError if absent."""
    value: Any = obj
    for part in scores_field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if not isinstance(value, dict):
        raise ValueError(f"field '{scores_field}': missing or not an object")
    return value


def score_like_names(raw: Mapping[str, Any]) -> set[str]:
    """Keys holding a number or a {score: ...} object: nested analysis objects from
    other tools also carry text fields (reasoning, content_type) that are not dimensions."""
    return {
        k
        for k, v in raw.items()
        if (isinstance(v, (int, float)) and not isinstance(v, bool))
        or (isinstance(v, dict) and "score" in v)
    }


@dataclass
class LabelledRecord:
    """One line of labelled.jsonl: the article's fields, the oracle's `scores`
    {dimension: 0-10} and `oracle` (model, prompt hash, tokens, cost)."""

    article: Article
    scores: dict[str, float]  # in the order of the dimensions asked for
    oracle: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None  # what the filter's content-type caps read

    @classmethod
    def from_json(cls, obj: dict[str, Any], dimensions: Sequence[str], scores_field: str = "scores",
                  allow_extra: bool = False) -> LabelledRecord:
        """A record from a JSON object; raises ValueError naming the bad field.

        `scores_field` (dots for nesting) may be another tool's analysis object: a
        dimension holds a number or {score: number}, and keys holding neither
        (reasoning, content_type) are not dimensions. A score-like key outside
        `dimensions` is refused unless `allow_extra`.
        """
        article = parse_article(obj)
        raw = scores_object(obj, scores_field)
        extra = sorted(score_like_names(raw) - set(dimensions)) if not allow_extra else []
        if extra:
            raise ValueError(f"field '{scores_field}': unexpected dimension(s) {', '.join(extra)}")
        missing = [d for d in dimensions if d not in raw]
        if missing:
            raise ValueError(f"field '{scores_field}': missing dimension(s) {', '.join(missing)}")
        scores = {d: check_score(raw[d], f"{scores_field}.{d}") for d in dimensions}
        content_type = obj.get("content_type", raw.get("content_type"))
        oracle = obj.get("oracle")
        oracle = oracle if isinstance(oracle, dict) else {}
        kept = {k: v for k, v in article.extra.items() if k != "scores" and not (k == "oracle" and oracle)}
        return cls(replace(article, extra=kept), scores, oracle,
                   content_type if isinstance(content_type, str) else None)

    def to_json(self) -> dict[str, Any]:
        row = {**self.article.to_json(), "scores": dict(self.scores)}
        if self.oracle:
            row["oracle"] = dict(self.oracle)
        return row


@dataclass
class TrainingExample:
    """One line of a distill-prepare split (train/val/test.jsonl): what the student learns from."""

    id: str
    text: str  # title + body, already cut to the student's budget
    dimension_scores: list[float]  # in the filter's dimension order
    overall_score: float | None = None
    tier: str = ""
    weight: float | None = None  # per-example loss weight: train, with --weighting, only
    # The labelled article's own plain fields (language, source, ...), carried so
    # that distill-evaluate --slice-by can group test articles by them.
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: dict[str, Any], num_dimensions: int) -> TrainingExample:
        """An example from a JSON object; raises ValueError naming the bad field."""
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("field 'text': missing or not a non-empty string")
        scores = obj.get("dimension_scores")
        if not isinstance(scores, list) or len(scores) != num_dimensions:
            raise ValueError(f"field 'dimension_scores': expected a list of {num_dimensions} scores")
        values = [check_score(v, "dimension_scores") for v in scores]
        weight = obj.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError("field 'weight': must be a positive number")
        overall = obj.get("overall_score")
        overall = float(overall) if isinstance(overall, (int, float)) and not isinstance(overall, bool) else None
        carried = obj.get("fields")
        return cls(str(obj.get("id", "")), text, values, overall, str(obj.get("tier", "")),
                   float(weight) if "weight" in obj else None, carried if isinstance(carried, dict) else {})

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "text": self.text, "dimension_scores": list(self.dimension_scores)}
        if self.overall_score is not None:
            row["overall_score"] = self.overall_score
        row["tier"] = self.tier
        if self.weight is not None:
            row["weight"] = self.weight
        if self.fields:
            row["fields"] = dict(self.fields)
        return row


def read_articles(
    paths: Iterable[str | Path],
    rejects: list[Reject] | RejectsWriter | None = None,
    strict: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Article]:
    """Stream valid articles from JSONL, Parquet or datasets folders; bad lines go to `rejects`."""
    yield from read_records(paths, parse_article, rejects, strict, stats)


def read_records(
    paths: Iterable[str | Path],
    parse,
    rejects: list[Reject] | RejectsWriter | None = None,
    strict: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Any]:
    """Stream `parse(obj)` for each line; a ValueError from `parse` rejects the line."""
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        for line_no, obj in iter_objects(path, stats):
            if not isinstance(obj, Reject):
                try:
                    record = parse(obj)
                except ValueError as exc:
                    obj = Reject(str(path), line_no, str(exc), json.dumps(obj, ensure_ascii=False))
                else:
                    stats.records += 1
                    yield record
                    continue
            stats.rejected += 1
            if strict:
                raise RecordError(obj.path, obj.line_no, obj.reason)
            if rejects is not None:
                rejects.append(obj)


def dumps_line(record: dict[str, Any]) -> str:
    """One compact JSON line; NaN/inf are refused since no JSON reader accepts them."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


class JsonlWriter:
    """Append-only JSONL writer; each record is one whole-line write, flushed.

    A write that fails part-way (a full disk) is cut back to the last whole
    line before the OutputError is raised, so the file only ever holds whole
    records and a rerun resumes from it.
    """

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self.written = 0
        self._gz = None
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.suffix == ".gz":
                self._gz = gzip.open(self.path, "ab")
            else:
                repair_tail(self.path)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._size = os.fstat(self._fd).st_size  # where the last whole line ends
        except OSError as exc:
            raise output_error(self.path, exc, "open it for writing") from exc

    def append(self, record: dict[str, Any]) -> None:
        data = encode_line(record)
        try:
            if self._gz is not None:
                self._gz.write(data)
                self._gz.flush()
            else:
                self._write_whole(data)
        except OSError as exc:
            raise output_error(self.path, exc, "write a record", kept=True) from exc
        self.written += 1

    def _write_whole(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:  # os.write may write less than asked on some filesystems
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # shrinking a file needs no free space
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
            self._gz = None
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encode_line(record: dict[str, Any]) -> bytes:
    """A record as one UTF-8 line; lone surrogates are kept as JSON \\u escapes, never as bad bytes."""
    line = dumps_line(record)
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode() + b"\n"


# Why a write failed, as the fix a user can make.
_WRITE_FIXES = {
    errno.ENOSPC: "the disk is full: free space, then rerun the same command to resume",
    errno.EDQUOT: "the disk quota is used up: free space, then rerun the same command to resume",
    errno.EACCES: "no permission to write there: make the folder writable or write somewhere else",
    errno.EPERM: "no permission to write there: make the folder writable or write somewhere else",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.ENOTDIR: "a part of the path is a file, not a folder: write somewhere else",
    errno.EEXIST: "a part of the path is a file, not a folder: write somewhere else",
}


def output_error(path: str | Path, exc: OSError, doing: str, kept: bool = False) -> OutputError:
    """One line: the file, what failed, why, the fix, and (`kept`) that the lines written stay."""
    fix = _WRITE_FIXES.get(exc.errno, "fix that, then rerun the same command to resume")
    note = " (every line already in it is whole and kept)" if kept else ""
    return OutputError(f"{path}: cannot {doing}: {exc.strerror or exc}; {fix}{note}")


class RejectsWriter:
    """Bad input lines with file, line and reason; the file appears only if needed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self._writer: JsonlWriter | None = None
        self.first: list[Reject] = []  # a few kept for the summary

    def append(self, reject: Reject) -> None:
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.append(reject.to_json())
        self.count += 1
        if len(self.first) < 5:
            self.first.append(reject)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair_tail(path: str | Path) -> bool:
    """Trim a torn last line (no trailing newline) left by a killed writer.

    Returns True when something was trimmed. Only the unfinished line goes:
    every complete line ends with a newline, because each is written whole.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as handle:  # read-only until there is something to trim
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return False
    try:
        return _trim_torn_line(path)
    except OSError as exc:
        raise output_error(path, exc, "trim its torn last line") from exc


def _trim_torn_line(path: Path) -> bool:
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return True
            pos = start
        handle.truncate(0)
        return True


def read_ids(path: str | Path, key: str = "id") -> set[str]:
    """Ids already present in an output file (for resuming); unreadable lines are ignored."""
    ids: set[str] = set()
    if not Path(path).exists():
        return ids
    for _, obj in iter_json_lines(path):
        if isinstance(obj, dict) and isinstance(obj.get(key), str):
            ids.add(obj[key])
    return ids


def check_score(value: Any, field_name: str) -> float:
    """A finite 0–10 number, else ValueError naming the field."""
    if isinstance(value, dict) and "score" in value:
        value = value["score"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field '{field_name}': not a number ({value!r})")
    if not math.isfinite(value) or not 0 <= value <= 10:
        raise ValueError(f"field '{field_name}': {value!r} is outside 0..10")
    return float(value)


def _safe_raw(raw: bytes) -> str:
    """Bytes as text, undecodable bytes shown as \\xNN escapes."""
    return raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")


def _printable(text: str) -> str:
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")
