"""distill-serve end to end: the real server in a subprocess, tiny BERT students, real articles, httpx.

The served records are compared with what distill-score writes for the same
articles; the faults (bad input, limits, tokens, a full queue, clients that
go away, SIGTERM under load) are each driven against a running server.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import first_rows, tiny_student, write_jsonl

from distill.artifact import StudentInfo
from distill.filter_spec import load_filter
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.timeout(300)

SUSTAIN = load_filter("sustainability/v1")
UPLIFT = load_filter("uplifting/v1")
TOKEN = "s3cret-token-for-tests"
GOSSIP = "celebrity gossip " + " ".join(f"word{i}" for i in range(40))
BAD = [{"id": "no-text"}, "not an object", {"title": "no id", "content": "text " * 50}, {"id": "", "content": "x " * 40}]


@dataclass
class Server:
    proc: subprocess.Popen
    log: Path
    url: str = ""

    def wait_ready(self, timeout: float = 180) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                line = self.proc.stdout.readline()
                if match := re.search(r"distill-serve listening on (http://\S+)", line):
                    self.url = match.group(1)
                    return self
        self.proc.kill()
        raise AssertionError(f"distill-serve did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def metric(self, name: str, headers: dict | None = None) -> float:
        """The sum of a metric's samples from /metrics: all label values, or those `name` gives."""
        text = httpx.get(self.url + "/metrics", headers=headers).text
        prefixes = (name,) if "{" in name else (name + "{", name + " ")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefixes))


def launch(args: list[str], log: Path, token: str | None = None) -> Server:
    """Start `distill-serve ARGS --port 0` (one model thread); wait_ready() gives its URL."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("DISTILL_SERVE_TOKEN", None)
    if token is not None:
        env["DISTILL_SERVE_TOKEN"] = token
    command = [sys.executable, "-c", "from distill.serve.server.cli import main; main()",
               "--port", "0", "--threads", "1", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)  # noqa: SIM115
    return Server(proc, log)


def student_info(spec, name: str) -> StudentInfo:
    # A wide std spreads the random head's tiny outputs over the 0-10 scale.
    return StudentInfo(spec.name, spec.version, spec.config_hash, spec.dimension_names, name,
                       "encoder", "full", 64, 0.8, [6.0] * 8, [40.0] * 8)


def make_students(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    """A tiny BERT student per filter (same tokenizer, so one tokenisation serves both)."""
    folders = {}
    for spec, name in ((SUSTAIN, "tiny-s"), (UPLIFT, "tiny-u")):
        folders[spec.id] = tiny_student(tmp_path_factory, tiny_bert_dir, student_info(spec, name), name)
    return folders


def request_articles(path: Path) -> list:
    """24 real articles, two the prefilter blocks and four bad ones, interleaved."""
    rows = [{k: r[k] for k in ("id", "title", "content", "url")} for r in first_rows(path, 24)]
    blocked = [{"id": "short-1", "title": "Tiny", "content": "Too short to judge."},
               {"id": "gossip-1", "content": GOSSIP}]
    return rows[:8] + BAD[:2] + blocked + rows[8:16] + BAD[2:] + rows[16:]


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_bert_dir) -> dict[str, Path]:
    return make_students(tmp_path_factory, tiny_bert_dir)


@pytest.fixture(scope="module")
def articles(real_articles) -> list:
    return request_articles(real_articles)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, students):
    """Both module servers, started side by side (a start-up is mostly imports)."""
    folder = tmp_path_factory.mktemp("servers")
    pair = ["-m", str(students["sustainability/v1"]), "-f", "sustainability/v1",
            "-m", str(students["uplifting/v1"]), "-f", "uplifting/v1"]
    main = launch([*pair, "--carry", "url"], folder / "main.log")
    # Tight limits, a token and a long batch wait, so a full queue and a gone client are deterministic.
    guarded = launch(["-m", str(students["sustainability/v1"]), "--max-queue-tokens", "600",
                      "--max-wait-ms", "400", "--max-body-bytes", "20000"], folder / "guarded.log", token=TOKEN)
    try:
        yield main.wait_ready(), guarded.wait_ready()
    finally:
        codes = main.stop(), guarded.stop()
    assert codes == (0, 0), (main.log.read_text()[-2000:], guarded.log.read_text()[-2000:])


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def guarded(servers) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def offline(tmp_path_factory, students, articles) -> dict[str, dict]:
    """distill-score's lines for the same articles and filter pairs: {filter id: {id: record}}, plus rejects."""
    folder = tmp_path_factory.mktemp("offline")
    corpus = write_jsonl(folder / "corpus.jsonl", [a if isinstance(a, dict) else json.dumps(a) for a in articles])
    score_corpus(ScoreSettings(inputs=[corpus], output=folder / "out", model=list(students.values()),
                               filter=list(students), carry=("url",), workers=0, threads=1, progress=False))
    lines = {spec_id: [json.loads(x) for x in (folder / "out" / f"{spec_id.replace('/', '-')}.jsonl").read_text().splitlines()]
             for spec_id in students}
    rejects = [json.loads(x) for x in (folder / "out/rejects.jsonl").read_text().splitlines()]
    return {"records": {k: {r["id"]: r for r in v} for k, v in lines.items()},
            "order": {k: [r["id"] for r in v] for k, v in lines.items()},
            "rejects": [r["reason"] for r in rejects]}


