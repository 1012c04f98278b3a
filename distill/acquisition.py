"""Which unlabelled articles are worth an oracle call: the label-selection strategies.

The oracle is the only cost, and random sampling finds the rare top tiers
least. Given a predictor's scores for the unlabelled pool (and, for
`uncertain`, a second opinion), each strategy ranks the pool:

- `random`: a seeded hash of the id (what `--random-sample` does);
- `boundary`: predicted overall nearest a tier threshold, or a gatekeeper
  dimension nearest its threshold where the gate decides the tier;
- `uncertain`: the two predictors disagree most on the overall score;
- `rare`: highest predicted overall first (the rare tiers sit at the top),
  with `RARE_EXPLORE` of the picks random, so a predictor that has never seen
  a rare article cannot keep the run away from them;
- `mixed`: a fixed share of picks from each of the above (MIXED).

`Picker` streams the pool in chunks and keeps, per component, only the
`needed` best: memory stays bounded however large the pool. Picks are
deterministic for a seed and predictions, and interleaved by share, so a run
stopped early by its budget still holds the mix. Both `distill-label --select`
and `distill-bench active` call this module, so the simulation measures what
the command does.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.filter_spec import FilterSpec
from distill.scoring import overall_scores, tiers_for

STRATEGIES = ("random", "boundary", "uncertain", "rare", "mixed")
RARE_EXPLORE = 0.2
# The default mix, chosen on `distill-bench active` (benchmarks/results/active-minilm.md): rare finds
# the rare tier, uncertain and a random share keep the overall MAE from drifting; boundary added nothing.
MIXED = (("rare", 0.6), ("uncertain", 0.2), ("random", 0.2))
SHARES: dict[str, tuple[tuple[str, float], ...]] = {
    "random": (("random", 1.0),),
    "boundary": (("boundary", 1.0),),
    "uncertain": (("uncertain", 1.0),),
    "rare": (("rare", 1.0 - RARE_EXPLORE), ("random", RARE_EXPLORE)),
    "mixed": MIXED,
}


def needs_second_opinion(strategy: str) -> bool:
    return any(component == "uncertain" for component, _ in SHARES[strategy])


def seeded_rank(seed: int, article_id: str) -> int:
    """A reproducible random rank of an id; smaller ranks are picked first."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{article_id}".encode()).digest()[:8], "big")


def rare_tiers(spec: FilterSpec, counts: Mapping[str, int]) -> list[str]:
    """The tiers above the most common one in `counts` (the labels so far, or predictions)."""
    names = spec.tier_names
    common = max(names, key=lambda t: (counts.get(t, 0), -names.index(t))) if any(counts.values()) else names[-1]
    above = names[:names.index(common)]
    return above or names[:1]


@dataclass(frozen=True)
class Pick:
    id: str
    item: Any  # what the caller streamed in beside the id (an Article, an index)
    component: str  # the strategy component that chose it
    reason: str
    predicted_overall: float | None
    predicted_tier: str | None


