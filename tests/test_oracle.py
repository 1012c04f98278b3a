"""The oracle backends: Gemini through the real SDK against the fake server,
and the OpenAI-compatible backend through a real httpx client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from fake_gemini import API_VERSION, FakeGemini

from distill.errors import OracleError
from distill.label.oracle.base import Oracle, OracleFailure, key_from_env, parse_answer
from distill.label.oracle.gemini import GeminiOracle
from distill.label.oracle.openai_compat import OpenAICompatOracle
from distill.label.oracle.transport import transport_failure

DIMS = ["alpha", "beta", "gamma"]


def gemini(fake: FakeGemini, model: str = "gemini-2.0-flash", timeout_s: float = 2.0) -> GeminiOracle:
    from distill.label.oracle.base import GenerationConfig

    return GeminiOracle(GenerationConfig(model, 0.0, 0, 256), DIMS, "test-key", timeout_s, fake.url, API_VERSION)


def attempt(oracle, prompt: str = "rate this"):
    async def go():
        try:
            return await oracle.score(prompt)
        except OracleFailure as failure:
            return failure
        finally:
            await oracle.aclose()

    return asyncio.run(go())


def test_backends_satisfy_the_protocol():
    with FakeGemini() as fake:
        oracle = gemini(fake)
        assert isinstance(oracle, Oracle)
        assert (oracle.needs_key, oracle.supports_schema, oracle.supports_batch) == (True, True, True)
    from distill.label.oracle.base import GenerationConfig

    other = OpenAICompatOracle(GenerationConfig("m"), DIMS, "http://127.0.0.1:1/v1")
    assert isinstance(other, Oracle) and not other.needs_key and not other.supports_batch


def test_gemini_sends_schema_and_config_and_parses_usage():
    with FakeGemini() as fake:
        reply = attempt(gemini(fake))
    assert set(reply.scores) == set(DIMS) and reply.input_tokens == 2 and reply.output_tokens > 0


@pytest.mark.parametrize(
    "fault, kind, retryable, billed",
    [("429", "rate_limited", True, False), ("500", "server_error", True, False),
     ("truncated", "truncated", True, True), ("malformed", "invalid_json", True, True),
     ("out_of_range", "out_of_range", True, True), ("missing", "missing_dimension", True, True),
     ("blocked", "blocked", False, True), ("empty", "empty", True, True)],
)
def test_gemini_failures_are_classified(fault, kind, retryable, billed):
    with FakeGemini(retry_delay_s=3.5) as fake:
        fake.script = [fault]
        failure = attempt(gemini(fake))
    assert isinstance(failure, OracleFailure)
    assert (failure.kind, failure.retryable) == (kind, retryable)
    assert (failure.output_tokens > 0) == billed  # answers that came back are paid for
    if fault == "429":
        assert failure.retry_after == 3.5


def test_gemini_timeout():
    with FakeGemini(slow_s=1.0) as fake:
        fake.script = ["slow"]
        failure = attempt(gemini(fake, timeout_s=0.2))
    assert failure.kind == "timeout" and failure.retryable


def test_gemini_unknown_model_is_not_retried():
    with FakeGemini() as fake:
        failure = attempt(gemini(fake, model="no-such-model"))
    assert failure.kind == "bad_request" and not failure.retryable


def test_api_key_from_env(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(OracleError, match="GEMINI_API_KEY"):
        key_from_env(GeminiOracle)
    monkeypatch.setenv("GOOGLE_API_KEY", "g")
    assert key_from_env(GeminiOracle) == "g"


def test_parse_answer_accepts_fenced_json_and_whole_floats():
    reply = parse_answer('```json\n{"alpha": 1, "beta": 2.0, "gamma": {"score": 3}}\n```', DIMS)
    assert reply.scores == {"alpha": 1, "beta": 2, "gamma": 3}
    for bad, kind in [('{"alpha": 1, "beta": 2.5, "gamma": 3}', "out_of_range"),
                      ('{"alpha": true, "beta": 2, "gamma": 3}', "out_of_range"),
                      ('{"alpha": -1, "beta": 2, "gamma": 3}', "out_of_range"),
                      ("[1, 2, 3]", "invalid_json"), ('{"alpha": 1', "invalid_json"), ("", "empty")]:
        with pytest.raises(OracleFailure) as info:
            parse_answer(bad, DIMS)
        assert info.value.kind == kind, bad


def openai_oracle(handler, **kwargs) -> OpenAICompatOracle:
    from distill.label.oracle.base import GenerationConfig

    return OpenAICompatOracle(GenerationConfig("qwen2.5-7b", 0.0, 0, 256), DIMS, "http://vllm.local/v1",
                              api_key="k", transport=httpx.MockTransport(handler), **kwargs)


def chat(content: str | None, finish: str = "stop") -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20}}


def test_openai_compat_request_and_reply():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"], seen["auth"] = str(request.url), request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json=chat(json.dumps({"alpha": 1, "beta": 2, "gamma": 3})))

    reply = attempt(openai_oracle(handler))
    assert reply.scores == {"alpha": 1, "beta": 2, "gamma": 3} and reply.input_tokens == 50
    assert seen["url"] == "http://vllm.local/v1/chat/completions" and seen["auth"] == "Bearer k"
    body = seen["body"]
    assert body["model"] == "qwen2.5-7b" and body["max_tokens"] == 256
    assert body["response_format"]["json_schema"]["schema"]["required"] == DIMS


@pytest.mark.parametrize(
    "response, kind",
    [(httpx.Response(429, headers={"retry-after": "4"}, text="slow"), "rate_limited"),
     (httpx.Response(503, text="down"), "server_error"),
     (httpx.Response(401, text="no"), "auth"),
     (httpx.Response(200, json=chat('{"alpha": 1, "be', "length")), "truncated"),
     (httpx.Response(200, json=chat('{"alpha": 1, "beta": 22, "gamma": 3}')), "out_of_range"),
     (httpx.Response(200, json=chat(None)), "empty")],
)
def test_openai_compat_failures(response, kind):
    failure = attempt(openai_oracle(lambda request: response))
    assert isinstance(failure, OracleFailure) and failure.kind == kind
    if kind == "rate_limited":
        assert failure.retry_after == 4.0


def test_help_imports_neither_torch_nor_genai():
    code = ("import sys; from distill.label.cli import command; from click.testing import CliRunner; "
            "r = CliRunner().invoke(command, ['--help']); assert r.exit_code == 0, r.output; "
            "bad = [m for m in ('torch', 'google.genai', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- transport errors, raised for real through the real SDK ------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sdk_error(base_url: str, timeout_s: float = 2.0) -> BaseException:
    """What google-genai's async client itself raises for one call to `base_url`."""
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(
        base_url=base_url, api_version=API_VERSION, timeout=int(timeout_s * 1000)))

    async def go() -> BaseException:
        try:
            await client.aio.models.generate_content(model="gemini-2.0-flash", contents="hi")
        except Exception as exc:
            return exc
        finally:
            await client.aio.aclose()
        raise AssertionError("the call to a dead endpoint succeeded")

    return asyncio.run(go())


