"""Any OpenAI-compatible chat endpoint (vLLM, Ollama, DeepSeek, OpenAI) via httpx.

The answer is requested as JSON through `response_format` (a JSON schema when
`supports_schema`, else plain JSON mode) and validated locally either way.
A key is optional (local servers need none): `needs_key` is False, and the run
passes OPENAI_API_KEY when it is set.
"""

from __future__ import annotations

import asyncio

import httpx

from distill.label.oracle.base import (
    AUTH,
    BAD_REQUEST,
    EMPTY,
    RATE_LIMITED,
    SERVER_ERROR,
    TRUNCATED,
    GenerationConfig,
    OracleFailure,
    OracleReply,
    parse_answer,
    parse_retry_delay,
    response_schema,
)
from distill.label.oracle.transport import TIMEOUT_GRACE_S, transport_failure

KEY_VARIABLE = "OPENAI_API_KEY"


class OpenAICompatOracle:
    name = "openai"
    needs_key = False
    key_variables = (KEY_VARIABLE,)
    key_help = "the endpoint's provider (local servers take none)"
    supports_schema = True
    supports_batch = False

    def __init__(
        self,
        config: GenerationConfig,
        dimensions: list[str],
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        use_schema: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = config
        self.dimensions = list(dimensions)
        self.timeout_s = timeout_s
        self.endpoint = base_url
        self.supports_schema = use_schema
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout_s, transport=transport
        )

    def _body(self, prompt: str) -> dict:
        if self.supports_schema:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "scores", "schema": response_schema(self.dimensions)},
            }
        else:
            response_format = {"type": "json_object"}
        return {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_output_tokens,
            "response_format": response_format,
        }

    async def score(self, prompt: str) -> OracleReply:
        try:
            response = await asyncio.wait_for(
                self._client.post("chat/completions", json=self._body(prompt)),
                self.timeout_s + TIMEOUT_GRACE_S,
            )
        except Exception as exc:
            failure = transport_failure(exc, self.timeout_s)
            if failure is None:
                raise
            raise failure from None
        if response.status_code != 200:
            raise _http_failure(response)
        try:
            body = response.json()
            choice = body["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise OracleFailure(SERVER_ERROR, "response is not a chat completion", True) from None
        usage = body.get("usage") or {}
        tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        if choice.get("finish_reason") == "length":
            raise OracleFailure(TRUNCATED, "answer cut at max_tokens (finish reason length)",
                                True, None, tokens_in, tokens_out)
        text = (choice.get("message") or {}).get("content")
        if not text:
            raise OracleFailure(EMPTY, "the answer was empty", True, None, tokens_in, tokens_out)
        return parse_answer(text, self.dimensions, tokens_in, tokens_out)

    async def aclose(self) -> None:
        await self._client.aclose()


def _http_failure(response: httpx.Response) -> OracleFailure:
    code = response.status_code
    message = response.text[:200]
    if code == 429:
        return OracleFailure(RATE_LIMITED, message, True, parse_retry_delay(response.headers.get("retry-after")))
    if code in (401, 403):
        return OracleFailure(AUTH, f"HTTP {code}: {message} (check {KEY_VARIABLE})", False)
    if code == 408 or code >= 500:
        return OracleFailure(SERVER_ERROR, f"HTTP {code}: {message}", True)
    return OracleFailure(BAD_REQUEST, f"HTTP {code}: {message}", False)