def post(server: Server, body, headers: dict | None = None, timeout: float = 60) -> httpx.Response:
    """POST /v1/score: a dict or list as JSON, bytes or a generator of bytes as they are."""
    kind = "json" if isinstance(body, dict | list) else "content"
    return httpx.post(server.url + "/v1/score", headers=headers, timeout=timeout, **{kind: body})


def assert_same_record(got: dict, want: dict, tolerance: float = 1e-5) -> None:
    assert got.keys() == want.keys()
    assert (got["id"], got["tier"], got["prefilter"], got["model"], got.get("url")) == \
           (want["id"], want["tier"], want["prefilter"], want["model"], want.get("url"))
    if want["scores"] is None:
        assert got["scores"] is None and got["overall_score"] is None
        return
    assert got["scores"].keys() == want["scores"].keys()
    assert max(abs(got["scores"][d] - want["scores"][d]) for d in want["scores"]) <= tolerance
    assert abs(got["overall_score"] - want["overall_score"]) <= tolerance


def test_served_records_equal_distill_score_lines_bad_articles_get_their_own_entry(server, articles, offline):
    response = post(server, {"articles": articles})
    assert response.status_code == 200, response.text
    assert "infer;dur=" in response.headers["server-timing"]
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(articles)))
    scored = [r for r in results if "records" in r]
    errors = [r for r in results if "error" in r]
    for spec_id, want in offline["records"].items():
        assert [r["id"] for r in scored] == offline["order"][spec_id]  # same articles, same order
        for result in scored:
            assert_same_record(result["records"][spec_id], want[result["id"]])
    blocked = {r["id"]: r["records"] for r in scored if r["id"] in ("short-1", "gossip-1")}
    assert blocked["short-1"]["sustainability/v1"]["prefilter"].startswith("too_short")
    assert blocked["gossip-1"]["sustainability/v1"]["prefilter"].startswith("excluded")
    # Each bad article is its own entry, with the reason distill-score's rejects give.
    assert [(r["index"], r["id"]) for r in errors] == [(8, "no-text"), (9, None), (20, None), (21, None)]
    assert [r["error"] for r in errors] == offline["rejects"]
    assert len({r["records"]["sustainability/v1"]["overall_score"] for r in scored}) > 10  # real, varied scores


