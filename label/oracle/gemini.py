"""Gemini through the google-genai SDK (google-generativeai reached end of life).

The SDK's own retries are turned off (`retry_options` with one attempt): the
label runner owns retries, backoff and the journal, so every attempt is seen
and recorded once. Without `retry_options` the SDK is not quiet: over aiohttp
(used whenever aiohttp is installed, e.g. by ray[serve]) it sleeps 1-10 s and
retries a refused connection on its own, past our timeout.
Every request goes through `_send`, so whatever the SDK raises comes out as an
`OracleFailure` (HTTP errors by status, transport errors by
`distill.label.oracle.transport`) or, if nobody knows it, unchanged for the runner
to stop on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from distill.label.oracle.base import (
    AUTH,
    BAD_REQUEST,
    BLOCKED,
    EMPTY,
    RATE_LIMITED,
    SERVER_ERROR,
    TRUNCATED,
    BatchStatus,
    GenerationConfig,
    OracleFailure,
    OracleReply,
    parse_answer,
    parse_retry_delay,
    response_schema,
)
from distill.label.oracle.transport import TIMEOUT_GRACE_S, transport_failure

_BLOCKING_FINISH = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
DEFAULT_ENDPOINT = "https://generativelanguage.googleapis.com"
T = TypeVar("T")


class GeminiOracle:
    name = "gemini"
    needs_key = True
    key_variables = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    key_help = "https://aistudio.google.com/apikey"
    supports_schema = True
    supports_batch = True

    def __init__(
        self,
        config: GenerationConfig,
        dimensions: list[str],
        api_key: str,
        timeout_s: float = 60.0,
        base_url: str | None = None,
        api_version: str | None = None,
    ):
        self.config = config
        self.dimensions = list(dimensions)
        self.timeout_s = timeout_s
        self.endpoint = base_url or DEFAULT_ENDPOINT
        options = types.HttpOptions(
            base_url=base_url, api_version=api_version, timeout=int(timeout_s * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key, http_options=options)

    def _generation_config(self) -> types.GenerateContentConfig:
        cfg = self.config
        thinking = None
        # Gemini 1.x/2.0 reject a thinking config; newer models take budget 0 as "off".
        if not cfg.model.startswith(("gemini-1", "gemini-2.0")):
            thinking = types.ThinkingConfig(thinking_budget=cfg.thinking_budget)
        return types.GenerateContentConfig(
            temperature=cfg.temperature,
            max_output_tokens=cfg.max_output_tokens,
            response_mime_type="application/json",
            response_schema=response_schema(self.dimensions) if self.supports_schema else None,
            thinking_config=thinking,
        )

    async def _send(self, request: Awaitable[T]) -> T:
        """Await one SDK request; a failure we know comes out as an OracleFailure."""
        try:
            return await asyncio.wait_for(request, timeout=self.timeout_s + TIMEOUT_GRACE_S)
        except genai_errors.APIError as exc:
            raise api_failure(exc) from None
        except genai_errors.UnknownApiResponseError as exc:
            raise OracleFailure(SERVER_ERROR, f"unreadable response: {str(exc)[:120]}", True) from None
        except Exception as exc:
            failure = transport_failure(exc, self.timeout_s)
            if failure is None:
                raise
            raise failure from None

    async def score(self, prompt: str) -> OracleReply:
        response = await self._send(self._client.aio.models.generate_content(
            model=self.config.model, contents=prompt, config=self._generation_config()))
        return reply_from_response(response, self.dimensions)

    async def submit_batch(self, requests: list[tuple[str, str]], display_name: str) -> str:
        """Submit (key, prompt) pairs as one inline batch job; returns the job name."""
        inlined = [
            types.InlinedRequest(
                contents=prompt, config=self._generation_config(), metadata={"key": key}
            )
            for key, prompt in requests
        ]
        job = await self._send(self._client.aio.batches.create(
            model=self.config.model, src=inlined, config={"display_name": display_name}))
        return job.name

    async def batch_status(self, name: str) -> BatchStatus:
        job = await self._send(self._client.aio.batches.get(name=name))
        return BatchStatus(name, _state_name(job.state))

    async def batch_results(self, name: str) -> dict[str, OracleReply | OracleFailure]:
        """Results joined by the key each request carried, never by position."""
        job = await self._send(self._client.aio.batches.get(name=name))
        results: dict[str, OracleReply | OracleFailure] = {}
        for item in (job.dest.inlined_responses if job.dest else None) or []:
            key = (item.metadata or {}).get("key")
            if key is None:
                continue
            if item.error is not None or item.response is None:
                results[key] = OracleFailure(SERVER_ERROR, f"batch item failed: {item.error}", True)
                continue
            try:
                results[key] = reply_from_response(item.response, self.dimensions)
            except OracleFailure as failure:
                results[key] = failure
        return results

    async def aclose(self) -> None:
        await self._client.aio.aclose()


def _state_name(state: Any) -> str:
    text = getattr(state, "value", None) or str(state)
    for prefix in ("JOB_STATE_", "BATCH_STATE_"):
        text = text.removeprefix(prefix)
    return text


def reply_from_response(response: types.GenerateContentResponse, dimensions: list[str]) -> OracleReply:
    usage = response.usage_metadata
    input_tokens = (usage.prompt_token_count or 0) if usage else 0
    output_tokens = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)) if usage else 0
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise OracleFailure(BLOCKED, f"prompt blocked ({_state_name(feedback.block_reason)})",
                            False, None, input_tokens, output_tokens)
    if not response.candidates:
        raise OracleFailure(EMPTY, "no candidates in the answer", True, None, input_tokens, output_tokens)
    candidate = response.candidates[0]
    finish = _state_name(candidate.finish_reason) if candidate.finish_reason else ""
    if finish == "MAX_TOKENS":
        raise OracleFailure(TRUNCATED, "answer cut at max_output_tokens (finish reason MAX_TOKENS)",
                            True, None, input_tokens, output_tokens)
    if finish in _BLOCKING_FINISH:
        raise OracleFailure(BLOCKED, f"answer blocked (finish reason {finish})",
                            False, None, input_tokens, output_tokens)
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    return parse_answer(text, dimensions, input_tokens, output_tokens)


def api_failure(exc: genai_errors.APIError) -> OracleFailure:
    code = exc.code or 0
    message = (exc.message or exc.status or "")[:200]
    if code == 429:
        return OracleFailure(RATE_LIMITED, message, True, _retry_delay(exc))
    if code in (401, 403):
        return OracleFailure(AUTH, f"HTTP {code}: {message} (check GEMINI_API_KEY)", False)
    if code == 408 or code >= 500:
        return OracleFailure(SERVER_ERROR, f"HTTP {code}: {message}", True, _retry_delay(exc))
    return OracleFailure(BAD_REQUEST, f"HTTP {code}: {message}", False)


def _retry_delay(exc: genai_errors.APIError) -> float | None:
    """RetryInfo.retryDelay in the error details, else a Retry-After header."""
    details = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else {}
    for item in details.get("details", []) if isinstance(details, dict) else []:
        if isinstance(item, dict) and "retryDelay" in item:
            return parse_retry_delay(item["retryDelay"])
    headers = getattr(exc.response, "headers", None) or {}
    return parse_retry_delay(headers.get("retry-after"))
