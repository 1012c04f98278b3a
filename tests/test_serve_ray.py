"""distill-serve --ray: the same app as a Ray Serve deployment, 2 replicas on a local Ray (2 CPUs),
answering over HTTP exactly as the plain server does."""

from __future__ import annotations

import pytest
from test_serve import BAD, TOKEN, assert_same_record, launch, make_students, request_articles

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def students(tmp_path_factory, tiny_bert_dir) -> dict:
    return make_students(tmp_path_factory, tiny_bert_dir)


@pytest.fixture(scope="module")
def articles(real_articles) -> list:
    return request_articles(real_articles)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'distill[ray]'")
    serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'distill[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield serve
    finally:
        serve.shutdown()
        ray.shutdown()


def test_ray_serve_replicas_answer_like_the_plain_server(tmp_path, ray_local, students, articles):
    from distill.serve.server.ray_serve import APP_NAME, start_ray_serve
    from distill.serve.server.settings import ServeSettings

    model = students["sustainability/v1"]
    plain = launch(["-m", str(model)], tmp_path / "plain.log")  # starts while Ray deploys
    settings = ServeSettings(model=[model], port=0, threads=1, ray=True, replicas=2)
    url, started_ray = start_ray_serve(settings, token=TOKEN)
    assert not started_ray and url.startswith("http://127.0.0.1:")
    status = ray_local.status().applications[APP_NAME]
    assert status.status == "RUNNING"
    assert [d.replica_states.get("RUNNING") for d in status.deployments.values()] == [2]

    request = {"articles": [a for a in articles if isinstance(a, dict) and a.get("url")][:5] + BAD[:1]
                           + [{"id": "short-1", "content": "Too short to judge."}]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url + "/v1/score", json=request, timeout=60).status_code == 401
    got = httpx.post(url + "/v1/score", json=request, headers=auth, timeout=60)
    assert got.status_code == 200, got.text
    want = httpx.post(plain.wait_ready().url + "/v1/score", json=request, timeout=60).json()["results"]
    results = got.json()["results"]
    assert [("error" in r, r["index"], r["id"]) for r in results] == [("error" in r, r["index"], r["id"]) for r in want]
    for mine, theirs in zip(results, want, strict=True):
        if "error" in theirs:
            assert mine["error"] == theirs["error"]
        else:
            assert_same_record(mine["records"]["sustainability/v1"], theirs["records"]["sustainability/v1"])
    assert httpx.get(url + "/readyz").json() == {"status": "ready"}
    assert httpx.get(url + "/v1/filters", headers=auth).json()["filters"][0]["id"] == "sustainability/v1"
    assert plain.stop() == 0
