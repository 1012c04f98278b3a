"""`distill-bench active`: label-selection strategies simulated on real labels.

A labelled file stands in for the oracle. A fixed test split and a fixed
val split (ridge alphas) are held out once; the rest is the pool. Per seed,
every strategy starts from the same random `--start` labels and, in rounds
of `--step`, asks `distill.acquisition.Picker` (what `distill-label --select`
runs) for the next articles, scored by the students refitted on the labels
so far. The first student ranks the pool, the second is the second opinion
`uncertain` reads (default: frozen-MiniLM-embedding + ridge as the network,
word TF-IDF + ridge as the token ridge; `chars` is the character TF-IDF view
that `--select` uses without a student). Every round, every student is scored
on the test split with distill-evaluate's metrics.

TF-IDF vocabularies are fitted once on all texts (no labels: the same
features for every strategy and round), so a round costs a few ridge fits.
With `--finetune`, the chosen strategies' labels at the budget also train a
MiniLM student each (benchmarks/active_finetune.py; LoRA, or a full fine-tune
with `--finetune-full`), the model a user would ship, so the verdict is not
only the ridge stand-ins'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.acquisition import MIXED, STRATEGIES, Picker
from distill.settings import Settings

STUDENTS = ("minilm", "tfidf", "chars")
ALPHAS = {"minilm": (0.3, 1.0, 3.0, 10.0), "tfidf": (0.3, 1.0, 3.0, 10.0), "chars": (1.0, 3.0, 10.0)}
SHARED_DATA = Path("../shared/data/sustainability-v1/labelled.jsonl")


@dataclass
class ActiveSettings(Settings):
    data: Path = field(default=SHARED_DATA, metadata={"help": "labelled JSONL that stands in for the oracle"})
    filter: str = field(default="sustainability/v1", metadata={"help": "filter of the labels"})
    work: Path = field(default=Path("bench-work/active"), metadata={"help": "folder for the cached MiniLM embeddings"})
    strategies: tuple[str, ...] = field(default=STRATEGIES, metadata={"separator": ",", "help": "strategies to simulate, comma-separated"})
    students: tuple[str, ...] = field(default=("minilm", "tfidf"), metadata={"separator": ",", "help": (
        "fast students refitted each round (minilm, tfidf, chars): the first ranks the pool, the second is "
        "the second opinion; all are scored")})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"separator": ",", "help": "seeds (start set and random picks)"})
    start: int = field(default=1000, metadata={"help": "random labels every strategy starts from"})
    step: int = field(default=500, metadata={"help": "labels added per round"})
    budget: int = field(default=3000, metadata={"help": "labels at the last round"})
    test_size: int = field(default=1500, metadata={"help": "fixed held-out test articles"})
    val_size: int = field(default=500, metadata={"help": "fixed val articles (ridge alpha only)"})
    split_seed: int = field(default=42, metadata={"help": "seed of the fixed test / val split"})
    mix: str = field(default="", metadata={"help": (
        "shares of `mixed` to try instead of the default, e.g. rare=0.6,uncertain=0.2,random=0.2")})
    limit: int = field(default=0, metadata={"help": "use only the first N labelled articles (0: all; for quick checks)"})
    finetune: tuple[str, ...] = field(default=(), metadata={"separator": ",", "help": (
        "strategies whose labels at the budget also train a MiniLM student, scored on the test split "
        "(e.g. random,mixed; minutes per seed and strategy on a CPU; default none)")})
    finetune_epochs: int = field(default=2, metadata={"help": "epochs of each --finetune student"})
    finetune_tokens: int = field(default=128, metadata={"help": "input tokens of each --finetune student"})
    finetune_full: bool = field(default=False, metadata={"help": (
        "train every weight of each --finetune student (the shipped student's recipe, lr 1e-4) instead of a "
        "LoRA adapter (r16, lr 5e-4)")})

    def problems(self) -> list[str]:
        problems = []
        if not Path(self.data).is_file():
            problems.append(f"--data: {self.data}: no such file")
        problems += [f"--strategies: unknown {s!r} (choose from {', '.join(STRATEGIES)})"
                     for s in self.strategies if s not in STRATEGIES]
        problems += [f"--students: unknown {s!r} (choose from {', '.join(STUDENTS)})"
                     for s in self.students if s not in STUDENTS]
        if len(self.students) < 2 and any(s in ("uncertain", "mixed") for s in self.strategies):
            problems.append("--students: uncertain and mixed need two students (the second opinion)")
        try:
            self.shares()
        except ValueError as exc:
            problems.append(f"--mix: {exc}")
        problems += [f"--finetune: {s!r} is not among --strategies" for s in self.finetune if s not in self.strategies]
        if not self.seeds:
            problems.append("--seeds: give at least one seed")
        if not 0 < self.start <= self.budget or self.step < 1:
            problems.append("--start, --step, --budget: need 0 < start <= budget and step >= 1")
        return problems

    def shares(self) -> tuple[tuple[str, float], ...] | None:
        """--mix parsed to (component, share) pairs; None keeps the default mix."""
        if not self.mix:
            return None
        pairs = tuple((c.strip(), float(v)) for c, _, v in (item.partition("=") for item in self.mix.split(",")))
        if any(c not in ("random", "boundary", "uncertain", "rare") for c, _ in pairs) or \
                abs(sum(v for _, v in pairs) - 1) > 1e-6:
            raise ValueError(f"{self.mix!r}: give component=share pairs of random, boundary, uncertain, rare summing to 1")
        return pairs


@dataclass
class Data:
    spec: Any
    ids: list[str]
    texts: list[str]
    targets: np.ndarray
    features: dict[str, Any]  # student -> [N, F] features (sparse or dense)
    test: np.ndarray  # indices
    val: np.ndarray
    pool: np.ndarray


def load_data(settings: ActiveSettings) -> Data:
    from distill.benchmarks.active_data import embeddings, read_pool
    from distill.filter_spec import load_filter

    spec = load_filter(settings.filter)
    pool = read_pool(spec, Path(settings.data), settings.limit)
    order = np.random.default_rng(settings.split_seed).permutation(len(pool))
    test, val = order[:settings.test_size], order[settings.test_size:settings.test_size + settings.val_size]
    rest = order[settings.test_size + settings.val_size:]
    if len(rest) < settings.budget:
        raise ValueError(f"the pool holds {len(rest)} articles after test and val; --budget {settings.budget} needs more")
    features: dict[str, Any] = {}
    for student in settings.students:
        if student == "minilm":
            from distill.local_models import minilm_dir

            features[student] = embeddings(pool, spec, minilm_dir(), Path(settings.work))
        else:
            features[student] = _tfidf(pool.texts, student)
    return Data(spec, pool.ids, pool.texts, pool.targets, features, test, val, np.sort(rest))


def _tfidf(texts: list[str], view: str) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from distill.text_ridge import MAX_FEATURES, VIEWS

    kind = "words" if view == "tfidf" else "chars"
    vectorizer = TfidfVectorizer(min_df=2, max_features=MAX_FEATURES, sublinear_tf=True, **VIEWS[kind])
    return vectorizer.fit_transform(texts).tocsr()


def fit_predict(data: Data, student: str, labelled: np.ndarray) -> np.ndarray:
    """Scores [N, D] for every article from a ridge fitted on `labelled` (alpha on val MAE)."""
    from distill.ensemble import fit_ridge

    x = data.features[student]
    clip = lambda p: np.clip(p, 0.0, 10.0)  # noqa: E731
    _, ridge = fit_ridge(x[labelled], data.targets[labelled], x[data.val], data.targets[data.val],
                         ALPHAS[student], post=clip)
    return clip(ridge.predict(x))


def simulate(settings: ActiveSettings, data: Data, log=print,
             finals: dict[tuple[int, str], np.ndarray] | None = None) -> list[dict[str, Any]]:
    """One record per (seed, strategy, round): labels, rare labels, each student's test metrics.

    `finals`, when given, receives each (seed, strategy)'s labelled indices at the budget.
    """
    records = []
    for seed in settings.seeds:
        rng = np.random.default_rng(seed)
        start = np.sort(rng.choice(data.pool, size=settings.start, replace=False))
        for strategy in settings.strategies:
            began = time.perf_counter()
            run, labelled = _one_run(settings, data, seed, strategy, start)
            records += run
            if finals is not None:
                finals[seed, strategy] = labelled
            log(f"seed {seed} {strategy}: {time.perf_counter() - began:.1f} s")
    return records


def _one_run(settings, data: Data, seed: int, strategy: str, start: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    from collections import Counter

    from distill.evaluate.metrics import evaluate_predictions
    from distill.scoring import overall_scores, tiers_for

    spec, labelled, out = data.spec, start, []
    all_tiers = np.array(tiers_for(spec, overall_scores(spec, data.targets)))
    while True:
        predictions = {s: fit_predict(data, s, labelled) for s in settings.students}
        counts = Counter(all_tiers[labelled].tolist())
        out.append({"seed": seed, "strategy": strategy, "labels": len(labelled), "labelled_tiers": dict(counts),
                    "metrics": {s: _summary(evaluate_predictions(spec, p[data.test], data.targets[data.test]))
                                for s, p in predictions.items()}})
        if len(labelled) >= settings.budget:
            return out, labelled
        needed = min(settings.step, settings.budget - len(labelled))
        unlabelled = np.setdiff1d(data.pool, labelled)
        first, second = (predictions[s] for s in settings.students[:2]) if len(settings.students) > 1 else \
            (predictions[settings.students[0]], None)
        picker = Picker(spec, strategy, needed, seed, counts, settings.shares() if strategy == "mixed" else None)
        picker.add([data.ids[i] for i in unlabelled], unlabelled.tolist(), first[unlabelled],
                   None if second is None else second[unlabelled])
        labelled = np.sort(np.concatenate([labelled, [p.item for p in picker.picks()]]))


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the table needs from distill-evaluate's metrics."""
    return {"mae": metrics["mae"], "overall_mae": metrics["overall_mae"], "tier_accuracy": metrics["tiers"]["accuracy"],
            "per_tier": {t: {k: _finite(v[k]) for k in ("recall", "precision", "f1", "support")}
                         for t, v in metrics["tiers"]["per_tier"].items()}}


