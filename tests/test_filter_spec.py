"""Filter packages: every shipped filter loads; every bad config gets one clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from distill.errors import ConfigError
from distill.filter_spec import NAME_PATTERN, PROMPT_PLACEHOLDER, list_builtin_filters, load_filter

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


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_filter_name_is_its_folder_name(name):
    spec = load_filter(name)
    assert NAME_PATTERN.fullmatch(spec.name)
    assert spec.path.parent.name == spec.name and spec.path.name == f"v{spec.version}"


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
        (lambda c: c["oracle"].update(modle="x"), "oracle: unknown key 'modle' (did you mean 'model'?)"),
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


def _renamed(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: _renamed(c, "truncation", "trunaction"),
         "unknown key 'trunaction' (did you mean 'truncation'?)"),
        (lambda c: c.update(colour="red"), "unknown key 'colour' (valid keys: name, version,"),
        (lambda c: _renamed(c["dimensions"][0], "weight", "wieght"),
         "dimensions.climate_impact_potential: unknown key 'wieght' (did you mean 'weight'?)"),
        (lambda c: _renamed(c["dimensions"][0], "name", "nmae"),
         "dimensions[0]: unknown key 'nmae' (did you mean 'name'?)"),
        (lambda c: _renamed(c["dimensions"][1]["gatekeeper"], "threshold", "treshold"),
         "dimensions.technical_credibility.gatekeeper: unknown key 'treshold' (did you mean 'threshold'?)"),
        (lambda c: c["dimensions"][1]["gatekeeper"].update(unless={"dimension": "evidence_strength", "mn": 7}),
         "dimensions.technical_credibility.gatekeeper.unless: unknown key 'mn' (did you mean 'min'?)"),
        (lambda c: c["dimensions"][1]["gatekeeper"].update(unless={"dimension": "evidence_strenght", "min": 7}),
         "unknown dimension 'evidence_strenght' (did you mean 'evidence_strength'?)"),
        (lambda c: _renamed(c["truncation"], "student_tokens", "student_token"),
         "truncation: unknown key 'student_token' (did you mean 'student_tokens'?)"),
        (lambda c: _renamed(c["oracle"], "thinking_budget", "thinking"),
         "oracle: unknown key 'thinking' (did you mean 'thinking_budget'?)"),
        (lambda c: _renamed(c["prefilter"], "exclude", "excludes"),
         "prefilter: unknown key 'excludes' (did you mean 'exclude'?)"),
        (lambda c: c.update(content_type_caps={"opinion": 12}),
         "content_type_caps.opinion: must be a number in 0..10, got 12"),
        (lambda c: c.update(content_type_caps=["opinion"]), "content_type_caps: must map a content type"),
        (lambda c: c.update(description=["a", "list"]), "description: must be text, got list"),
        (lambda c: c.update(version=0), "key 'version' must be a whole number >= 1, got 0"),
    ],
)
def test_unknown_or_wrong_key_at_every_level_is_reported(tmp_path, edit, message):
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    assert str(folder / "config.yaml") in str(info.value)
    assert message in str(info.value)


def test_misspelt_top_level_key_is_one_line_with_a_suggestion(tmp_path):
    """The issue's case: `trunaction:` used to be ignored and the defaults used."""
    folder = _broken_copy(tmp_path, lambda c: _renamed(c, "truncation", "trunaction"))
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    assert str(info.value) == f"{folder / 'config.yaml'}: unknown key 'trunaction' (did you mean 'truncation'?)"


def test_unknown_keys_are_never_silently_ignored_in_shipped_configs(tmp_path):
    """A typo anywhere in a real config is reported: each section's keys are checked."""
    def edit(c):
        _renamed(c, "truncation", "trunaction")
        _renamed(c["oracle"], "model", "modle")
        _renamed(c["prefilter"], "min_words", "min_word")
        _renamed(c["dimensions"][3], "description", "descripton")
    folder = _broken_copy(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'config.yaml'}: 4 problem(s):")
    for key in ("trunaction", "modle", "min_word", "descripton"):
        assert f"unknown key '{key}'" in message


def test_repeated_key_is_reported_with_its_line(tmp_path):
    folder = _broken_copy(tmp_path, lambda c: None)
    config = folder / "config.yaml"
    text = config.read_text()
    config.write_text(text + "truncation:\n  student_tokens: 64\n")
    line = len(text.splitlines()) + 1
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    assert str(info.value) == f"{config}: line {line}: key 'truncation' given twice (only the last would count); keep one"


@pytest.mark.parametrize("name", ["../../x", "a/b", "/tmp/x", "..", ".hidden", "Sustainability", "two words", "x" * 65, ""])
def test_filter_name_must_be_a_plain_name(tmp_path, name):
    folder = _broken_copy(tmp_path, lambda c: c.update(name=name))
    with pytest.raises(ConfigError) as info:
        load_filter(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'config.yaml'}: key 'name' must be a plain name (")
    assert f"got {name!r}" in message and "\n" not in message


def test_bad_name_suggests_a_plain_one(tmp_path):
    folder = _broken_copy(tmp_path, lambda c: c.update(name="../../Sus Tain"))
    with pytest.raises(ConfigError, match=r"got '\.\./\.\./Sus Tain' \(e\.g\. 'sus_tain'\)"):
        load_filter(folder)


@pytest.mark.parametrize("name", ["sustainability", "sustainability-strict", "tech_v2", "a"])
def test_plain_names_load(tmp_path, name):
    assert load_filter(_broken_copy(tmp_path, lambda c: c.update(name=name))).name == name


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
