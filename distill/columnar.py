"""Parquet files and `datasets.save_to_disk` folders, read and written a batch at a time.

Reading yields the same (number, object or Reject) pairs as JSONL reading
(`records.iter_objects` picks the reader by path), so rejects, `--strict`,
first-id-wins and resume treat a row exactly like a line: rows are numbered
from 1 and a bad row is one Reject naming the file, row and field. A
`save_to_disk` folder is read as one input (its Arrow IPC stream shards in
state.json's order, rows numbered across them), with pyarrow alone: the
`datasets` package need not be installed. Only `BATCH_ROWS` rows are turned
into Python objects at a time and Parquet column chunks are read through a
small buffer, so memory stays flat on any file size. A row's null columns
are left out (a column it does not use), and values JSON cannot hold are
made JSON-ready: timestamps as ISO text, decimals as numbers, UTF-8 bytes as
text. Data that cannot be decoded from some point on (a damaged row group or
shard) ends that input with one Reject, after every row before it, as a torn
.gz does.

A Parquet output is journalled: records go to `OUTPUT.partial.jsonl` through
the JsonlWriter (whole-line appends, torn tail trimmed on reopen), which is
what a killed run leaves and what a rerun resumes from; at the end of a run
`publish` writes the published rows plus the journal's, each id once, into a
temporary file that is renamed over the output, then drops the journal. A
crash at any point leaves either the old output and the journal, or the new
output and a journal whose ids it already holds (skipped when next
published), so no record is lost or written twice.

pyarrow is optional (`pip install 'distill[parquet]'`) and imported only
when such a path is read or written.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, OutputError
from distill.records import JsonlWriter, ReadStats, Reject, iter_json_lines, output_error

PARQUET_SUFFIX = ".parquet"
STATE_FILE = "state.json"  # what datasets.save_to_disk writes beside its shards
BATCH_ROWS = 1024  # rows converted to Python objects at a time
READ_BUFFER = 1 << 20  # bytes read from a Parquet column chunk at a time, not the whole chunk
ROW_GROUP_ROWS = 10_000  # rows per row group written: small enough to stream back
INSTALL_HINT = "pip install 'distill[parquet]'"
READING, WRITING = "reading Parquet files and datasets folders", "writing Parquet"  # what needs pyarrow


def is_parquet(path: str | Path) -> bool:
    return str(path).endswith(PARQUET_SUFFIX)


def is_dataset_folder(path: str | Path) -> bool:
    """A folder `datasets.Dataset.save_to_disk` wrote (one dataset, not a DatasetDict)."""
    return (Path(path) / STATE_FILE).is_file()


def is_columnar(path: str | Path) -> bool:
    """True for what this module reads: a .parquet file or a save_to_disk folder."""
    return is_parquet(path) or is_dataset_folder(path)


def folder_problem(path: Path) -> str | None:
    """Why a folder cannot be read as one input, or None for a save_to_disk folder."""
    if is_dataset_folder(path):
        return None
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        try:
            splits = json.loads(splits_file.read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = ["SPLIT"]
        return f"holds a datasets DatasetDict; give one split's folder, e.g. {path / str(splits[0])}"
    return f"is a folder; give its files, e.g. {path}/*.jsonl, or a folder datasets.save_to_disk wrote"


def pyarrow_problem(path: str | Path, doing: str = READING) -> str | None:
    """What to install (without the path) when `path` needs pyarrow and it is missing, else None."""
    if not (is_parquet(path) or (doing == READING and is_dataset_folder(path))):
        return None
    try:
        _arrow(path, doing)
    except ConfigError:
        return f"{doing} needs pyarrow: {INSTALL_HINT}"
    return None


def _arrow(path: str | Path, doing: str = READING) -> Any:
    """pyarrow with its parquet and ipc modules, or a ConfigError saying how to install it."""
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401 - submodules used through `pyarrow.`
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(f"{path}: {doing} needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


# Reading


def iter_rows(path: str | Path, stats: ReadStats | None = None) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    """(row number from 1, row as a JSON-ready dict or a Reject) for every row of `path`."""
    pa = _arrow(path)
    stats = stats if stats is not None else ReadStats()
    row_no = 0
    try:
        for batch in _batches(pa, Path(path)):
            for item in _batch_rows(str(path), row_no, batch):
                row_no += 1
                stats.lines += 1
                yield row_no, item
    except (pa.ArrowException, OSError) as exc:  # damaged data: keep every row before it
        reason = (f"cannot be read ({_short(exc)})" if row_no == 0 else
                  f"the data cannot be read from this row on ({_short(exc)}); every row before it was read")
        stats.lines += 1
        yield row_no + 1, Reject(str(path), row_no + 1, reason, "")


def count_rows(path: str | Path) -> int:
    """Rows of a Parquet file (from its footer) or a save_to_disk folder (batch headers only),
    for a progress total; damaged data counts what can be counted (reading rejects the rest)."""
    pa = _arrow(path)
    total = 0
    try:
        if is_parquet(path):
            return pa.parquet.ParquetFile(path).metadata.num_rows
        for shard in data_files(Path(path)):
            with pa.memory_map(str(shard)) as source:  # mapped: counting reads no row data
                total += sum(batch.num_rows for batch in pa.ipc.open_stream(source))
    except (pa.ArrowException, OSError):
        pass
    return total


def data_files(folder: Path) -> list[Path]:
    """The Arrow shards of a save_to_disk folder, in the order state.json lists them."""
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        return [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{folder / STATE_FILE}: does not list the data files ({_short(exc)}); "
                          "save the dataset again with save_to_disk") from None


def _batches(pa: Any, path: Path) -> Iterator[Any]:
    if is_parquet(path):
        parquet = pa.parquet.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
        # One thread: the scoring main process shares the cores with tokenizers and the model.
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False)
        return
    for shard in data_files(path):
        with pa.OSFile(str(shard)) as source:  # read, not mapped: memory holds one batch, not the file
            yield from pa.ipc.open_stream(source)


def _batch_rows(path: str, before: int, batch: Any) -> Iterator[dict[str, Any] | Reject]:
    try:
        rows = batch.to_pylist()
    except UnicodeDecodeError:  # a string column holds bytes that are not UTF-8: find which rows
        rows = [_one_row(path, before + i + 1, batch, i) for i in range(batch.num_rows)]
    for i, row in enumerate(rows):
        if isinstance(row, Reject):
            yield row
            continue
        try:
            yield {key: _jsonable(value, key) for key, value in row.items() if value is not None}
        except ValueError as exc:
            yield Reject(path, before + i + 1, str(exc), json.dumps(row, ensure_ascii=False, default=repr))


def _one_row(path: str, row_no: int, batch: Any, i: int) -> dict[str, Any] | Reject:
    row, bad = {}, []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except UnicodeDecodeError:
            bad.append(name)
    if not bad:
        return row
    fields = ", ".join(f"'{name}'" for name in bad)
    return Reject(path, row_no, f"field {fields}: not valid UTF-8 text",
                  json.dumps(row, ensure_ascii=False, default=repr))


def _jsonable(value: Any, where: str) -> Any:
    """A value JSON can hold (and a JSONL output can carry), or ValueError naming the field."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"field '{where}': bytes that are not UTF-8 text") from None
    return str(value)


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


