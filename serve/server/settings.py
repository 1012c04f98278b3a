"""Settings of `distill-serve`: one typed home for every default, like distill-score's.

The model, filter, backend and batch fields are distill-score's own fields
(`ScoreSettings`), reused with their defaults and help, because they mean the
same here: `score_settings()` turns these settings into the ScoreSettings that
jobs.build_plan and jobs.open_backends take, so the server resolves models,
filters and backends exactly as distill-score does. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path

from distill.serve.settings import ScoreSettings, models_and_filters
from distill.settings import Settings

TOKEN_ENV = "DISTILL_SERVE_TOKEN"  # set it to require `Authorization: Bearer <token>` on /v1/* and /metrics
# Where build_plan would put outputs: the server writes none; a {filter} template creates no folder.
NO_OUTPUT = Path("{filter}.jsonl")


def score_field(name: str) -> Field:
    """ScoreSettings' field `name` as it is: its default, flag and help."""
    source = next(f for f in fields(ScoreSettings) if f.name == name)
    if source.default_factory is not MISSING:
        return field(default_factory=source.default_factory, metadata=source.metadata)
    return field(default=source.default, metadata=source.metadata)


@dataclass
class ServeSettings(Settings):
    filter: list[str] = score_field("filter")
    model: list[Path] = score_field("model")
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 exposes the server to the network"})
    port: int = field(default=8000, metadata={"help": "port to listen on (0: a free one; the start-up line names it)"})
    backend: str = score_field("backend")
    device: str = score_field("device")
    precision: str = score_field("precision")
    compile: bool = score_field("compile")
    threads: int = score_field("threads")
    token_budget: int | None = score_field("token_budget")
    max_batch: int | None = score_field("max_batch")
    carry: tuple[str, ...] = score_field("carry")
    write_blocked: bool = score_field("write_blocked")
    streams: int = field(default=1, metadata={"help": "OpenVINO only: split --threads into this many inference streams, each fed by its own model thread, so one batch never waits for another's threads (other backends: 1)"})
    max_wait_ms: float = field(default=5.0, metadata={"help": "longest queued work waits for more to fill a batch (0: score what is queued at once)"})
    max_queue_tokens: int = field(default=65536, metadata={"help": "tokens queued for the model at most; past it a request gets 503 with Retry-After (bounds memory and wait)"})
    max_body_bytes: int = field(default=4 << 20, metadata={"help": "largest request body in bytes; a larger one gets 413"})
    drain_seconds: float = field(default=10.0, metadata={"help": "on SIGTERM: stop accepting, then wait at most this long for requests in flight"})
    access_log: bool = field(default=True, metadata={"help": "log one line per request (method, path, status; never bodies or tokens)"})
    ray: bool = field(default=False, metadata={"help": "run the same app as a Ray Serve deployment (pip install 'distill[ray]')"})
    replicas: int = field(default=1, metadata={"help": "Ray Serve replicas (--ray), each holding every model"})
    cpus_per_replica: float = field(default=1.0, metadata={"help": "CPUs Ray reserves for each replica (--ray); the model uses --threads threads"})
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster to join with --ray (e.g. auto); default: start a local Ray instance"})

    def __post_init__(self) -> None:
        self.model, self.filter = models_and_filters(self.model, self.filter)
        self.carry = tuple(self.carry)

    def score_settings(self) -> ScoreSettings:
        """The distill-score settings that resolve the same models, filters and backends."""
        shared = {f.name: getattr(self, f.name) for f in fields(ScoreSettings) if f.name in _SHARED}
        return ScoreSettings(inputs=[], output=NO_OUTPUT, workers=0, progress=False, **shared)

    def problems(self) -> list[str]:
        # distill-score's checks of the shared fields; it also asks for INPUTS, which a server has none of.
        problems = [p for p in self.score_settings().problems() if not p.startswith("INPUTS")]
        if not 0 <= self.port <= 65535:
            problems.append(f"--port: {self.port} is not a port (0-65535; 0 picks a free one)")
        if not self.host:
            problems.append("--host: give an address, e.g. 127.0.0.1")
        for name in ("max_queue_tokens", "max_body_bytes", "replicas", "streams"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (got {getattr(self, name)})")
        for name in ("max_wait_ms", "drain_seconds", "cpus_per_replica"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')}: must not be negative (got {getattr(self, name)})")
        if not self.ray and (self.replicas != 1 or self.ray_address):
            problems.append("--replicas / --ray-address: only with --ray")
        return problems


# The fields that are distill-score's (ray_address means another Ray use there: --engine ray).
_SHARED = ({f.name for f in fields(ServeSettings)} & {f.name for f in fields(ScoreSettings)}) - {"ray_address"}
