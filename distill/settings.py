"""One way to declare a stage's settings and turn them into flags.

A stage's settings are a dataclass deriving from `Settings`; each field's
metadata carries its `help` (and, where the flag is not `--field-name`, a
`flag`, `aliases`, `choices` or `argument`; a bool's `off_flag` where it is
not `--no-NAME`; a list's `separator` where one flag takes `a,b,c` instead
of being repeated). `options_from(cls)` builds the
click parameters from those fields, so a flag's help, default and type have
one home. Checking lives in `problems()`, inside the library: the CLI only
builds the dataclass and calls the stage, which calls `validate()`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any, TypeVar, Union

import click

from distill.errors import raise_settings_problems

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """Base of every `*Settings` dataclass: problems, validate, to_json."""

    def problems(self) -> list[str]:
        """Every problem with these settings, each naming the flag and the fix."""
        return []

    def validate(self) -> None:
        """Raise one ConfigError listing every problem, if there are any."""
        raise_settings_problems(self.problems())

    def to_json(self) -> dict[str, Any]:
        """The resolved settings as JSON-ready values, for the run's record."""
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def jsonable(value: Any) -> Any:
    """Paths as strings, tuples as lists, recursively; other values as they are."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def flag_of(f: Field) -> str:
    """The flag a settings field is set by (`--field-name` unless metadata says)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def help_of(cls: type, name: str) -> str:
    """The help text of one field of a settings class."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


def options_from(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable[[F], F]:
    """A decorator adding one click parameter per field of `cls` (in field order).

    Fields with `metadata={"cli": False}` and those named in `exclude` get no flag.
    """
    hints = typing.get_type_hints(cls)
    chosen = [f for f in fields(cls) if f.name not in exclude and f.metadata.get("cli", True)]
    decorators = [_parameter(f, hints[f.name]) for f in chosen]

    def decorate(function: F) -> F:
        # click lists parameters in the reverse of decoration order
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


def _parameter(f: Field, hint: Any) -> Callable[[F], F]:
    kind, optional = _unwrap_optional(hint)
    container = typing.get_origin(kind) if typing.get_origin(kind) in (list, tuple) else None
    if container is not None:
        kind = typing.get_args(kind)[0]
    click_type = _click_type(f, kind)
    required = f.default is MISSING and f.default_factory is MISSING
    if f.metadata.get("argument"):
        return click.argument(f.name, type=click_type, nargs=-1 if container else 1, required=required,
                              callback=_as(container) if container else None)
    attrs: dict[str, Any] = {"help": f.metadata["help"], "required": required}
    if not required:
        attrs["default"] = f.default_factory() if f.default is MISSING else f.default
        # A factory's default is the machine's (e.g. its cores): the help text says it.
        attrs["show_default"] = f.default is not MISSING and attrs["default"] not in (None, (), [])
    flag = flag_of(f)
    if container is not None and f.metadata.get("separator"):
        return _separated_option(f, flag, click_type, container, attrs)
    if container is not None:
        attrs.update(multiple=True, callback=_as(container))
        attrs.setdefault("default", ())
    if kind is bool and not optional:
        off = f.metadata.get("off_flag") or f"--no-{flag[2:]}"
        attrs["show_default"] = False  # the flag pair already says it
        return click.option(*f.metadata.get("aliases", ()), f"{flag}/{off}", f.name, **attrs)
    return click.option(*f.metadata.get("aliases", ()), flag, f.name, type=click_type, **attrs)


def _as(container: type) -> Callable[..., Any]:
    """A click callback giving a repeated flag's values as the field's list or tuple."""
    return lambda _ctx, _param, value: container(value)


def _separated_option(f: Field, flag: str, item_type: Any, container: type, attrs: dict[str, Any]) -> Callable[[F], F]:
    """One flag taking `a,b,c` (split on the field's `separator`) for a list or tuple field."""
    separator, convert = f.metadata["separator"], click.types.convert_type(item_type).convert

    def split(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        items = [item.strip() for item in (value or "").split(separator)]
        return container(convert(item, param, ctx) for item in items if item)

    if "default" in attrs:
        attrs["default"] = separator.join(map(str, attrs["default"])) if attrs["default"] is not None else None
    return click.option(*f.metadata.get("aliases", ()), flag, f.name, type=str, callback=split, **attrs)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _click_type(f: Field, kind: Any) -> Any:
    choices = f.metadata.get("choices")
    if choices is None and typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
    if choices is not None:
        return click.Choice([str(c) for c in choices])
    if kind is Path:
        return click.Path(path_type=Path)
    if kind in (int, float, str, bool):
        return kind
    raise TypeError(f"{f.name}: no click type for {kind!r}; add metadata 'choices' or use int/float/str/Path")
