"""Scoring rules: weighted overall score, gatekeepers, caps, tiers — for all shipped filters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.filter_spec import load_filter
from distill.scoring import (
    overall_scores,
    score_record,
    tier_for,
    tier_minimums,
    tier_shift_problems,
    tiers_for,
    top_populated_tier,
)

SUST = load_filter("sustainability/v1")
UPLIFT = load_filter("uplifting/v1")
TECH = load_filter("sustainability_tech_deployment/v1")
ALL = [SUST, UPLIFT, TECH]


def uniform(spec, value, **overrides):
    scores = {d: float(value) for d in spec.dimension_names}
    scores.update(overrides)
    return scores


@pytest.mark.parametrize(
    "spec, scores, overall, tier, capped",
    [
        (SUST, uniform(SUST, 8), 8.0, "breakthrough", ()),
        (SUST, uniform(SUST, 7.5), 7.5, "breakthrough", ()),
        (SUST, uniform(SUST, 5), 5.0, "promising", ()),
        (SUST, uniform(SUST, 3), 3.0, "monitoring", ()),
        (SUST, uniform(SUST, 2.9), 2.9, "not_relevant", ()),
        # technical_credibility 4 < 5: capped at 4.0 although the weighted mean is 8.4
        (SUST, uniform(SUST, 9, technical_credibility=4), 4.0, "monitoring", ("technical_credibility",)),
        (SUST, uniform(SUST, 9, climate_impact_potential=1), 7.0, "promising", ()),
        (UPLIFT, uniform(UPLIFT, 8), 8.0, "impact", ()),
        (UPLIFT, uniform(UPLIFT, 8, collective_benefit=4, wonder=6), 3.0, "not_uplifting",
         ("collective_benefit",)),
        # wonder >= 7 lifts the collective_benefit gatekeeper
        (UPLIFT, uniform(UPLIFT, 8, collective_benefit=4), 6.48, "connection", ()),
        (UPLIFT, uniform(UPLIFT, 7, collective_benefit=4), 5.86, "connection", ()),
        (TECH, uniform(TECH, 8, deployment_maturity=2), 2.9, "vaporware", ("deployment_maturity",)),
        (TECH, uniform(TECH, 8, technology_performance=2), 4.9, "pilot", ("technology_performance",)),
        (TECH, uniform(TECH, 6), 6.0, "early_commercial", ()),
        (TECH, uniform(TECH, 7), 7.0, "deployed", ()),
    ],
)
def test_table(spec, scores, overall, tier, capped):
    result = score_record(spec, scores)
    assert result.overall_score == pytest.approx(overall, abs=1e-9)
    assert result.tier == tier
    assert result.capped_by == capped


def test_content_type_cap():
    result = score_record(TECH, uniform(TECH, 9), content_type="press_release")
    assert (result.overall_score, result.tier) == (6.0, "early_commercial")
    assert result.capped_by == ("content_type:press_release",)
    assert score_record(TECH, uniform(TECH, 9), content_type="news").overall_score == 9.0


def test_weights_are_normalised():
    doubled = replace(SUST, dimensions=tuple(replace(d, weight=d.weight * 2) for d in SUST.dimensions))
    scores = [3, 6, 7, 1, 9, 2, 5, 8]
    expected = sum(d.weight * s for d, s in zip(SUST.dimensions, scores, strict=True))
    assert score_record(doubled, scores).overall_score == pytest.approx(expected)
    assert score_record(SUST, scores).overall_score == pytest.approx(expected)


def test_sequence_and_mapping_agree_and_errors_are_clear():
    seq = [1, 6, 3, 4, 5, 6, 7, 8]
    mapping = dict(zip(SUST.dimension_names, seq, strict=True))
    assert score_record(SUST, seq) == score_record(SUST, mapping)
    with pytest.raises(KeyError, match="evidence_strength"):
        score_record(SUST, {k: v for k, v in mapping.items() if k != "evidence_strength"})
    with pytest.raises(ValueError, match="expected 8 scores"):
        score_record(SUST, seq[:3])


score_lists = st.lists(st.floats(0, 10, allow_nan=False), min_size=8, max_size=8)


@settings(max_examples=200, deadline=None)
@given(scores=score_lists, spec_index=st.integers(0, 2))
def test_overall_within_bounds_and_vectorised_matches(scores, spec_index):
    spec = ALL[spec_index]
    result = score_record(spec, scores)
    assert min(scores) - 1e-6 <= result.overall_score <= max(scores) + 1e-6 or result.capped_by
    assert 0 <= result.overall_score <= 10
    vector = overall_scores(spec, np.array([scores]))
    assert vector[0] == result.overall_score
    assert tiers_for(spec, vector) == [result.tier]


@settings(max_examples=200, deadline=None)
@given(scores=score_lists, dim=st.integers(0, 7), bump=st.floats(0, 10), spec_index=st.integers(0, 2))
def test_monotone_in_every_dimension(scores, dim, bump, spec_index):
    """Raising any one score never lowers the overall score or the tier."""
    spec = ALL[spec_index]
    higher = list(scores)
    higher[dim] = min(10.0, scores[dim] + bump)
    before, after = score_record(spec, scores), score_record(spec, higher)
    assert after.overall_score >= before.overall_score - 1e-9
    rank = {t.name: i for i, t in enumerate(reversed(spec.tiers))}
    assert rank[after.tier] >= rank[before.tier]


@settings(max_examples=100, deadline=None)
@given(overall=st.floats(-1, 11, allow_nan=False))
def test_tier_for_and_tiers_for_agree(overall):
    for spec in ALL:
        assert tiers_for(spec, np.array([overall])) == [tier_for(spec, overall)]
        shifts = {spec.tier_names[1]: 0.25}  # a valid operating point for every shipped filter
        assert tiers_for(spec, np.array([overall]), shifts) == [tier_for(spec, overall, shifts)]


def test_a_tier_shift_moves_only_its_own_boundary():
    shifts = {"promising": 0.25}
    assert tier_minimums(SUST, shifts) == {"breakthrough": 7.5, "promising": 4.75, "monitoring": 3.0,
                                           "not_relevant": 0.0}
    overall = np.array([7.5, 7.49, 5.0, 4.75, 4.749999, 3.0, 2.99])
    assert tiers_for(SUST, overall) == ["breakthrough", "promising", "promising", "monitoring", "monitoring",
                                        "monitoring", "not_relevant"]
    assert tiers_for(SUST, overall, shifts) == ["breakthrough", "promising", "promising", "promising",
                                                "monitoring", "monitoring", "not_relevant"]
    assert tiers_for(SUST, overall, {}) == tiers_for(SUST, overall) == tiers_for(SUST, overall, None)
    # a negative shift raises the boundary: fewer, surer promising articles
    assert tier_for(SUST, 5.1, {"promising": -0.2}) == "monitoring" and tier_for(SUST, 5.2, {"promising": -0.2}) == "promising"


def test_score_record_tiers_at_the_operating_point_but_keeps_the_overall_score():
    scores = uniform(SUST, 4.8, technical_credibility=5)  # at its gatekeeper: not capped
    plain, shifted = score_record(SUST, scores), score_record(SUST, scores, shifts={"promising": 0.25})
    assert (plain.tier, shifted.tier) == ("monitoring", "promising")
    assert plain.overall_score == shifted.overall_score == pytest.approx(4.84)
    # a gatekeeper-capped article (technical_credibility < 5 caps at 4.0) needs a shift of a whole point
    capped = uniform(SUST, 6, technical_credibility=4)
    assert score_record(SUST, capped, shifts={"promising": 0.99}).tier == "monitoring"
    assert score_record(SUST, capped, shifts={"promising": 1.0}).tier == "promising"


def test_tier_shift_problems_name_the_tier_and_the_fix():
    assert tier_shift_problems(SUST, {"promising": 1.5, "breakthrough": -1}) == []
    assert "not a tier of sustainability/v1" in tier_shift_problems(SUST, {"promisng": 0.2})[0]
    assert "lowest tier" in tier_shift_problems(SUST, {"not_relevant": 0.5})[0]
    crossing = tier_shift_problems(SUST, {"promising": 2.0})  # promising would start at 3.0, monitoring's minimum
    assert crossing and "promising would start at 3 and monitoring at 3" in crossing[0]
    with pytest.raises(ValueError, match="keep the tiers in order"):
        tiers_for(SUST, np.array([4.0]), {"monitoring": -5})
    with pytest.raises(ValueError, match="not a tier"):
        tier_for(SUST, 4.0, {"nope": 1})


def test_top_populated_tier_skips_empty_tiers_and_never_names_the_lowest():
    spec = ALL[0]
    names = spec.tier_names
    assert top_populated_tier(spec, dict.fromkeys(names, 3)) == names[0]
    assert top_populated_tier(spec, {names[0]: 0, names[1]: 2}) == names[1]
    assert top_populated_tier(spec, {names[-1]: 9}) is None
