"""Cheap rules that decide which articles are worth scoring at all.

The declarative rules in a filter's `prefilter:` section are compiled once.
An optional `prefilter.py` beside the config may define
`prefilter(article) -> str | None` (a block reason or None); it is trusted
code and runs as is, so only use filter packages from people you trust.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable

from distill.filter_spec import FilterSpec
from distill.records import Article

PASSED = "passed"


class Prefilter:
    def __init__(self, spec: FilterSpec):
        rules = spec.prefilter
        self.min_words = rules.min_words
        self.exclude = _compile(rules.exclude)
        self.require = _compile(rules.require)
        self.override = _compile(rules.override)
        self.hook = _load_hook(spec)

    def check(self, article: Article) -> str:
        """'passed', or the reason the article is blocked."""
        text = f"{article.title}\n{article.text}"
        if self.min_words and len(article.text.split()) < self.min_words:
            return f"too_short(<{self.min_words} words)"
        if not (self.override and self.override.search(text)):
            if self.exclude and (match := self.exclude.search(text)):
                return f"excluded({match.group(0)[:40]})"
            if self.require and not self.require.search(text):
                return "missing_required_topic"
        if self.hook is not None:
            reason = self.hook(article)
            if reason:
                return str(reason)
        return PASSED


def _compile(patterns: tuple[str, ...]) -> re.Pattern | None:
    # One alternation per list: a single regex scan per article, however many rules.
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def _load_hook(spec: FilterSpec) -> Callable[[Article], str | None] | None:
    path = spec.prefilter_hook
    if path is None:
        return None
    module_spec = importlib.util.spec_from_file_location(f"distill_prefilter_{spec.name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, "prefilter", None)
