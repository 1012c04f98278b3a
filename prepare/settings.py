"""Settings of a `distill-prepare` run: one typed home for every default.

The CLI's flags are built from these fields (`distill.settings.options_from`)
and `validate` reports every problem at once, each naming the flag and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from distill.columnar import folder_problem, pyarrow_problem
from distill.settings import Settings


@dataclass
class PrepareSettings(Settings):
    inputs: list[Path] = field(metadata={"flag": "--input", "help": "labelled file(s) (.jsonl, .jsonl.gz or .parquet) or datasets.save_to_disk folders; repeat the flag for several"})
    filter: str = field(metadata={"help": "filter the labels were made with: name/vN, a bare name (newest version) or a folder"})
    output_dir: Path | None = field(default=None, metadata={"help": "folder for train/val/test.jsonl, prepare_report.json, rejects.jsonl; default: datasets/<filter name>/v<version>"})
    train_ratio: float = field(default=0.8, metadata={"help": "share of examples for train"})
    val_ratio: float = field(default=0.1, metadata={"help": "share of examples for val"})
    test_ratio: float = field(default=0.1, metadata={"help": "share of examples for test (the three ratios must sum to 1)"})
    oversample_ratio: float = field(default=0.2, metadata={"help": "train only: copy examples of each minority tier until it has at least this share of the largest tier's count (0: off)"})
    weighting: bool = field(default=False, metadata={"help": "instead of oversampling, write a per-example loss `weight` (inverse tier frequency in train, mean 1)"})
    seed: int = field(default=42, metadata={"help": "seed of the split, oversampling and train order; same seed + inputs = byte-identical output"})
    scores_field: str = field(default="scores", metadata={"help": "record field (dots for nesting, e.g. sustainability_analysis) holding {dimension: number or {score: number}}"})
    tokenizer: Path | None = field(default=None, metadata={"help": "tokenizer folder: truncate to the filter's student_tokens exactly in tokens; default: the same budget in words (every word is at least one token)"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad input line instead of writing it to rejects.jsonl"})

    @property
    def ratios(self) -> dict[str, float]:
        return {"train": self.train_ratio, "val": self.val_ratio, "test": self.test_ratio}

    def problems(self) -> list[str]:
        problems = []
        if not self.inputs:
            problems.append("--input: give at least one labelled JSONL file")
        problems += [f"--input: {p}: {problem}" for p in self.inputs if (problem := _input_problem(Path(p)))]
        for name, value in self.ratios.items():
            if not math.isfinite(value) or not 0 <= value <= 1:
                problems.append(f"--{name}-ratio: must be in 0..1 (got {value})")
        if not math.isclose(sum(self.ratios.values()), 1.0, abs_tol=1e-6):
            problems.append(
                f"--train-ratio/--val-ratio/--test-ratio: must sum to 1 (got {sum(self.ratios.values()):g})"
            )
        if self.train_ratio <= 0:
            problems.append("--train-ratio: must be above 0")
        if not math.isfinite(self.oversample_ratio) or not 0 <= self.oversample_ratio <= 1:
            problems.append(f"--oversample-ratio: must be in 0..1 (got {self.oversample_ratio})")
        if not self.scores_field.strip(". "):
            problems.append("--scores-field: must name a field")
        if self.tokenizer is not None and not Path(self.tokenizer).is_dir():
            problems.append(f"--tokenizer: {self.tokenizer} is not a folder")
        return problems


def _input_problem(path: Path) -> str | None:
    """Why an --input cannot be read as labelled records, or None."""
    if path.is_dir():
        return folder_problem(path) or pyarrow_problem(path)
    if not path.is_file():
        return "no such file"
    return pyarrow_problem(path)