# Writing


def journal_path(target: str | Path) -> Path:
    """Where a Parquet output's records wait for `publish`: OUTPUT.partial.jsonl."""
    target = Path(target)
    return target.with_name(target.name + ".partial.jsonl")


def open_output(path: str | Path) -> OutputWriter:
    """The writer for a scored output: JSONL appends, or a journalled Parquet file."""
    return ParquetOutput(path) if is_parquet(path) else JsonlWriter(path)


def publish_outputs(writers: Iterable[OutputWriter]) -> None:
    """A run finished: publish each Parquet output (JSONL outputs are complete as written)."""
    for writer in writers:
        if isinstance(writer, ParquetOutput):
            writer.publish()


class ParquetOutput:
    """A Parquet output: records are appended to its journal until `publish` (module doc)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _arrow(self.path, WRITING)
        self._journal = JsonlWriter(journal_path(self.path))

    def append(self, record: dict[str, Any]) -> None:
        self._journal.append(record)

    def close(self) -> None:
        self._journal.close()

    def publish(self) -> None:
        self.close()
        publish_parquet(self.path)

    def __enter__(self) -> ParquetOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


OutputWriter = JsonlWriter | ParquetOutput  # what open_output returns


def publish_parquet(target: str | Path) -> None:
    """Fold `target`'s journal into it: published rows, then journalled ids it lacks."""
    pa = _arrow(target, WRITING)
    target, journal = Path(target), journal_path(target)
    if not journal.exists():
        return
    published = {row["id"] for row in _published_rows(target) if isinstance(row.get("id"), str)}
    if target.exists() and not any(_journal_rows(journal, published)):
        _remove(journal)  # nothing new: the output is already whole
        return

    def chunks() -> Iterator[list[dict[str, Any]]]:
        yield from _chunked(_published_rows(target))
        yield from _chunked(_journal_rows(journal, published))

    try:
        write_parquet(target, chunks, infer_schema(pa, chunks()))
    except pa.ArrowException as exc:
        raise OutputError(f"{target}: cannot write Parquet ({_short(exc)}); every record is kept in "
                          f"{journal}") from None
    _remove(journal)