class RudeServer:
    """Accepts connections, then hangs up at once ("cut") or never answers ("mute")."""

    def __init__(self, mode: str):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.mode = mode
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            if self.mode == "cut":
                conn.close()
            else:
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_the_sdks_own_error_for_a_refused_connection_is_a_connection_failure():
    """Fails when google-genai starts raising a transport error we do not classify
    (as happened when it moved from httpx to httpx2)."""
    exc = sdk_error(f"http://127.0.0.1:{closed_port()}")
    failure = transport_failure(exc, 2.0)
    assert failure is not None, f"{type(exc).__module__}.{type(exc).__qualname__} is not classified: {exc!r}"
    assert (failure.kind, failure.retryable) == ("connection", True)


@pytest.mark.parametrize("mode, kind", [("cut", "connection"), ("mute", "timeout")])
def test_the_sdks_own_errors_for_a_cut_or_silent_server_are_classified(mode, kind):
    server = RudeServer(mode)
    try:
        exc = sdk_error(server.url, timeout_s=0.3)
    finally:
        server.close()
    failure = transport_failure(exc, 0.3)
    assert failure is not None, f"{type(exc).__module__}.{type(exc).__qualname__} is not classified: {exc!r}"
    assert (failure.kind, failure.retryable) == (kind, True)


def test_gemini_and_openai_backends_report_a_closed_port_as_connection():
    from distill.label.oracle.base import GenerationConfig

    url = f"http://127.0.0.1:{closed_port()}"
    config = GenerationConfig("gemini-2.0-flash", 0.0, 0, 256)
    for oracle in (GeminiOracle(config, DIMS, "k", 2.0, url, API_VERSION),
                   OpenAICompatOracle(config, DIMS, url + "/v1", timeout_s=2.0)):
        failure = attempt(oracle)
        assert isinstance(failure, OracleFailure), failure
        assert (failure.kind, failure.retryable) == ("connection", True)
        assert oracle.endpoint.startswith(url)


def test_an_error_nobody_knows_is_not_classified():
    assert transport_failure(ValueError("a bug, not the network"), 1.0) is None


def test_a_backend_that_needs_no_key_runs_without_one(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert not OpenAICompatOracle.needs_key and key_from_env(OpenAICompatOracle) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    assert key_from_env(OpenAICompatOracle) == "sk-local"
