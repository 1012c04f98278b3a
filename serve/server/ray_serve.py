"""`distill-serve --ray`: the same FastAPI app as a Ray Serve deployment with N replicas.

Each replica builds the app with `create_app` (so it batches, limits and
answers exactly as the plain server does) and loads its models before Ray
routes a request to it; Ray Serve's HTTP proxy listens on --host/--port and
spreads requests over the replicas. Ray's own queue in front of a replica is
bounded too (MAX_QUEUED: past it Ray answers 503), and each replica lets
enough requests in at once for its batcher to fill batches. /metrics is per
replica: a scrape through the proxy reaches one of them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from distill.errors import ConfigError
from distill.serve.server.settings import TOKEN_ENV, ServeSettings

PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS")
APP_NAME = "distill"
MAX_ONGOING = 256  # requests a replica takes at once: its own token queue bounds the work
MAX_QUEUED = 1024  # requests Ray holds for a busy replica before answering 503


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise ConfigError("--ray needs Ray Serve: pip install 'distill[ray]'") from None
    return serve


class DistillReplica:
    """One replica: the app built in the replica process (its threads and models live there)."""

    def __init__(self, settings: ServeSettings, token: str | None):
        self.settings = settings
        self.token = token

    def __serve_build_asgi_app__(self) -> Any:
        from distill.serve.server.app import create_app

        return create_app(self.settings, wait_for_models=True, token=self.token)


def deployment(settings: ServeSettings, token: str | None) -> Any:
    """The bound Ray Serve application: `settings.replicas` replicas of DistillReplica."""
    serve = _import_serve()
    replica = serve.ingress()(DistillReplica)  # no app yet: each replica builds its own
    options = {"name": APP_NAME, "num_replicas": settings.replicas, "max_ongoing_requests": MAX_ONGOING,
               "max_queued_requests": MAX_QUEUED, "graceful_shutdown_timeout_s": settings.drain_seconds,
               "ray_actor_options": {"num_cpus": settings.cpus_per_replica}}
    return serve.deployment(replica, **options).bind(settings, token)


def start_ray_serve(settings: ServeSettings, token: str | None = None) -> tuple[str, bool]:
    """Deploy on --ray-address, a running Ray, or a new local one; (URL, whether Ray started here).

    Returns once every replica has loaded its models."""
    from distill.serve.server.metrics import Metrics
    from distill.serve.server.online import OnlineScorer

    OnlineScorer(settings, Metrics())  # resolves models and filters as each replica will: errors stop here
    import ray

    serve = _import_serve()
    started = not ray.is_initialized()
    if started:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        ray.init(address=settings.ray_address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, runtime_env={"env_vars": env} if env else None)
    port = settings.port or free_port(settings.host)
    serve.start(http_options={"host": settings.host, "port": port})
    serve.run(deployment(settings, token), name=APP_NAME, route_prefix="/")
    from distill.serve.server.cli import url

    return url(settings.host, port), started


def serve_with_ray(settings: ServeSettings) -> None:
    """`distill-serve --ray`: deploy, announce, serve until SIGTERM/SIGINT, then drain and stop."""
    import click

    address, started = start_ray_serve(settings, os.environ.get(TOKEN_ENV) or None)
    click.echo(f"distill-serve listening on {address}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    serve = _import_serve()
    serve.shutdown()  # each replica finishes its requests (at most --drain-seconds)
    if started:
        import ray

        ray.shutdown()


def free_port(host: str) -> int:
    """A port free now on `host` (Ray's proxy needs a number; 0 means pick one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
