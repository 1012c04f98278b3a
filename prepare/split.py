"""Group-aware split stratified by tier, with overall-score bins for small tiers.

Units are near-duplicate groups (mostly single articles), so a group never
spans splits. Each group is stratified by the rarest tier among its members.
A tier with fewer groups than there are splits cannot reach every split, so it
joins its neighbouring tier into one overall-score bin. Within a stratum the
groups are ordered by a hash of seed and group key, one goes to each split
first (so every tier with at least that many groups is in every split), and
the rest go to whichever split is furthest below its share.

Hash order (sha256 of seed and id, never a platform RNG or input order) makes
the split the same for a seed on any machine and for any input order.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from distill.filter_spec import FilterSpec
from distill.prepare.validate import Example
from distill.splits import SPLITS


def seeded_hash(seed: int, *parts: object) -> str:
    """A machine-independent sort key for deterministic shuffles."""
    return hashlib.sha256("\0".join(map(str, (seed, *parts))).encode()).hexdigest()


@dataclass(frozen=True)
class Group:
    tier: str  # the rarest tier among its members: what the group is stratified by
    members: list[Example]  # sorted by id

    @property
    def key(self) -> str:
        return self.members[0].id


@dataclass
class Stratum:
    tiers: list[str]  # filter order, highest first
    low: float  # overall-score bin [low, high)
    high: float
    groups: list[Group] = field(default_factory=list)
    per_split: dict[str, int] = field(default_factory=dict)  # examples

    @property
    def examples(self) -> int:
        return sum(len(g.members) for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "tiers": self.tiers,
            "overall_score_bin": [self.low, self.high],
            "groups": len(self.groups),
            "examples": self.examples,
            "per_split": self.per_split,
        }


def split_examples(
    examples: list[Example],
    group_key: dict[str, str],
    spec: FilterSpec,
    ratios: dict[str, float],
    seed: int,
) -> tuple[dict[str, list[Example]], list[Stratum]]:
    """Examples per split (each sorted by id) and the strata used."""
    strata = make_strata(examples, group_key, spec, sum(1 for r in ratios.values() if r > 0))
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for stratum in strata:
        for name, groups in allocate(stratum.groups, ratios, seed).items():
            members = [ex for group in groups for ex in group.members]
            splits[name] += members
            stratum.per_split[name] = len(members)
    return {name: sorted(rows, key=lambda ex: ex.id) for name, rows in splits.items()}, strata


def make_strata(
    examples: list[Example], group_key: dict[str, str], spec: FilterSpec, min_groups: int
) -> list[Stratum]:
    """One stratum per tier; a tier with under `min_groups` groups merges into a neighbour."""
    members: dict[str, list[Example]] = defaultdict(list)
    for example in sorted(examples, key=lambda ex: ex.id):
        members[group_key[example.id]].append(example)
    tier_count = Counter(ex.tier for ex in examples)
    order = spec.tier_names
    bounds = [10.0] + [t.min_score for t in spec.tiers]
    strata = [Stratum([t.name], t.min_score, bounds[i]) for i, t in enumerate(spec.tiers)]
    for key in sorted(members):
        group = members[key]
        rarest = min(group, key=lambda ex: (tier_count[ex.tier], order.index(ex.tier))).tier
        strata[order.index(rarest)].groups.append(Group(rarest, group))
    strata = [s for s in strata if s.groups]
    while len(strata) > 1:
        small = next((i for i, s in enumerate(strata) if len(s.groups) < min_groups), None)
        if small is None:
            break
        # The tier below is the usual neighbour; the lowest stratum merges upwards.
        upper, lower = (small, small + 1) if small + 1 < len(strata) else (small - 1, small)
        merged = Stratum(strata[upper].tiers + strata[lower].tiers, strata[lower].low, strata[upper].high)
        merged.groups = strata[upper].groups + strata[lower].groups
        strata[upper : lower + 1] = [merged]
    return strata


def allocate(groups: list[Group], ratios: dict[str, float], seed: int) -> dict[str, list[Group]]:
    """Deal one stratum's groups to the splits in hash order.

    Each tier of the stratum with a group for every split first sends one
    group to each (smallest share first, so a three-group tier still lands in
    val and test); every other group goes to the split furthest below its share.
    """
    active = [name for name in SPLITS if ratios[name] > 0]
    total = sum(len(g.members) for g in groups)
    target = {name: ratios[name] * total for name in active}
    out: dict[str, list[Group]] = {name: [] for name in SPLITS}
    size = dict.fromkeys(active, 0)
    ordered = sorted(groups, key=lambda g: seeded_hash(seed, "split", g.key))
    seeding = sorted(active, key=lambda name: (ratios[name], SPLITS.index(name)))
    tier_groups = Counter(g.tier for g in groups)
    seeded: Counter[str] = Counter()
    for group in ordered:
        if tier_groups[group.tier] >= len(seeding) and seeded[group.tier] < len(seeding):
            name = seeding[seeded[group.tier]]
            seeded[group.tier] += 1
        else:
            name = max(active, key=lambda n: (target[n] - size[n], -SPLITS.index(n)))
        out[name].append(group)
        size[name] += len(group.members)
    return out