class Picker:
    """The `needed` articles a strategy would send, from a pool streamed in chunks."""

    def __init__(self, spec: FilterSpec, strategy: str, needed: int, seed: int,
                 labelled_tiers: Mapping[str, int] | None = None,
                 shares: Sequence[tuple[str, float]] | None = None):
        """`shares` overrides the strategy's components (the simulation tries other mixes with it)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        self.spec, self.strategy, self.needed, self.seed = spec, strategy, max(0, needed), seed
        self.shares = tuple(shares) if shares else SHARES[strategy]
        unknown = [c for c, _ in self.shares if c not in SHARES or c == "mixed"]
        if unknown or abs(sum(share for _, share in self.shares) - 1) > 1e-6:
            raise ValueError(f"shares {self.shares}: components from random, boundary, uncertain, rare, summing to 1")
        self.labelled_tiers = Counter(labelled_tiers or {})
        self.predicted_tiers: Counter = Counter()
        self._heaps: dict[str, list] = {component: [] for component, _ in self.shares}
        self._thresholds = [t.min_score for t in spec.tiers if t.min_score > spec.tiers[-1].min_score]

    def add(self, ids: Sequence[str], items: Sequence[Any], predicted: np.ndarray | None,
            second: np.ndarray | None = None) -> None:
        """One chunk of the pool: ids, payloads and predicted scores [n, D] (0-10)."""
        if not ids or self.needed == 0:
            return
        overall = overall_scores(self.spec, predicted) if predicted is not None else None
        if overall is not None:
            self.predicted_tiers.update(tiers_for(self.spec, overall))
        facts = {"boundary": self._boundary(predicted, overall) if "boundary" in self._heaps else None,
                 "uncertain": self._disagreement(overall, second) if "uncertain" in self._heaps else None}
        for i, article_id in enumerate(ids):
            rank = seeded_rank(self.seed, article_id)
            info = (None if overall is None else float(overall[i]))
            for component, heap in self._heaps.items():
                priority, detail = self._priority(component, i, rank, overall, facts)
                entry = (priority, -rank, article_id, info, detail, items[i])
                if len(heap) < self.needed:
                    heapq.heappush(heap, entry)
                elif entry[:3] > heap[0][:3]:
                    heapq.heapreplace(heap, entry)

    def _priority(self, component: str, i: int, rank: int, overall, facts) -> tuple[float, Any]:
        if component == "random":
            return float(-rank), None
        if overall is None:
            raise ValueError(f"strategy {self.strategy!r} needs predicted scores")
        if component == "rare":
            return float(overall[i]), None
        if component == "boundary":
            distance, what = facts["boundary"][0][i], facts["boundary"][1][i]
            return -float(distance), what
        disagreement, other = facts["uncertain"][0][i], facts["uncertain"][1][i]
        return float(disagreement), float(other)

    def _boundary(self, predicted: np.ndarray, overall: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per article: the smallest distance to a tier threshold, or to a gatekeeper
        threshold where the weighted mean is above its cap (so the gate decides), and which."""
        candidates = [(np.abs(overall - t), f"tier {self._tier_at(t)} >= {t:g}") for t in self._thresholds]
        weights = np.array([d.weight for d in self.spec.dimensions])
        mean = np.asarray(predicted, dtype=float) @ (weights / weights.sum())
        for j, dim in enumerate(self.spec.dimensions):
            gate = dim.gatekeeper
            if gate is not None:
                distance = np.where(mean > gate.cap, np.abs(predicted[:, j] - gate.threshold), np.inf)
                candidates.append((distance, f"gatekeeper {dim.name} < {gate.threshold:g}"))
        stack = np.stack([c[0] for c in candidates])
        nearest = stack.argmin(axis=0)
        return stack.min(axis=0), [candidates[k][1] for k in nearest]

    def _tier_at(self, threshold: float) -> str:
        return next(t.name for t in self.spec.tiers if t.min_score == threshold)

    def _disagreement(self, overall: np.ndarray, second: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if second is None:
            raise ValueError(f"strategy {self.strategy!r} needs a second predictor to measure disagreement")
        other = overall_scores(self.spec, second)
        return np.abs(overall - other), other

    def picks(self) -> list[Pick]:
        """The picks, interleaved by share (each component's best first), with their reasons."""
        quotas = _quotas(self.shares, self.needed)
        ranked = {c: sorted(heap, reverse=True) for c, heap in self._heaps.items()}
        taken: set[str] = set()
        chosen: list[tuple[float, int, str, tuple]] = []
        order = [c for c, _ in self.shares]
        for k, component in enumerate(order):
            chosen += self._take(ranked[component], quotas[component], taken, component, k)
        for k, component in enumerate(order):  # a component that ran dry: the others fill its quota
            chosen += self._take(ranked[component], self.needed - len(chosen), taken, component, k)
        rare = set(rare_tiers(self.spec, self.labelled_tiers or self.predicted_tiers))
        chosen.sort(key=lambda c: (c[0], c[1]))
        return [self._pick(component, entry, rare) for _, _, component, entry in chosen]

    def _take(self, ranked: list, quota: int, taken: set[str], component: str, k: int) -> list:
        out = []
        for entry in ranked:
            if len(out) >= quota:
                break
            if entry[2] not in taken:
                taken.add(entry[2])
                out.append(entry)
        share = max(quota, 1)
        return [((i + 0.5) / share, k, component, entry) for i, entry in enumerate(out)]

    def _pick(self, component: str, entry: tuple, rare: set[str]) -> Pick:
        _, _, article_id, overall, detail, item = entry
        tier = None if overall is None else tiers_for(self.spec, np.array([overall]))[0]
        if component == "random":
            reason = f"random (seed {self.seed})" if self.strategy == "random" else "exploration: random share"
        elif component == "rare":
            reason = (f"rare: predicted {tier} ({overall:.2f})" if tier in rare
                      else f"rare: among the highest predicted overall ({overall:.2f}, {tier})")
        elif component == "boundary":
            reason = f"boundary: predicted overall {overall:.2f}, nearest {detail}"
        else:
            reason = f"uncertain: predicted overall {overall:.2f} vs {detail:.2f} from the second predictor"
        return Pick(article_id, item, component, reason, overall, tier)


def _quotas(shares: Sequence[tuple[str, float]], needed: int) -> dict[str, int]:
    """Whole picks per component summing to `needed`, by largest remainder (earlier wins ties)."""
    exact = [(c, share * needed) for c, share in shares]
    quotas = {c: int(x) for c, x in exact}
    left = needed - sum(quotas.values())
    for c, _ in sorted(exact, key=lambda cx: -(cx[1] - int(cx[1])))[:left]:
        quotas[c] += 1
    return quotas
