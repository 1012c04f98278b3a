from __future__ import annotations

from distill.filter_spec import load_filter
from distill.prefilter import PASSED, Prefilter
from distill.records import Article

LONG = " ".join(["word"] * 60)


def test_sustainability_rules():
    pre = Prefilter(load_filter("sustainability/v1"))
    assert pre.check(Article("1", "Short text.")) .startswith("too_short")
    assert pre.check(Article("2", LONG, title="Box office record")).startswith("excluded")
    # override wins over exclude
    assert pre.check(Article("3", LONG + " solar", title="Box office record")) == PASSED
    assert pre.check(Article("4", LONG)) == PASSED


def test_require_rule_and_trusted_hook():
    pre = Prefilter(load_filter("sustainability_tech_deployment/v1"))
    assert pre.check(Article("1", LONG)) == "missing_required_topic"
    assert pre.check(Article("2", LONG + " battery storage")) == PASSED
    assert pre.check(Article("3", LONG + " battery", title="10 best solar panels")) == "shopping_guide"
