"""Duplicate ids and near-duplicate texts.

A repeated id keeps its first record (file order, then line order) and reports
the rest. Near-duplicates (the same story syndicated with different ids,
punctuation or numbers) are not dropped: they are grouped so the split puts a
whole group in one split and the test split never holds a copy of a train
article.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

from distill.prepare.validate import Example
from distill.records import Reject

NEAR_DUP_METHOD = (
    "sha1 of the article body after NFKC, lowercasing and removing every "
    "non-letter (punctuation, whitespace, digits)"
)

_NON_LETTERS = re.compile(r"[\W\d_]+")


@dataclass(frozen=True)
class Duplicate:
    kept: Example
    dropped: Example

    def to_json(self) -> dict[str, str]:
        return {"id": self.kept.id, "kept": self.kept.source, "dropped": self.dropped.source}

    def to_reject(self) -> Reject:
        reason = f"duplicate id {self.kept.id!r}: first kept at {self.kept.source}"
        return Reject(self.dropped.path, self.dropped.line, reason, "")


def drop_duplicate_ids(examples: list[Example]) -> tuple[list[Example], list[Duplicate]]:
    """The first record of each id, and a report of every later one."""
    first: dict[str, Example] = {}
    duplicates: list[Duplicate] = []
    for example in examples:
        if example.id in first:
            duplicates.append(Duplicate(first[example.id], example))
        else:
            first[example.id] = example
    return list(first.values()), duplicates


def normalise(text: str) -> str:
    """Letters only, lowercased: syndicated copies differ in spacing, quotes, dates."""
    return _NON_LETTERS.sub("", unicodedata.normalize("NFKC", text).lower())


def near_duplicate_groups(examples: list[Example]) -> dict[str, str]:
    """Map each id to its group key: the smallest id among texts that normalise alike.

    A body with no letters at all is its own group, since an empty key would
    join unrelated articles.
    """
    by_hash: dict[str, list[str]] = defaultdict(list)
    for example in examples:
        norm = normalise(example.body)
        key = hashlib.sha1(norm.encode("utf-8")).hexdigest() if norm else "id:" + example.id
        by_hash[key].append(example.id)
    return {member: min(ids) for ids in by_hash.values() for member in ids}


def groups_of(group_key: dict[str, str]) -> list[list[str]]:
    """Groups with more than one member, each sorted, ordered by their key."""
    members: dict[str, list[str]] = defaultdict(list)
    for example_id, key in group_key.items():
        members[key].append(example_id)
    return [sorted(ids) for _, ids in sorted(members.items()) if len(ids) > 1]
