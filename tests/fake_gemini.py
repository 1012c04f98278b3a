"""A fake Gemini HTTP server on 127.0.0.1 for the real google-genai SDK.

Runs in a thread of the test process. Point the SDK at it with
`http_options=HttpOptions(base_url=server.url, api_version=API_VERSION)`.
Answers follow the request's response schema (one integer per schema
property), derived from a hash of the prompt so the same prompt always gets
the same scores. Faults are injected per call, either from a script (the next
calls get these faults, in order), per prompt (any prompt containing a marker
always gets a fault), or at random with a seeded rate.

Faults: "429" (with a RetryInfo delay), "500", "slow" (answers after
`slow_s`, past the client's timeout), "malformed" (not JSON), "truncated"
(cut JSON, finish reason MAX_TOKENS), "out_of_range" (a score of 11),
"missing" (a dimension left out), "blocked" (promptFeedback.blockReason),
"empty" (a candidate with no text).

`kill()` stands in for the server process dying (kill -9, a lost network):
the port stops listening and every open connection is cut, mid-answer or
not. A new `FakeGemini(port=old.port)` is the server coming back.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_VERSION = "v1beta"
FAULTS = ("429", "500", "slow", "malformed", "truncated", "out_of_range", "missing", "blocked", "empty")
_GENERATE = re.compile(rf"^/{API_VERSION}/models/([^/:]+):generateContent$")
_BATCH_CREATE = re.compile(rf"^/{API_VERSION}/models/([^/:]+):batchGenerateContent$")
_BATCH_GET = re.compile(rf"^/{API_VERSION}/(batches/[^/:]+)$")


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class FakeGemini:
    def __init__(
        self,
        latency_s: float = 0.0,
        slow_s: float = 2.0,
        retry_delay_s: float = 0.05,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULTS,
        seed: int = 0,
        batch_polls_until_done: int = 1,
        port: int = 0,
    ):
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.retry_delay_s = retry_delay_s
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self.script: list[str] = []
        self.per_prompt: dict[str, str] = {}  # marker in the prompt -> fault
        self.batch_polls_until_done = batch_polls_until_done
        self.batch_drop_keys: set[str] = set()  # keys answered with an error, once each
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []  # one per generateContent call
        self.by_prompt: dict[str, list[str]] = defaultdict(list)  # prompt sha -> outcomes
        self.request_headers: list[dict[str, str]] = []
        self.batches: dict[str, dict[str, Any]] = {}
        self.killed = False
        self._connections: set[socket.socket] = set()
        self._server = _QuietServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # -- lifecycle --------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeGemini:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self.killed:
            self._server.shutdown()
            self._server.server_close()

    def kill(self) -> None:
        """Die as a killed process does: refuse new connections, cut the open ones."""
        with self._lock:
            self.killed = True
            connections = list(self._connections)
        self._server.shutdown()
        self._server.server_close()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
            conn.close()

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counters ---------------------------------------------------------
    def outcomes(self) -> Counter:
        with self._lock:
            return Counter(call["outcome"] for call in self.calls)

    def successes(self) -> int:
        return self.outcomes()["ok"]

    def successes_by_prompt(self) -> dict[str, int]:
        with self._lock:
            return {sha: outs.count("ok") for sha, outs in self.by_prompt.items()}

    # -- behaviour --------------------------------------------------------
    def _pick_fault(self, prompt: str) -> str | None:
        with self._lock:
            for marker, fault in self.per_prompt.items():
                if marker in prompt:
                    return fault
            if self.script:
                return self.script.pop(0)
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _record(self, prompt: str, outcome: str, model: str = "", thinking_budget: int | None = None) -> None:
        with self._lock:
            self.calls.append({"prompt_sha": prompt_sha(prompt), "outcome": outcome, "t": time.time(),
                               "model": model, "thinking_budget": thinking_budget})
            self.by_prompt[prompt_sha(prompt)].append(outcome)

    def generate(self, model: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """One generateContent call: (HTTP status, JSON body)."""
        prompt = "".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
        dims = _schema_dimensions(body.get("generationConfig", {}))
        if model.startswith("no-such"):
            return 404, _error(404, "NOT_FOUND", f"models/{model} is not found for API version {API_VERSION}")
        fault = self._pick_fault(prompt)
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault == "slow":
            time.sleep(self.slow_s)
        thinking_config = body.get("generationConfig", {}).get("thinkingConfig", {})
        # the SDK has sent both spellings; the real API reads either
        thinking = thinking_config.get("thinkingBudget", thinking_config.get("thinking_budget"))
        self._record(prompt, fault or "ok", model, thinking)
        if fault == "429":
            return 429, _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                               [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{self.retry_delay_s}s"}])
        if fault == "500":
            return 500, _error(500, "INTERNAL", "An internal error has occurred.")
        return 200, answer(model, prompt, dims, fault)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass  # cut by kill()

            def _send(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                if fake.killed:  # a dead server answers nothing
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout) or was killed, or kill() cut the socket

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.request_headers.append(dict(self.headers))
                if match := _GENERATE.match(self.path):
                    self._send(*fake.generate(match.group(1), body))
                elif match := _BATCH_CREATE.match(self.path):
                    self._send(200, fake.create_batch(match.group(1), body))
                else:
                    self._send(404, _error(404, "NOT_FOUND", f"no route {self.path}"))

            def do_GET(self) -> None:
                if (match := _BATCH_GET.match(self.path)) and match.group(1) in fake.batches:
                    self._send(200, fake.get_batch(match.group(1)))
                else:
                    self._send(404, _error(404, "NOT_FOUND", f"no route {self.path}"))

        return Handler

    # -- batch API ----------------------------------------------------------
    def create_batch(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        requests = body["batch"]["inputConfig"]["requests"]["requests"]
        with self._lock:
            name = f"batches/fake{len(self.batches) + 1}"
            self.batches[name] = {"model": model, "requests": requests, "polls": 0}
        return self._batch_json(name, "BATCH_STATE_PENDING")

    def get_batch(self, name: str) -> dict[str, Any]:
        job = self.batches[name]
        with self._lock:
            job["polls"] += 1
            done = job["polls"] >= self.batch_polls_until_done
        if not done:
            return self._batch_json(name, "BATCH_STATE_RUNNING")
        if "responses" not in job:
            responses = []
            for item in reversed(job["requests"]):  # out of order: callers must join by key
                key = item.get("metadata", {}).get("key")
                request = item["request"]
                prompt = "".join(p.get("text", "") for c in request["contents"] for p in c.get("parts", []))
                if key in self.batch_drop_keys:
                    self.batch_drop_keys.discard(key)
                    self._record(prompt, "batch_error")
                    responses.append({"metadata": item.get("metadata"), "error": {"code": 13, "message": "internal"}})
                    continue
                self._record(prompt, "ok")
                responses.append({"metadata": item.get("metadata"),
                                  "response": answer(job["model"], prompt,
                                                     _schema_dimensions(request.get("generationConfig", {})), None)})
            job["responses"] = responses
        return self._batch_json(name, "BATCH_STATE_SUCCEEDED",
                                {"inlinedResponses": {"inlinedResponses": job["responses"]}})

    def _batch_json(self, name: str, state: str, output: dict | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                                    "model": f"models/{self.batches[name]['model']}", "state": state,
                                    "displayName": name}
        if output is not None:
            metadata["output"] = output
        return {"name": name, "metadata": metadata, "done": output is not None}


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 refuses connections under 32-way concurrency

    def handle_error(self, request, client_address) -> None:
        # A killed or timed-out client resets its connection: expected here, not an error.
        pass


def answer(model: str, prompt: str, dims: list[str], fault: str | None) -> dict[str, Any]:
    """A generateContent response body; `fault` spoils it in one way."""
    digest = hashlib.sha256(prompt.encode()).digest()
    scores: dict[str, Any] = {d: digest[i % len(digest)] % 11 for i, d in enumerate(dims)}
    scores["reasoning"] = "fake oracle"
    finish = "STOP"
    if fault == "out_of_range" and dims:
        scores[dims[0]] = 11
    if fault == "missing" and dims:
        scores.pop(dims[-1])
    text = json.dumps(scores)
    if fault == "malformed":
        text = "Sure! Here are the scores: " + text.replace('"', "'")
    if fault == "truncated":
        text, finish = text[: len(text) // 2], "MAX_TOKENS"
    usage = {"promptTokenCount": max(1, len(prompt) // 4), "candidatesTokenCount": max(1, len(text) // 4)}
    usage["totalTokenCount"] = usage["promptTokenCount"] + usage["candidatesTokenCount"]
    if fault == "blocked":
        return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage, "modelVersion": model}
    parts = [] if fault == "empty" else [{"text": text}]
    return {
        "candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": model,
    }


def _schema_dimensions(generation_config: dict[str, Any]) -> list[str]:
    schema = generation_config.get("responseSchema") or generation_config.get("responseJsonSchema") or {}
    return [name for name in schema.get("properties", {}) if name != "reasoning"]


def _error(code: int, status: str, message: str, details: list | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def main() -> None:
    """Run standalone (for the README walk-through): prints the URL, serves until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of calls with a random fault")
    args = parser.parse_args()
    fake = FakeGemini(latency_s=args.latency, fault_rate=args.fault_rate).start()
    print(fake.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