def _published_rows(target: Path) -> Iterator[dict[str, Any]]:
    if not target.exists():
        return
    for _, row in iter_rows(target):
        if isinstance(row, Reject):
            raise OutputError(f"{target}: {row.reason}; not a Parquet file distill-score wrote: move it "
                              "away or score into another --output")
        yield row


def _journal_rows(journal: Path, skip: set[str]) -> Iterator[dict[str, Any]]:
    for _, obj in iter_json_lines(journal):  # only whole lines: the JsonlWriter trimmed a torn tail
        if isinstance(obj, dict) and obj.get("id") not in skip:
            yield obj


def _chunked(rows: Iterable[dict[str, Any]], size: int = ROW_GROUP_ROWS) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def infer_schema(pa: Any, chunks: Iterable[list[dict[str, Any]]]) -> Any:
    """One schema for every chunk: a column null in some chunks takes the type others give it."""
    schemas = [pa.Table.from_pylist(chunk).schema for chunk in chunks]
    if not schemas:
        return pa.schema([("id", pa.string())])  # an empty output still has the id column
    return pa.unify_schemas(schemas, promote_options="permissive")


def write_parquet(target: str | Path, chunks, schema: Any) -> int:
    """Write `chunks()` (lists of rows) as row groups to a temporary file renamed over `target`."""
    pa = _arrow(target, WRITING)
    target = Path(target)
    partial = target.with_name(target.name + ".tmp")
    rows = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with pa.parquet.ParquetWriter(str(partial), schema) as writer:
            for chunk in chunks():
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                rows += len(chunk)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
        os.replace(partial, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(target, exc, "write it") from exc
        raise
    _fsync_folder(target.parent)
    return rows


class ParquetRowWriter:
    """Rows of known text columns appended one at a time, written a row group at a time.

    For writers that know their columns up front (the benchmark corpus); the
    file is written beside `path` and renamed into place by `close`."""

    def __init__(self, path: str | Path, text_columns: list[str]):
        self._pa = _arrow(path, WRITING)
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".tmp")
        self._schema = self._pa.schema([(name, self._pa.string()) for name in text_columns])
        self._rows: list[dict[str, Any]] = []
        self._writer = self._pa.parquet.ParquetWriter(str(self._partial), self._schema)

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) == ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(self._pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._partial, self.path)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; some file systems cannot sync a folder, and the rename is atomic anyway."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise output_error(path, exc, "remove it after publishing") from exc
