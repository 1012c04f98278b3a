"""`--select`: pick the articles to send by a predictor's scores of the unlabelled pool.

A selection round is written to OUTPUT_DIR/selection.jsonl before the first
call: a header line (strategy, seed, target, student, predictor, when) and
one line per pick with its reason. A rerun with the same strategy, seed,
target and student resumes that round: it sends the round's picks not yet
labelled, so a killed run finishes the set it chose instead of choosing
again from a predictor refitted on more labels. Any other settings start a
new round. A round cut short by a kill while it was being written has no
picks sent and is ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from distill.acquisition import Picker, needs_second_opinion
from distill.filter_spec import FilterSpec
from distill.label.journal import utc_now
from distill.label.pool_model import Labelled, pool_model
from distill.label.settings import LabelSettings
from distill.records import Article, JsonlWriter, LabelledRecord, read_records
from distill.scoring import overall_scores, tiers_for
from distill.truncation import article_text

SELECTION_NAME = "selection.jsonl"
CHUNK = 256  # articles scored at once: bounds memory, keeps batches full

Chooser = Callable[[Iterator[Article], int], list[Article]]


def make_chooser(spec: FilterSpec, settings: LabelSettings, folder: Path, labelled_path: Path,
                 record: bool) -> Chooser | None:
    """The chooser for select_articles, or None when no strategy is asked for.
    `record`: write the round to selection.jsonl (a run does; --plan does not)."""
    strategy = settings.strategy
    if strategy is None:
        return None
    key = round_key(settings)

    def choose(candidates: Iterator[Article], needed: int) -> list[Article]:
        if needed <= 0:
            for _ in candidates:  # still read everything, for the counts in the summary
                pass
            return []
        previous = last_round(folder / SELECTION_NAME)
        if previous is not None and previous[0]["key"] == key:
            return _resume(candidates, previous[1], needed)
        picker, predictor = _score_pool(spec, settings, strategy, candidates, needed, labelled_path)
        picks = picker.picks()
        if record:
            _write_round(folder / SELECTION_NAME, key, predictor, picker, picks)
        return [p.item for p in picks]

    return choose


def round_key(settings: LabelSettings) -> dict[str, Any]:
    """What makes two runs the same selection round."""
    student = None
    if settings.student is not None:
        info = Path(settings.student) / "distill.json"
        digest = hashlib.sha256(info.read_bytes()).hexdigest()[:16] if info.is_file() else None
        student = {"path": str(Path(settings.student).resolve()), "distill_json_sha256": digest}
    return {"strategy": settings.strategy, "seed": settings.seed, "target_count": settings.target_count,
            "student": student}


def last_round(path: Path) -> tuple[dict[str, Any], list[str]] | None:
    """(header, pick ids) of the last complete round in a selection file, or None."""
    if not path.is_file():
        return None
    best, header, ids = None, None, []
    for _, obj in _lines(path):
        if "key" in obj:
            header, ids = obj, []
        elif header is not None and obj.get("round") == header["round"]:
            ids.append(obj["id"])
        if header is not None and len(ids) == header["picks"]:
            best = (header, list(ids))
    return best


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: the round it belonged to is incomplete
            if isinstance(obj, dict):
                yield line_no, obj


def _resume(candidates: Iterator[Article], ids: list[str], needed: int) -> list[Article]:
    wanted = set(ids)
    found = {a.id: a for a in candidates if a.id in wanted}
    return [found[i] for i in ids if i in found][:needed]


def _score_pool(spec, settings, strategy, candidates, needed, labelled_path) -> tuple[Picker, str]:
    """The pool streamed through a Picker in chunks, and what predicted it."""
    labelled = read_labelled(spec, labelled_path)
    counts = Counter(tiers_for(spec, overall_scores(spec, labelled.targets))) if len(labelled.texts) else Counter()
    picker = Picker(spec, strategy, needed, settings.seed, counts)
    model = None
    if strategy != "random":  # random needs no predictor: nothing to fit or load
        model = pool_model(spec, settings.student, labelled, needs_second_opinion(strategy), settings.seed)
    while chunk := list(islice(candidates, CHUNK)):
        ids = [a.id for a in chunk]
        predicted, second = model.predict([article_text(a.title, a.text) for a in chunk]) if model else (None, None)
        picker.add(ids, chunk, predicted, second)
    return picker, model.description if model else "none (random)"


def read_labelled(spec: FilterSpec, path: Path) -> Labelled:
    """Texts and scores of the labels so far (none when the file does not exist yet)."""
    texts, rows = [], []
    if path.is_file():
        for record in read_records([path], lambda obj: LabelledRecord.from_json(obj, spec.dimension_names)):
            texts.append(article_text(record.article.title, record.article.text))
            rows.append([record.scores[d] for d in spec.dimension_names])
    return Labelled(texts, np.array(rows, dtype=float).reshape(len(rows), len(spec.dimensions)))


def _write_round(path: Path, key: dict[str, Any], predictor: str, picker: Picker, picks) -> None:
    """Header then picks, before any call; a kill part-way leaves an incomplete round, ignored on rerun."""
    number = 1 + (sum(1 for _, obj in _lines(path) if "key" in obj) if path.is_file() else 0)
    with JsonlWriter(path) as out:
        out.append({"round": number, "key": key, "picks": len(picks), "selected_at": utc_now(),
                    "predictor": predictor, "labelled_tiers": dict(picker.labelled_tiers),
                    "by_component": dict(Counter(p.component for p in picks))})
        for rank, pick in enumerate(picks, start=1):
            out.append({"round": number, "rank": rank, "id": pick.id, "strategy": pick.component,
                        "reason": pick.reason, "predicted_overall": pick.predicted_overall,
                        "predicted_tier": pick.predicted_tier})