def _finite(value: float) -> float | None:
    """A tier with no test article has no recall: None, which JSON can hold and NaN cannot."""
    return None if value != value else value


def run_active(settings: ActiveSettings, plot_path: Path | None = None, log=print) -> Any:
    """The simulation as a BenchResult (rows: strategy x labels), plus its plot when a path is given."""
    from distill.benchmarks.active_report import columns, plot, rare_tier, table_rows, verdict
    from distill.benchmarks.common import BenchResult

    settings.validate()
    began = time.perf_counter()
    data = load_data(settings)
    finals: dict[tuple[int, str], np.ndarray] = {}
    records = simulate(settings, data, log, finals)
    finetuned = finetune_finals(settings, data, finals, log)
    students = tuple(settings.students)
    rare = rare_tier(data.spec, records, students[0])
    test_support = records[0]["metrics"][students[0]]["per_tier"][rare]["support"]
    notes = [
        f"{len(data.ids):,} labelled articles: fixed test {len(data.test):,} ({test_support} {rare}), val "
        f"{len(data.val):,} (ridge alpha only), pool {len(data.pool):,}; split seed {settings.split_seed}",
        f"seeds {', '.join(map(str, settings.seeds))}: each starts every strategy from the same {settings.start:,} "
        f"random labels, then adds {settings.step:,} a round; cells are means, ± the sd across seeds",
        f"mixed: {', '.join(f'{c} {v:.0%}' for c, v in settings.shares() or MIXED)}",
        f"students: {', '.join(students)} (first ranks the pool and is the MAE / tier columns; second is the "
        "second opinion of uncertain); TF-IDF features fitted once on all texts, no labels",
        *verdict(records, students, rare, settings.budget),
        *finetune_notes(finetuned, rare),
        f"{time.perf_counter() - began:.0f} s in all",
    ]
    if plot_path is not None:
        plot(records, students, rare, plot_path)
        notes.append(f"plot: {plot_path.name}")
    return BenchResult(name="active", title=f"label selection on {data.spec.id}: strategies against random",
                       columns=columns(students, rare), rows=table_rows(records, students, rare), notes=notes,
                       settings=settings.to_json() | {"records": records, "finetuned": finetuned})


