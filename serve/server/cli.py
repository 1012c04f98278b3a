"""`distill-serve`: score articles online over HTTP, with dynamic batching.

Only click and uvicorn load at import, so `--help` stays fast and imports no
torch; the app (FastAPI, the models) is imported when the server starts.
"""

from __future__ import annotations

import logging
import signal
import sys

import click
import uvicorn

from distill.cli import run_main
from distill.serve.server.settings import TOKEN_ENV, ServeSettings
from distill.settings import options_from


@click.command()
@options_from(ServeSettings)
def command(**options) -> None:
    """Score articles over HTTP with the students distill-score uses, batching concurrent requests.

    POST /v1/score {"articles": [{"id", "title", "content"}, ...], "filters": [...]}
    returns, per article and filter, exactly the record distill-score writes
    (scores, overall_score, tier, prefilter, model). GET /v1/filters lists the
    filters; /healthz, /readyz, /metrics (Prometheus) and /docs (OpenAPI) are
    there too, and / is a page to try an article.

    Listens on 127.0.0.1 unless --host says otherwise. With DISTILL_SERVE_TOKEN
    set, /v1/* and /metrics need "Authorization: Bearer <token>". SIGTERM stops
    accepting, finishes the requests in flight (at most --drain-seconds) and
    exits 0. Once ready it prints "distill-serve listening on http://HOST:PORT".
    """
    settings = ServeSettings(**options)
    _configure_logging()
    if settings.ray:
        from distill.serve.server.ray_serve import serve_with_ray

        serve_with_ray(settings)
    else:
        run_server(settings)


def run_server(settings: ServeSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return (exit 0)."""
    from distill.serve.server.app import create_app

    app = create_app(settings)  # a bad model or filter stops here, as one line
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_config=None,
                            access_log=settings.access_log, timeout_graceful_shutdown=settings.drain_seconds)
    server = _Server(config, app.state.scorer)
    # uvicorn re-raises the signal it stopped on once it has drained: let that be a no-op, so a drain exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if app.state.scorer.error is not None:
        raise app.state.scorer.error


class _Server(uvicorn.Server):
    """uvicorn's server, announcing itself once the models are loaded and draining on a signal."""

    def __init__(self, config: uvicorn.Config, scorer):
        super().__init__(config)
        self.scorer = scorer
        self.announced = False

    def handle_exit(self, sig, frame) -> None:
        self.scorer.begin_drain()  # /readyz fails and new work is refused while in-flight work finishes
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.scorer.error is not None:
            self.should_exit = True
        elif not self.announced and self.started and self.scorer.state == "ready":
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            click.echo(f"distill-serve listening on {url(host, port)}")
            sys.stdout.flush()
            self.announced = True
        return await super().on_tick(counter)


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _configure_logging() -> None:
    """distill.serve's lines beside uvicorn's on stderr; the token and article text are never logged."""
    for name in ("distill.serve", "uvicorn"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


main = run_main(command)
__all__ = ["TOKEN_ENV", "ServeSettings", "command", "main", "run_server"]