def test_a_request_can_name_its_filters(server, articles, offline):
    real = [a for a in articles if isinstance(a, dict) and a.get("url")][:6]
    results = post(server, {"articles": real, "filters": ["uplifting/v1"]}).json()["results"]
    assert [list(r["records"]) for r in results] == [["uplifting/v1"]] * len(real)
    for result in results:  # another window than the offline run's: batches differ, numbers barely
        assert_same_record(result["records"]["uplifting/v1"], offline["records"]["uplifting/v1"][result["id"]], 1e-3)
    filters = httpx.get(server.url + "/v1/filters").json()["filters"]
    assert [f["id"] for f in filters] == ["sustainability/v1", "uplifting/v1"]
    first = filters[0]
    assert first["model"] == "sustainability/v1:tiny-s" and first["version"] == 1 and first["description"]
    assert [d["name"] for d in first["dimensions"]] == SUSTAIN.dimension_names
    assert first["tiers"] == {t.name: t.min_score for t in SUSTAIN.tiers} and first["metrics"] == {}


def one_request_each(server: Server, articles: list[dict]) -> list[dict]:
    """Every article in its own request, all at once; each answer's one result."""
    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/score", json={"articles": [a]}) for a in articles))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(articles)
    return [response.json()["results"][0] for response in responses]


def test_concurrent_one_article_requests_are_batched_together(server, articles, offline):
    real = [a for a in articles if isinstance(a, dict) and a.get("url")]
    before = server.metric("distill_batch_articles_count"), server.metric("distill_batch_articles_sum")
    for result in one_request_each(server, real):
        for spec_id, want in offline["records"].items():
            assert_same_record(result["records"][spec_id], want[result["id"]], 1e-3)
    batches = server.metric("distill_batch_articles_count") - before[0]
    rows = server.metric("distill_batch_articles_sum") - before[1]
    assert rows == 2 * len(real) and batches < rows  # two models; fewer batches than articles


def test_openvino_streams_each_get_a_model_thread_and_answer_as_distill_score(tmp_path_factory, students, articles):
    """--streams 2 on OpenVINO: two model threads take windows at once; every concurrent
    one-article request gets distill-score's record for the same backend."""
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings

    folder = tmp_path_factory.mktemp("streams")
    export = folder / "export"
    run_export(ExportSettings(model_dir=students["sustainability/v1"], output=export, onnx=True, bench_articles=0,
                              threads=1), echo=lambda _: None)
    real = [a for a in articles if isinstance(a, dict) and a.get("url")]
    score_corpus(ScoreSettings(inputs=[write_jsonl(folder / "c.jsonl", real)], output=folder / "out.jsonl",
                               model=[export], backend="openvino", precision="fp32", workers=0, threads=1,
                               progress=False))
    want = {r["id"]: r for r in map(json.loads, (folder / "out.jsonl").read_text().splitlines())}
    server = launch(["-m", str(export), "--backend", "openvino", "--precision", "fp32", "--threads", "2",
                     "--streams", "2", "--max-batch", "2"], folder / "server.log").wait_ready()
    try:
        for result in one_request_each(server, real):
            assert_same_record(result["records"]["sustainability/v1"], want[result["id"]], 1e-4)
        assert server.metric("distill_batch_articles_sum") >= len(real)
    finally:
        assert server.stop() == 0
    assert "with 2 model threads" in server.log.read_text()


