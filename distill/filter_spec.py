"""Filter packages: load and validate `filters/<name>/v<N>/config.yaml` + `prompt.md`.

A filter is found by name (`sustainability/v1`, or `sustainability` for its
newest version) among the packages shipped in `distill.filters`, or by a path
to its version folder. Every problem in a config is collected and reported at
once, each naming the file and key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from distill.errors import ConfigError

PROMPT_PLACEHOLDER = "{article}"


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


def load_filter(name_or_path: str | Path) -> FilterSpec:
    """Load and validate a filter package; raises ConfigError listing every problem."""
    folder = resolve_filter_path(name_or_path)
    config_file = folder / "config.yaml"
    prompt_file = folder / "prompt.md"
    try:
        raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_file}: not valid YAML: {exc}") from None
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_file}: expected a mapping at the top level")
    if not prompt_file.is_file():
        problems.append(f"{prompt_file}: missing (every filter needs its oracle prompt)")
        prompt = ""
    else:
        prompt = prompt_file.read_text(encoding="utf-8")
        if PROMPT_PLACEHOLDER not in prompt:
            problems.append(f"{prompt_file}: no {PROMPT_PLACEHOLDER} placeholder for the article")
    spec = _build_spec(raw, folder, prompt, problems)
    if problems:
        raise ConfigError(
            f"{config_file}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    return spec


def _build_spec(raw: dict, folder: Path, prompt: str, problems: list[str]) -> FilterSpec:
    def required(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            problems.append(f"key '{key}' is missing")
            return None
        if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
            problems.append(f"key '{key}' must be {_kind_name(kind)}, got {type(raw[key]).__name__}")
            return None
        return raw[key]

    name = required("name", str) or folder.parent.name
    version = required("version", int) or 0
    description = raw.get("description", "") or ""
    dimensions = _parse_dimensions(required("dimensions", list) or [], problems)
    tiers = _parse_tiers(required("tiers", dict) or {}, problems)
    dim_names = {d.name for d in dimensions}
    for dim in dimensions:
        gk = dim.gatekeeper
        if gk and gk.unless_dimension and gk.unless_dimension not in dim_names:
            problems.append(
                f"dimensions.{dim.name}.gatekeeper.unless.dimension: unknown dimension "
                f"'{gk.unless_dimension}'"
            )
    caps = raw.get("content_type_caps") or {}
    if not isinstance(caps, dict) or not all(_is_number(v) for v in caps.values()):
        problems.append("content_type_caps: must map a content type to a numeric cap")
        caps = {}
    return FilterSpec(
        name=name,
        version=version,
        description=str(description).strip(),
        dimensions=tuple(dimensions),
        tiers=tuple(tiers),
        truncation=_parse_section(raw, "truncation", Truncation, problems),
        oracle=_parse_section(raw, "oracle", OracleSettings, problems),
        prefilter=_parse_prefilter(raw.get("prefilter"), problems),
        prompt=prompt,
        path=folder,
        content_type_caps={str(k): float(v) for k, v in caps.items()},
    )


def _parse_dimensions(items: list, problems: list[str]) -> list[Dimension]:
    dimensions: list[Dimension] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"dimensions[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"{where}: needs a 'name' (string)")
            continue
        name = item["name"]
        where = f"dimensions.{name}"
        if name in seen:
            problems.append(f"{where}: duplicate dimension name")
        seen.add(name)
        weight = item.get("weight")
        if not _is_number(weight) or weight <= 0:
            problems.append(f"{where}.weight: must be a positive number, got {weight!r}")
            weight = 1.0
        dimensions.append(
            Dimension(
                name=name,
                weight=float(weight),
                description=str(item.get("description", "")).strip(),
                gatekeeper=_parse_gatekeeper(item.get("gatekeeper"), where, problems),
            )
        )
    if not dimensions and not any(p.startswith("key 'dimensions'") for p in problems):
        problems.append("dimensions: at least one dimension is needed")
    return dimensions


def _parse_gatekeeper(raw: Any, where: str, problems: list[str]) -> Gatekeeper | None:
    if raw is None:
        return None
    where = f"{where}.gatekeeper"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with 'threshold' and 'cap'")
        return None
    threshold, cap = raw.get("threshold"), raw.get("cap")
    for key, value in (("threshold", threshold), ("cap", cap)):
        if not _is_number(value) or not 0 <= value <= 10:
            problems.append(f"{where}.{key}: must be a number in 0..10, got {value!r}")
    unless = raw.get("unless") or {}
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
    values = {}
    for name, value in section.items():
        if name not in known:
            problems.append(f"{key}.{name}: unknown key (known: {', '.join(known)})")
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
    unknown = set(raw) - {"exclude", "require", "override", "min_words"}
    if unknown:
        problems.append(f"prefilter: unknown key(s) {', '.join(sorted(unknown))}")
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
