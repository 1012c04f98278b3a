"""Streaming JSONL records: articles in, labelled / training / scored records out.

Readers yield one record at a time so memory stays flat on any corpus size.
A bad line is never fatal and never silent: it becomes a `Reject` naming the
file, line and reason, which callers count and write to a rejects file
(`strict=True` raises instead). Writers append each record as one `write` of
a whole line to a file opened in append mode and flush it, so a killed writer
leaves at most a torn last line, which `repair_tail` trims before resuming.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from distill.errors import RecordError


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
    raw: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "line": self.line_no, "reason": self.reason, "raw": self.raw}


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


def iter_json_lines(
    path: str | Path, stats: ReadStats | None = None
) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """Yield (line number, object or Reject) for each non-blank line."""
    stats = stats if stats is not None else ReadStats()
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            stats.lines += 1
            if not line.strip():
                stats.blank += 1
                continue
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                yield line_no, Reject(str(path), line_no, "invalid UTF-8", _safe_raw(line))
                continue
            line = line.rstrip("\r\n")  # a line cut mid-string then reads as unterminated
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, Reject(str(path), line_no, f"not JSON ({exc.msg})", line)
                continue
            if not isinstance(obj, dict):
                yield line_no, Reject(str(path), line_no, "not a JSON object", line)
                continue
            yield line_no, obj


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


def read_articles(
    paths: Iterable[str | Path],
    rejects: list[Reject] | RejectsWriter | None = None,
    strict: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Article]:
    """Stream valid articles from JSONL files; bad lines go to `rejects`."""
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
        for line_no, obj in iter_json_lines(path, stats):
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
    """Append-only JSONL writer; each record is one whole-line write, flushed."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".gz":
            self._gz = gzip.open(self.path, "ab")
            self._fd = None
        else:
            repair_tail(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._gz = None
        self.fsync = fsync
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        data = dumps_line(record).encode("utf-8", errors="surrogateescape")
        if self._gz is not None:
            self._gz.write(data)
            self._gz.flush()
        else:
            view = memoryview(data)
            while view:  # os.write may write less than asked on some filesystems
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        self.written += 1

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return False
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


def _safe_raw(line: str) -> str:
    return line.rstrip("\n").encode("utf-8", errors="backslashreplace").decode("utf-8")
