"""Filter packages: load and validate `filters/<name>/v<N>/config.yaml` + `prompt.md`.

A filter is found by name (`sustainability/v1`, or `sustainability` for its
newest version) among the packages shipped in `distill.filters`, or by a path
to its version folder. Every problem in a config is collected and reported at
once, each naming the file and key. A key the loader does not know is an
error at every level (a typo would otherwise leave the default in force
unnoticed), reported with the closest valid key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from distill.errors import ConfigError, DistillError

PROMPT_PLACEHOLDER = "{article}"

# A filter's name becomes a folder (datasets/<name>/v<N>, models/<name>/...),
# so it must be one plain path part: no '/', no '..', no leading dot.
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
NAME_RULE = "lowercase letters, digits, '_' or '-', starting with a letter, at most 64 characters"

# The keys each part of config.yaml may hold; anything else is reported.
CONFIG_KEYS = (
    "name", "version", "description", "dimensions", "tiers",
    "content_type_caps", "truncation", "oracle", "prefilter",
)
DIMENSION_KEYS = ("name", "weight", "description", "gatekeeper")
GATEKEEPER_KEYS = ("threshold", "cap", "unless")
UNLESS_KEYS = ("dimension", "min")


@dataclass(frozen=True)
class Gatekeeper:
    """Below `threshold` on its dimension, the overall score is capped at `cap`,
    unless the `unless_dimension` reaches `unless_min`."""

    threshold: float
    cap: float
    unless_dimension: str | None = None
    unless_min: float | None = None


@dataclass(frozen=True)
class Dimension:
    name: str
    weight: float
    description: str = ""
    gatekeeper: Gatekeeper | None = None


@dataclass(frozen=True)
class Tier:
    name: str
    min_score: float


@dataclass(frozen=True)
class Truncation:
    oracle_words: int = field(default=800, metadata={"help": "words of the article sent to the oracle"})
    student_tokens: int = field(default=512, metadata={"help": "tokens of the article the student sees"})
    head_share: float = field(default=0.8, metadata={"help": "share of the budget kept from the start; the rest from the end"})


@dataclass(frozen=True)
class OracleSettings:
    model: str = field(default="gemini-2.0-flash", metadata={"help": "oracle model id"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature"})
    thinking_budget: int = field(default=0, metadata={"help": "thinking tokens (0 turns thinking off)"})
    max_output_tokens: int = field(default=1024, metadata={"help": "cap on the answer's tokens"})
    price_input_per_million: float = field(default=0.10, metadata={"help": "USD per 1M input tokens"})
    price_output_per_million: float = field(default=0.40, metadata={"help": "USD per 1M output tokens"})
    batch_discount: float = field(default=0.5, metadata={"help": "batch price as a share of the sync price"})


@dataclass(frozen=True)
class PrefilterRules:
    """Declarative prefilter: regexes are matched case-insensitively on title + text."""

    min_words: int = 0
    exclude: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    override: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilterSpec:
    name: str
    version: int
    description: str
    dimensions: tuple[Dimension, ...]
    tiers: tuple[Tier, ...]  # highest minimum first
    truncation: Truncation
    oracle: OracleSettings
    prefilter: PrefilterRules
    prompt: str
    path: Path
    content_type_caps: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}"

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @property
    def config_hash(self) -> str:
        """sha256 of the config and prompt as loaded: names a filter version exactly."""
        payload = json.dumps(
            {
                "config": asdict(self) | {"path": None, "prompt": None},
                "prompt": self.prompt,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()

    def render_prompt(self, article_text: str) -> str:
        return self.prompt.replace(PROMPT_PLACEHOLDER, article_text)

    @property
    def shipped_student(self) -> Path | None:
        """A trained student shipped inside the filter package (`student/`), if any."""
        folder = self.path / "student"
        return folder if (folder / "distill.json").is_file() else None

    @property
    def prefilter_hook(self) -> Path | None:
        """Optional `prefilter.py` beside the config: trusted code, run as is."""
        hook = self.path / "prefilter.py"
        return hook if hook.exists() else None


def builtin_filters_root() -> Path:
    return Path(str(resources.files("distill.filters")))


def list_builtin_filters() -> list[str]:
    """Every shipped filter as `name/vN`."""
    root = builtin_filters_root()
    return sorted(
        f"{cfg.parent.parent.name}/{cfg.parent.name}" for cfg in root.glob("*/v*/config.yaml")
    )


def resolve_filter_path(name_or_path: str | Path) -> Path:
    """A version folder from `name/vN`, a bare `name` (newest version) or a path."""
    candidate = Path(name_or_path)
    if (candidate / "config.yaml").is_file():
        return candidate
    if candidate.name == "config.yaml" and candidate.is_file():
        return candidate.parent
    root = builtin_filters_root()
    text = str(name_or_path).strip("/")
    if (root / text / "config.yaml").is_file():
        return root / text
    versions = sorted(
        (p for p in (root / text).glob("v*") if (p / "config.yaml").is_file()),
        key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else -1,
    )
    if versions:
        return versions[-1]
    known = ", ".join(list_builtin_filters()) or "none"
    raise ConfigError(
        f"filter {name_or_path!r} not found: not a folder with config.yaml, "
        f"nor a shipped filter (shipped: {known})"
    )


def installed_filter(name: str, version: int) -> FilterSpec | None:
    """Filter `name` v`version` as installed here, or None (a student trained on a filter
    from a folder elsewhere still loads; what needs its rules says it went without)."""
    try:
        return load_filter(f"{name}/v{version}")
    except DistillError:
        return None


def load_filter(name_or_path: str | Path) -> FilterSpec:
    """Load and validate a filter package; raises ConfigError listing every problem."""
    folder = resolve_filter_path(name_or_path)
    config_file = folder / "config.yaml"
    prompt_file = folder / "prompt.md"
    loader = _StrictLoader(config_file.read_text(encoding="utf-8"))
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_file}: expected a mapping at the top level")
    problems = list(loader.duplicates)
    if not prompt_file.is_file():
        problems.append(f"{prompt_file}: missing (every filter needs its oracle prompt)")
        prompt = ""
    else:
        prompt = prompt_file.read_text(encoding="utf-8")
        if PROMPT_PLACEHOLDER not in prompt:
            problems.append(f"{prompt_file}: no {PROMPT_PLACEHOLDER} placeholder for the article")
    spec = _build_spec(raw, folder, prompt, problems)
    _raise_problems(config_file, problems)
    return spec


def _raise_problems(config_file: Path, problems: list[str]) -> None:
    """One ConfigError naming the config file: one line for one problem, else a list."""
    if len(problems) == 1:
        problem = problems[0]
        if problem.startswith(str(config_file.with_name("prompt.md"))):  # names its own file
            raise ConfigError(problem)
        raise ConfigError(f"{config_file}: {problem}")
    if problems:
        raise ConfigError(
            f"{config_file}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records a repeated key: plain YAML keeps the last one silently."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # `<<` merges and complex keys are left to PyYAML
            key = self.construct_object(key_node)
            if key in seen:
                self.duplicates.append(
                    f"line {key_node.start_mark.line + 1}: key '{key}' given twice "
                    "(only the last would count); keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _unknown_keys(section: dict, known: Iterable[str], where: str, problems: list[str]) -> None:
    """One problem per key of `section` not in `known`, with the closest valid key."""
    known = list(known)
    prefix = f"{where}: " if where else ""
    for key in section:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
        problems.append(f"{prefix}unknown key '{key}' ({hint})")


def _build_spec(raw: dict, folder: Path, prompt: str, problems: list[str]) -> FilterSpec:
    def required(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            problems.append(f"key '{key}' is missing")
            return None
        if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            problems.append(f"key '{key}' must be {_kind_name(kind)}, got {type(raw[key]).__name__}")
            return None
        return raw[key]

    _unknown_keys(raw, CONFIG_KEYS, "", problems)
    name = _check_name(required("name", str), problems) or folder.parent.name
    version = required("version", int)
    if version is not None and version < 1:
        problems.append(f"key 'version' must be a whole number >= 1, got {version}")
    description = _text(raw, "description", "description", problems)
    dimensions = _parse_dimensions(required("dimensions", list) or [], problems)
    tiers = _parse_tiers(required("tiers", dict) or {}, problems)
    _check_unless_targets(dimensions, problems)
    return FilterSpec(
        name=name,
        version=version or 0,
        description=description,
        dimensions=tuple(dimensions),
        tiers=tuple(tiers),
        truncation=_parse_section(raw, "truncation", Truncation, problems),
        oracle=_parse_section(raw, "oracle", OracleSettings, problems),
        prefilter=_parse_prefilter(raw.get("prefilter"), problems),
        prompt=prompt,
        path=folder,
        content_type_caps=_parse_caps(raw.get("content_type_caps"), problems),
    )


def _check_unless_targets(dimensions: list[Dimension], problems: list[str]) -> None:
    """A gatekeeper's `unless` must name a dimension of this filter."""
    names = {d.name for d in dimensions}
    for dim in dimensions:
        gk = dim.gatekeeper
        if gk and gk.unless_dimension and gk.unless_dimension not in names:
            close = difflib.get_close_matches(gk.unless_dimension, sorted(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(
                f"dimensions.{dim.name}.gatekeeper.unless.dimension: unknown dimension "
                f"'{gk.unless_dimension}'{hint}"
            )


def _check_name(name: str | None, problems: list[str]) -> str | None:
    """The filter's name, if it is one plain folder name; else a problem and None."""
    if name is None or NAME_PATTERN.fullmatch(name):
        return name
    plain = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-")
    hint = f" (e.g. '{plain}')" if plain and NAME_PATTERN.fullmatch(plain) else ""
    problems.append(
        f"key 'name' must be a plain name ({NAME_RULE}): it names output folders, "
        f"got {name!r}{hint}"
    )
    return None


def _text(raw: dict, key: str, where: str, problems: list[str]) -> str:
    """An optional free-text field: a string (YAML `>` blocks included), stripped."""
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}: must be text, got {type(value).__name__}")
        return ""
    return value.strip()


def _parse_caps(raw: Any, problems: list[str]) -> dict[str, float]:
    """content_type_caps: content type (free name) -> cap on the overall score."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append("content_type_caps: must map a content type to a cap in 0..10")
        return {}
    caps: dict[str, float] = {}
    for kind, cap in raw.items():
        if not _is_number(cap) or not 0 <= cap <= 10:
            problems.append(f"content_type_caps.{kind}: must be a number in 0..10, got {cap!r}")
            continue
        caps[str(kind)] = float(cap)
    return caps


def _parse_dimensions(items: list, problems: list[str]) -> list[Dimension]:
    dimensions: list[Dimension] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        dim = _parse_dimension(item, f"dimensions[{i}]", problems)
        if dim is None:
            continue
        if dim.name in seen:
            problems.append(f"dimensions.{dim.name}: duplicate dimension name")
        seen.add(dim.name)
        dimensions.append(dim)
    if not dimensions and not any(p.startswith("key 'dimensions'") for p in problems):
        problems.append("dimensions: at least one dimension is needed")
    return dimensions


def _parse_dimension(item: Any, where: str, problems: list[str]) -> Dimension | None:
    """One entry of `dimensions`; `where` becomes dimensions.<name> once it has one."""
    if not isinstance(item, dict):
        problems.append(f"{where}: must be a mapping with 'name' and 'weight'")
        return None
    name = item.get("name")
    if isinstance(name, str):
        where = f"dimensions.{name}"
    _unknown_keys(item, DIMENSION_KEYS, where, problems)
    if not isinstance(name, str):
        problems.append(f"{where}: needs a 'name' (string)")
        return None
    weight = item.get("weight")
    if "weight" not in item:
        problems.append(f"{where}.weight: missing (a positive number)")
    elif not _is_number(weight) or weight <= 0:
        problems.append(f"{where}.weight: must be a positive number, got {weight!r}")
    return Dimension(
        name=name,
        weight=float(weight) if _is_number(weight) and weight > 0 else 1.0,
        description=_text(item, "description", f"{where}.description", problems),
        gatekeeper=_parse_gatekeeper(item.get("gatekeeper"), where, problems),
    )


def _parse_gatekeeper(raw: Any, where: str, problems: list[str]) -> Gatekeeper | None:
    if raw is None:
        return None
    where = f"{where}.gatekeeper"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with 'threshold' and 'cap'")
        return None
    _unknown_keys(raw, GATEKEEPER_KEYS, where, problems)
    threshold, cap = raw.get("threshold"), raw.get("cap")
    for key, value in (("threshold", threshold), ("cap", cap)):
        if not _is_number(value) or not 0 <= value <= 10:
            problems.append(f"{where}.{key}: must be a number in 0..10, got {value!r}")
    unless = raw.get("unless") or {}
    if isinstance(unless, dict):
        _unknown_keys(unless, UNLESS_KEYS, f"{where}.unless", problems)
    if unless and (
        not isinstance(unless, dict)
        or not isinstance(unless.get("dimension"), str)
        or not _is_number(unless.get("min"))
    ):
        problems.append(f"{where}.unless: must be {{dimension: <name>, min: <number>}}")
        unless = {}
    if not (_is_number(threshold) and _is_number(cap)):
        return None
    return Gatekeeper(
        threshold=float(threshold),
        cap=float(cap),
        unless_dimension=unless.get("dimension"),
        unless_min=float(unless["min"]) if unless else None,
    )


def _parse_tiers(raw: dict, problems: list[str]) -> list[Tier]:
    tiers: list[Tier] = []
    for name, minimum in raw.items():
        if not _is_number(minimum) or not 0 <= minimum <= 10:
            problems.append(f"tiers.{name}: minimum must be a number in 0..10, got {minimum!r}")
            continue
        tiers.append(Tier(str(name), float(minimum)))
    mins = [t.min_score for t in tiers]
    if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
        problems.append(
            "tiers: must be listed from the highest minimum to the lowest, each minimum "
            f"distinct; got {', '.join(f'{t.name}={t.min_score:g}' for t in tiers)}"
        )
    elif tiers and tiers[-1].min_score != 0:
        problems.append(f"tiers.{tiers[-1].name}: the lowest tier must have minimum 0")
    if raw and not tiers:
        problems.append("tiers: no valid tier")
    return tiers


def _parse_section(raw: dict, key: str, cls: type, problems: list[str]) -> Any:
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        problems.append(f"{key}: must be a mapping")
        return cls()
    known = cls.__dataclass_fields__
    _unknown_keys(section, known, key, problems)
    values = {}
    for name, value in section.items():
        if name not in known:
            continue
        default = known[name].default
        if isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = _is_number(value) and value >= 0
            if ok and isinstance(default, int) and not isinstance(default, bool):
                ok = float(value).is_integer()
                value = int(value)
        if not ok:
            problems.append(f"{key}.{name}: expected {type(default).__name__} >= 0, got {value!r}")
            continue
        values[name] = value
    if key == "truncation" and not 0 < values.get("head_share", 0.8) <= 1:
        problems.append("truncation.head_share: must be in (0, 1]")
    return cls(**values)


def _parse_prefilter(raw: Any, problems: list[str]) -> PrefilterRules:
    if raw is None:
        return PrefilterRules()
    if not isinstance(raw, dict):
        problems.append("prefilter: must be a mapping")
        return PrefilterRules()
    lists = {}
    for key in ("exclude", "require", "override"):
        patterns = raw.get(key) or []
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            problems.append(f"prefilter.{key}: must be a list of regex strings")
            patterns = []
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"prefilter.{key}: bad regex {pattern!r}: {exc}")
        lists[key] = tuple(patterns)
    _unknown_keys(raw, PrefilterRules.__dataclass_fields__, "prefilter", problems)
    min_words = raw.get("min_words", 0)
    if not isinstance(min_words, int) or min_words < 0:
        problems.append(f"prefilter.min_words: must be a whole number >= 0, got {min_words!r}")
        min_words = 0
    return PrefilterRules(min_words=min_words, **lists)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", list: "a list", dict: "a mapping"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
