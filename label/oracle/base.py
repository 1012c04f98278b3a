"""The oracle interface: one async method plus capability attributes.

A backend turns one rendered prompt into an `OracleReply` (validated scores,
token counts) or raises `OracleFailure` naming the kind of failure, whether a
retry could help and how long the server asked us to wait. Everything that
decides *what* a valid answer is lives here, so every backend validates the
same way: a missing or out-of-range dimension, truncated JSON, a blocked
prompt or an empty answer is a failed attempt, never a label.

The capability attributes are read where they matter: `needs_key` by
`key_from_env` (a missing key is an error only for a backend that needs one),
`supports_batch` by the settings check of `--batch`, `supports_schema` by the
backend when it builds a request.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from distill.errors import OracleError

# Failure kinds, as counted in the run summary and stored in the journal.
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
TRUNCATED = "truncated"
INVALID_JSON = "invalid_json"
MISSING_DIMENSION = "missing_dimension"
OUT_OF_RANGE = "out_of_range"
BLOCKED = "blocked"
EMPTY = "empty"
BAD_REQUEST = "bad_request"
AUTH = "auth"


@dataclass(frozen=True)
class GenerationConfig:
    """Everything about a call that changes the answer; part of the journal key."""

    model: str
    temperature: float = 0.0
    thinking_budget: int = 0  # 0: off
    max_output_tokens: int = 1024

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OracleReply:
    scores: dict[str, int]
    reasoning: str
    input_tokens: int
    output_tokens: int  # answer plus thinking tokens: both are billed as output


class OracleFailure(OracleError):
    """One failed attempt. `retryable` says whether the same call may succeed
    later; `retry_after` is the server's requested delay in seconds, if any.
    Tokens are kept because some failures (a truncated answer) are billed."""

    def __init__(
        self,
        kind: str,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


# Gemini Batch API job states (JOB_STATE_ / BATCH_STATE_ prefix dropped) after which a job no longer changes.
DONE_STATES = {"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED"}


@dataclass(frozen=True)
class BatchStatus:
    name: str
    state: str  # SUCCEEDED, RUNNING, ...

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


@runtime_checkable
class Oracle(Protocol):
    """A backend. `score` is the one method; the attributes say what it can do."""

    name: str  # the --llm backend name
    endpoint: str  # where calls go, so a failure to reach it can say where
    needs_key: bool  # a run without a key in `key_variables` stops before any call
    key_variables: tuple[str, ...]  # environment variables the key is read from, first set wins
    key_help: str  # where a key comes from, for the missing-key error
    supports_schema: bool  # the request constrains the answer to `response_schema`
    supports_batch: bool  # the backend is also a `BatchOracle`

    async def score(self, prompt: str) -> OracleReply: ...

    async def aclose(self) -> None: ...


class BatchOracle(Oracle, Protocol):
    """A backend with `supports_batch`: many prompts as one job, polled, then collected by key."""

    async def submit_batch(self, requests: list[tuple[str, str]], display_name: str) -> str: ...

    async def batch_status(self, name: str) -> BatchStatus: ...

    async def batch_results(self, name: str) -> dict[str, OracleReply | OracleFailure]: ...


# --llm backend name -> (module, class); a backend's module (and its SDK) is imported only when used.
BACKENDS = {
    "gemini": ("distill.label.oracle.gemini", "GeminiOracle"),
    "openai": ("distill.label.oracle.openai_compat", "OpenAICompatOracle"),
}


def backend_class(name: str) -> type[Oracle]:
    """The class of a backend named in BACKENDS, imported now."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def key_from_env(backend: type[Oracle] | Oracle) -> str | None:
    """The backend's API key: the first of its `key_variables` that is set. None
    where it has no key and `needs_key` is False; an OracleError saying how to
    get one where it needs one."""
    for name in backend.key_variables:
        if os.environ.get(name):
            return os.environ[name]
    if not backend.needs_key:
        return None
    first, *others = backend.key_variables
    also = f" (or {', '.join(others)})" if others else ""
    raise OracleError(
        f"no API key for the {backend.name} backend: set {first}{also} to a key from "
        f"{backend.key_help}, or run with --plan to estimate without one"
    )


def response_schema(dimensions: list[str]) -> dict[str, Any]:
    """JSON schema of the answer: one integer 0–10 per dimension, optional reasoning."""
    properties: dict[str, Any] = {
        name: {"type": "integer", "minimum": 0, "maximum": 10} for name in dimensions
    }
    properties["reasoning"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": list(dimensions)}


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)


def parse_answer(
    text: str | None, dimensions: list[str], input_tokens: int = 0, output_tokens: int = 0
) -> OracleReply:
    """Validate an answer locally, whatever the server promised about its schema."""

    def fail(kind: str, message: str) -> OracleFailure:
        return OracleFailure(kind, message, True, None, input_tokens, output_tokens)

    if text is None or not text.strip():
        raise fail(EMPTY, "the answer was empty")
    try:
        obj = json.loads(_FENCE.sub("", text))
    except json.JSONDecodeError as exc:
        raise fail(INVALID_JSON, f"answer is not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise fail(INVALID_JSON, "answer is not a JSON object")
    missing = [d for d in dimensions if d not in obj]
    if missing:
        raise fail(MISSING_DIMENSION, f"no score for {', '.join(missing)}")
    scores: dict[str, int] = {}
    for name in dimensions:
        value = obj[name]
        if isinstance(value, dict) and "score" in value:
            value = value["score"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
            raise fail(OUT_OF_RANGE, f"{name}={value!r} is not a whole number in 0..10")
        scores[name] = value
    reasoning = obj.get("reasoning")
    return OracleReply(
        scores=scores,
        reasoning=reasoning if isinstance(reasoning, str) else "",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def parse_retry_delay(value: Any) -> float | None:
    """'17s' / '0.5s' (google.rpc.RetryInfo) or a Retry-After number of seconds."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*s?\s*", str(value))
    return float(match.group(1)) if match else None