def test_malformed_requests_get_422_naming_the_field(server):
    cases = [
        (b"{not json", "body: not JSON"),
        (b'"just a string"', "body: Input should be a valid dictionary"),
        ({"filters": ["sustainability/v1"]}, "field 'articles': Field required"),
        ({"articles": "a1"}, "field 'articles': Input should be a valid list"),
        ({"articles": [], "filters": "sustainability/v1"}, "field 'filters': Input should be a valid list"),
        ({"articles": [], "filters": [7]}, "field 'filters[0]': Input should be a valid string"),
        ({"articles": [], "article": []}, "field 'article': Extra inputs are not permitted"),
        ({"articles": [], "filters": ["nope/v1"]}, "field 'filters': unknown filter 'nope/v1'"),
        ({"articles": [], "filters": []}, "field 'filters': name at least one filter"),
    ]
    for body, message in cases:
        response = post(server, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"].startswith(message), (body, response.json())
        assert isinstance(response.json()["detail"], list) and response.json()["detail"][0]["loc"][0] == "body"
    assert post(server, {"articles": []}).json() == {"results": []}


def test_body_limit_413_token_limit_413_and_the_bearer_token(guarded, articles):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = {"articles": [{"id": f"a{i}", "content": "word " * 800} for i in range(6)]}  # ~24 kB
    assert post(guarded, big, auth).status_code == 413
    chunks = (json.dumps(big)[i:i + 4096].encode() for i in range(0, len(json.dumps(big)), 4096))
    response = post(guarded, chunks, auth)  # no Content-Length: counted as it streams
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["error"]
    many = {"articles": [{"id": f"b{i}", "content": "word " * 200} for i in range(12)]}  # 12 x 64 tokens > 600
    response = post(guarded, many, auth)
    assert response.status_code == 413 and "--max-queue-tokens" in response.json()["error"]
    one = {"articles": [articles[0]]}
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = post(guarded, one, headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert httpx.get(guarded.url + "/metrics", headers=headers).status_code == 401
        assert httpx.get(guarded.url + "/v1/filters", headers=headers).status_code == 401
    assert post(guarded, one, auth).status_code == 200
    assert httpx.get(guarded.url + "/metrics", headers=auth).status_code == 200
    for path in ("/healthz", "/readyz", "/docs", "/"):
        assert httpx.get(guarded.url + path).status_code == 200, path
    assert TOKEN not in guarded.log.read_text()


def test_a_full_queue_answers_503_with_retry_after(guarded, articles):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    real = [a for a in articles if isinstance(a, dict) and a.get("url")]

    async def burst():
        async with httpx.AsyncClient(base_url=guarded.url, headers=auth, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/score", json={"articles": [a]}) for a in real))

    responses = asyncio.run(burst())  # 24 x 64 tokens against a 600-token queue held 400 ms
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 9, codes
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "queue is full" in response.json()["error"]
    assert guarded.metric("distill_queue_tokens", auth) == 0


def test_a_client_that_goes_away_costs_nothing(guarded, articles):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tokens, gone = guarded.metric("distill_tokens_total", auth), guarded.metric("distill_requests_total", auth)
    with pytest.raises(httpx.ReadTimeout):  # queued for the 400 ms batch wait; the client leaves at 100 ms
        post(guarded, {"articles": [articles[0]]}, auth, timeout=0.1)
    time.sleep(0.8)
    assert guarded.metric("distill_tokens_total", auth) == tokens  # its article never reached the model
    text = httpx.get(guarded.url + "/metrics", headers=auth).text
    assert 'distill_requests_total{endpoint="/v1/score",status="499"} 1.0' in text
    assert guarded.metric("distill_requests_total", auth) > gone
    assert post(guarded, {"articles": [articles[0]]}, auth).status_code == 200  # still serving


def test_health_readiness_metrics_and_docs(server, articles):
    assert server.url.startswith("http://127.0.0.1:")  # the default --host
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    # The phase timings have samples only once something was scored: score here, not in an earlier test.
    assert post(server, {"articles": [articles[0]]}).status_code == 200
    metrics = httpx.get(server.url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("distill_requests_total{", "distill_request_seconds_bucket{", "distill_batch_articles_bucket{",
                 "distill_queue_tokens ", "distill_tokens_total ", 'distill_phase_seconds_count{phase="infer"}'):
        assert name in metrics.text, name
    assert "swagger" in httpx.get(server.url + "/docs").text.lower()
    schema = httpx.get(server.url + "/openapi.json").json()
    body = schema["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"articles", "filters"} and body["required"] == ["articles"]
    assert {"ScoreResponse", "FiltersResponse", "ErrorResponse"} <= set(schema["components"]["schemas"])


def test_logs_hold_no_article_text(server, articles):
    post(server, {"articles": articles[:3]})
    log = server.log.read_text()
    assert "POST /v1/score" in log and "loaded" in log
    for article in articles[:3]:
        assert article["title"] not in log and article["content"][:40] not in log


def test_sigterm_under_load_finishes_what_is_in_flight_and_exits_0(tmp_path, students, articles):
    server = launch(["-m", str(students["sustainability/v1"]), "--max-wait-ms", "300"], tmp_path / "log")
    server.wait_ready()
    real = [a for a in articles if isinstance(a, dict) and a.get("url")]
    requests = 16

    async def load():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            pending = [asyncio.ensure_future(client.post("/v1/score", json={"articles": real[i:i + 8]}))
                       for i in range(requests)]
            while server.metric('distill_phase_seconds_count{phase="prepare"}') < requests:  # all queued
                await asyncio.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*pending)

    responses = asyncio.run(load())
    assert [r.status_code for r in responses] == [200] * requests
    assert all(len(r.json()["results"]) == len(real[i:i + 8]) for i, r in enumerate(responses))
    assert server.proc.wait(30) == 0
    log = server.log.read_text()
    assert "Traceback" not in log and "Finished server process" in log


def test_help_imports_no_torch_and_lists_every_flag():
    code = ("import sys; from distill.serve.server.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules, 'torch'")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    for flag in ("--filter", "--model", "--host", "--port", "--backend", "--token-budget", "--max-wait-ms",
                 "--max-queue-tokens", "--max-body-bytes", "--drain-seconds", "--ray", "--replicas",
                 "--skip-blocked", "127.0.0.1"):
        assert flag in shown.stdout, flag
    listed = subprocess.run([sys.executable, "-c", "from distill.cli import main; main(['--help'])"],
                            capture_output=True, text=True)
    assert "serve" in listed.stdout and "dynamic batching" in listed.stdout


def test_settings_share_distill_score_fields_and_report_every_problem(tmp_path):
    from dataclasses import fields

    from distill.serve.server.settings import ServeSettings

    score = {f.name: f for f in fields(ScoreSettings)}
    for f in fields(ServeSettings):
        if f.name in score and f.name != "ray_address":
            assert f.metadata["help"] is score[f.name].metadata["help"], f.name  # the same help, not a copy
    assert ServeSettings().host == "127.0.0.1"
    problems = ServeSettings(model=tmp_path / "nope", port=70000, replicas=2, max_queue_tokens=0,
                             backend="tensorrt").problems()
    for part in ("--model", "--port", "--replicas", "--max-queue-tokens", "--backend"):
        assert any(p.startswith(part) for p in problems), part
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-c", "from distill.serve.server.cli import main; main()",
                             "-m", str(empty), "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {empty}: no distill.json; is this a distill model folder?"]


def test_before_the_models_load_readiness_and_scoring_answer_503(students):
    from distill.serve.server.app import create_app
    from distill.serve.server.settings import ServeSettings

    app = create_app(ServeSettings(model=[students["sustainability/v1"]], threads=1))  # lifespan not run

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get("/healthz"), await client.get("/readyz"),
                    await client.post("/v1/score", json={"articles": [{"id": "a", "content": "x " * 30}]}),
                    await client.get("/v1/filters"))

    health, ready, scored, filters = asyncio.run(ask())
    assert health.status_code == 200 and (ready.status_code, ready.json()) == (503, {"status": "loading"})
    assert scored.status_code == 503 and scored.headers["retry-after"] == "1"
    assert "loading" in scored.json()["error"]
    assert filters.json()["filters"][0]["model"] == "sustainability/v1:tiny-s"  # known before loading
