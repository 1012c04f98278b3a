"""Settings of a `distill-evaluate` run: one typed home for every default.

The CLI's flags are built from these fields (`distill.settings.options_from`);
`evaluate()` calls `validate`, which reports every problem at once, each
naming the flag and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.settings import Settings
from distill.splits import SPLITS

# Post-processing fitted on val (evaluate/calibrate.py): a map, optionally followed by rounding.
METHODS = ("isotonic", "linear", "isotonic+rounded", "linear+rounded", "rounded")


@dataclass
class EvaluateSettings(Settings):
    model_checkpoint: Path = field(metadata={"help": "model folder written by distill-train (or a merged export with distill.json)"})
    data_dir: Path = field(metadata={"help": "folder with train/val/test.jsonl from distill-prepare: test is scored, val fits post-processing, train fits the baselines"})
    output: Path = field(default=Path("reports/model_evaluation.md"), metadata={"help": "markdown report; metrics.json and PNG plots go beside it"})
    calibrate: bool = field(default=False, metadata={"help": "fit per-dimension calibration on val and save calibration.json in the model folder (later stages apply it)"})
    ensemble: bool = field(default=False, metadata={"help": (
        "fit a TF-IDF + ridge over the student's own tokens on train, choose its blend weight with the student "
        "on val (under the calibration method's rounding) and save ensemble.npz in the model folder (later "
        "stages apply it)")})
    calibration_method: str = field(default="isotonic", metadata={"choices": METHODS, "help": (
        "isotonic (monotone map) or linear (variance-restoring line); +rounded then rounds to integers like the "
        "oracle's labels, stored in the same knots; rounded alone fits nothing")})
    slice_by: list[str] = field(default_factory=list, metadata={"flag": "--slice-by", "help": (
        "also report MAE, tier accuracy and rare-tier recall per value of this article field (language, source, "
        "...: any plain field distill-prepare carried into the splits), beside TF-IDF + ridge; repeat for several")})
    min_slice: int = field(default=20, metadata={"help": (
        "--slice-by values with fewer test articles than this are pooled into one '(other)' row")})
    target_recall: list[str] = field(default_factory=list, metadata={"flag": "--target-recall", "help": (
        "TIER=RECALL, e.g. promising=0.7: fit on val the smallest shift of that tier's lower boundary that reaches "
        "the recall, save it in calibration.json (score and serve apply it) and report what it costs on test; "
        "repeat for several tiers. Default: the filter's own thresholds")})
    batch_size: int = field(default=32, metadata={"help": "articles per forward pass"})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})

    @property
    def targets(self) -> dict[str, float]:
        """--target-recall as {tier: recall} (after validate(), every entry parses)."""
        pairs = (entry.partition("=") for entry in self.target_recall)
        return {tier.strip(): float(value) for tier, _, value in pairs}

    def problems(self) -> list[str]:
        problems = []
        if not (Path(self.model_checkpoint) / "distill.json").is_file():
            problems.append(f"--model-checkpoint: {self.model_checkpoint} has no distill.json (train a model first)")
        problems += [f"--data-dir: {Path(self.data_dir) / f'{s}.jsonl'} is missing" for s in SPLITS
                     if not (Path(self.data_dir) / f"{s}.jsonl").is_file()]
        if self.calibration_method not in METHODS:
            problems.append(f"--calibration-method: one of {', '.join(METHODS)} (got {self.calibration_method!r})")
        problems += [f"--target-recall: {entry!r} is not TIER=RECALL with RECALL in (0, 1], e.g. promising=0.7"
                     for entry in self.target_recall if not _is_target(entry)]
        if self.min_slice < 1:
            problems.append(f"--min-slice: must be at least 1 (got {self.min_slice})")
        if self.batch_size < 1:
            problems.append(f"--batch-size: must be at least 1 (got {self.batch_size})")
        return problems


def _is_target(entry: str) -> bool:
    tier, _, value = entry.partition("=")
    try:
        return bool(tier.strip()) and 0 < float(value) <= 1
    except ValueError:
        return False
