"""Filter packages: every shipped filter loads; every bad config gets one clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from distill.errors import ConfigError
from distill.filter_spec import PROMPT_PLACEHOLDER, list_builtin_filters, load_filter

SHIPPED = ["sustainability/v1", "sustainability_tech_deployment/v1", "uplifting/v1"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_filter_loads_by_name(name):
    spec = load_filter(name)
    assert spec.id == name
    assert len(spec.dimensions) == 8
    assert PROMPT_PLACEHOLDER in spec.prompt
    # the prompt asks for every dimension by name in its JSON answer
    for dim in spec.dimension_names:
        assert f'"{dim}"' in spec.prompt
    assert [t.min_score for t in spec.tiers] == sorted((t.min_score for t in spec.tiers), reverse=True)


def test_every_shipped_filter_is_listed():
    assert list_builtin_filters() == sorted(SHIPPED)


def test_bare_name_picks_newest_version_and_path_works():
    by_name = load_filter("sustainability")
    by_path = load_filter(by_name.path)
    assert by_name.id == "sustainability/v1"
    assert by_path.config_hash == by_name.config_hash


def test_sustainability_matches_the_issue():
    spec = load_filter("sustainability/v1")
    weights = {d.name: d.weight for d in spec.dimensions}
    assert weights["climate_impact_potential"] == 0.25
    assert weights["technical_credibility"] == 0.20
    gk = next(d.gatekeeper for d in spec.dimensions if d.name == "technical_credibility")
    assert (gk.threshold, gk.cap) == (5, 4.0)
    assert [(t.name, t.min_score) for t in spec.tiers] == [
        ("breakthrough", 7.5), ("promising", 5.0), ("monitoring", 3.0), ("not_relevant", 0.0)]


def test_unknown_filter_lists_shipped_ones():
    with pytest.raises(ConfigError, match="sustainability/v1"):
        load_filter("no_such_filter")


def _broken_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "f" / "v1"
    shutil.copytree(load_filter("sustainability/v1").path, folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    edit(config)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("tiers"), "key 'tiers' is missing"),
        (lambda c: c.pop("dimensions"), "key 'dimensions' is missing"),
        (lambda c: c.update(version="one"), "key 'version' must be a whole number"),
        (lambda c: c["dimensions"][0].update(weight=0), "dimensions.climate_impact_potential.weight"),
        (lambda c: c["dimensions"][2].update(weight=-1), "must be a positive number"),
        (lambda c: c.update(tiers={"a": 3.0, "b": 5.0, "c": 0.0}), "highest minimum to the lowest"),
        (lambda c: c.update(tiers={"a": 5.0, "b": 1.0}), "lowest tier must have minimum 0"),
        (lambda c: c["dimensions"][1].update(
            gatekeeper={"threshold": 5, "cap": 4, "unless": {"dimension": "nope", "min": 7}}),
         "unknown dimension 'nope'"),
        (lambda c: c["dimensions"][1].update(gatekeeper={"threshold": 12, "cap": 4}), "threshold"),
        (lambda c: c["oracle"].update(temperature="hot"), "oracle.temperature"),
        (lambda c: c["oracle"].update(modle="x"), "oracle.modle: unknown key"),
        (lambda c: c["prefilter"].update(exclude=["(unclosed"]), "bad regex"),
        (lambda c: c["truncation"].update(head_share=1.5), "truncation.head_share"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, edit, message):
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    assert str(folder / "config.yaml") in str(info.value)
    assert message in str(info.value)


def test_all_problems_reported_at_once(tmp_path):
    def edit(c):
        c["dimensions"][0]["weight"] = 0
        c.pop("tiers")
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(ConfigError, match=r"2 problem\(s\)"):
        load_filter(folder)


def test_prompt_without_placeholder(tmp_path):
    folder = _broken_copy(tmp_path, lambda c: None)
    (folder / "prompt.md").write_text("Rate this article.")
    with pytest.raises(ConfigError, match=r"prompt.md: no \{article\} placeholder"):
        load_filter(folder)


def test_invalid_yaml_is_one_clear_error(tmp_path):
    folder = _broken_copy(tmp_path, lambda c: None)
    (folder / "config.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_filter(folder)


def test_config_hash_changes_with_content(tmp_path):
    folder = _broken_copy(tmp_path, lambda c: c["dimensions"][0].update(weight=0.3))
    assert load_filter(folder).config_hash != load_filter("sustainability/v1").config_hash
