"""Resuming a scoring run from the output file itself.

Every output record is one whole-line append, so after a kill at any point
the output holds complete records plus at most one torn last line. Resuming
trims that line, reads the ids already written and skips them; the rerun
then appends exactly the missing ones, so every valid input id ends up in
the output exactly once. The output is the only progress record: no side
file can disagree with it. A Parquet output's progress is the published file
plus its journal (distill/columnar.py), read together the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distill.columnar import is_parquet, journal_path
from distill.errors import OutputError
from distill.records import Reject, iter_objects, repair_tail


@dataclass
class ResumeState:
    done: set[str] = field(default_factory=set)  # ids already in the output
    torn_line_trimmed: bool = False
    models: Counter = field(default_factory=Counter)  # model id -> records written by it

    def notes(self, model_id: str) -> list[str]:
        """What a user should know about the output being resumed (mismatches first)."""
        notes = []
        other = {m: n for m, n in self.models.items() if m != model_id}
        for model, count in sorted(other.items()):
            notes.append(
                f"the output has {count} records from model {model!r}; they are kept and "
                f"skipped, new records come from {model_id!r}"
            )
        if self.torn_line_trimmed:
            notes.append("trimmed a torn last line left by an interrupted run")
        if self.done:
            notes.append(f"resuming: {len(self.done)} ids already scored are skipped")
        return notes


def load_resume_state(output: Path) -> ResumeState:
    """Repair the output's tail and collect the ids (and models) already in it."""
    state = ResumeState()
    # A Parquet output: the published file, then the journal of records since.
    for path in [output, journal_path(output)] if is_parquet(output) else [output]:
        if not path.exists():
            continue
        if not is_parquet(path):
            state.torn_line_trimmed |= repair_tail(path)
        for _, obj in iter_objects(path):
            if isinstance(obj, Reject) and is_parquet(path):  # never resume into (or replace) a stranger's file
                raise OutputError(f"{path}: {obj.reason}; not a Parquet file distill-score wrote: move it "
                                  "away or score into another --output")
            if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                state.done.add(obj["id"])
                state.models[str(obj.get("model"))] += 1
    return state