def finetune_finals(settings: ActiveSettings, data: Data, finals: dict[tuple[int, str], np.ndarray],
                    log=print) -> list[dict[str, Any]]:
    """--finetune: one MiniLM student per (seed, strategy) on its labels at the budget."""
    from distill.benchmarks.active_finetune import FinetuneRecipe, finetune_and_score
    from distill.local_models import minilm_dir

    recipe = FinetuneRecipe(epochs=settings.finetune_epochs, max_length=settings.finetune_tokens,
                            full_finetune=settings.finetune_full)
    out = []
    for (seed, strategy), labelled in finals.items():
        if strategy not in settings.finetune:
            continue
        result = finetune_and_score(data, settings.filter, labelled, seed, recipe, str(minilm_dir()))
        out.append({"seed": seed, "strategy": strategy, "labels": len(labelled), "recipe": recipe.name,
                    "weights_format": result["weights_format"],
                    "seconds": result["seconds"], "metrics": _summary(result["metrics"])})
        log(f"seed {seed} {strategy}: {recipe.name} student on {len(labelled):,} labels in {result['seconds']:.0f} s")
    return out


def finetune_notes(finetuned: list[dict[str, Any]], rare: str) -> list[str]:
    """Per strategy: the fine-tuned students' test MAE and rare-tier F1; paired against random where both ran."""
    if not finetuned:
        return []
    by = {(r["seed"], r["strategy"]): r["metrics"] for r in finetuned}
    notes = []
    for strategy in dict.fromkeys(r["strategy"] for r in finetuned):
        seeds = [s for s, st in by if st == strategy]
        f1 = np.array([_nan(by[s, strategy]["per_tier"][rare]["f1"]) for s in seeds])
        mae = np.array([by[s, strategy]["mae"] for s in seeds])
        line = (f"{finetuned[0]['recipe']} student at the budget, {strategy}: MAE {_sd(mae)}, {rare} F1 {_sd(f1)} "
                f"(seeds {', '.join(map(str, seeds))})")
        paired = [s for s in seeds if (s, "random") in by]
        if strategy != "random" and paired:
            df1 = np.array([_nan(by[s, strategy]["per_tier"][rare]["f1"]) - _nan(by[s, "random"]["per_tier"][rare]["f1"])
                            for s in paired])
            dmae = np.array([by[s, strategy]["mae"] - by[s, "random"]["mae"] for s in paired])
            line += f"; paired - random: F1 {_sd(df1, signed=True)}, MAE {_sd(dmae, signed=True)}"
        notes.append(line)
    return notes


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _sd(values: np.ndarray, signed: bool = False) -> str:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():{'+' if signed else ''}.3f} ± {spread:.3f}"
