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
    batch_size: int = field(default=32, metadata={"help": "articles per forward pass"})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})

    def problems(self) -> list[str]:
        problems = []
        if not (Path(self.model_checkpoint) / "distill.json").is_file():
            problems.append(f"--model-checkpoint: {self.model_checkpoint} has no distill.json (train a model first)")
        problems += [f"--data-dir: {Path(self.data_dir) / f'{s}.jsonl'} is missing" for s in SPLITS
                     if not (Path(self.data_dir) / f"{s}.jsonl").is_file()]
        if self.calibration_method not in METHODS:
            problems.append(f"--calibration-method: one of {', '.join(METHODS)} (got {self.calibration_method!r})")
        if self.batch_size < 1:
            problems.append(f"--batch-size: must be at least 1 (got {self.batch_size})")
        return problems
