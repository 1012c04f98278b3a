"""Transport errors of every HTTP stack an oracle SDK may send through, as failures.

google-genai >= 3 sends through httpx2 (a fork of httpx with its own import name
and its own exception classes), older versions through httpx, and through
aiohttp when that is installed; each may also let its core's httpcore /
httpcore2 errors through. Catching one stack's classes misses every failure of
another, and an exception nobody classifies ends the run instead of being
retried, so every stack that can be imported is listed here and none is
required. tests/test_oracle.py raises the SDK's real errors against a closed
port, so a change in what it raises fails a test rather than a user's run.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

from distill.label.oracle.base import CONNECTION, TIMEOUT, OracleFailure

# A backend's outer asyncio timeout waits this long past the HTTP client's own,
# so the HTTP layer's error (which says whether connecting or reading timed
# out) wins the race: a connect timeout means unreachable, a read timeout slow.
TIMEOUT_GRACE_S = 1.0

_HTTPX = ("httpx", "httpx2")
_HTTPCORE = ("httpcore", "httpcore2")


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _classes(modules: tuple[str, ...], names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The named exception classes of whichever of these modules are installed."""
    found: list[type[BaseException]] = []
    for module in filter(None, map(_optional, modules)):
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


# Checked in this order: a connect timeout is both a timeout and a transport
# error, and it means the endpoint is unreachable, not slow.
CONNECT_TIMEOUTS = _classes(_HTTPX + _HTTPCORE, ("ConnectTimeout",))
# TimeoutError is an OSError, so it must come before OSError; asyncio.TimeoutError
# (what asyncio.wait_for raises) is a class of its own before Python 3.11.
TIMEOUTS = _classes(_HTTPX + _HTTPCORE, ("TimeoutException",)) + \
    _classes(("aiohttp",), ("ServerTimeoutError",)) + (TimeoutError, asyncio.TimeoutError)
CONNECTION_ERRORS = (
    _classes(_HTTPX, ("TransportError",))
    + _classes(_HTTPCORE, ("NetworkError", "ProtocolError", "ConnectionNotAvailable", "ProxyError"))
    + _classes(("aiohttp",), ("ClientConnectionError", "ClientPayloadError"))
    + (OSError,)  # refused, reset, unreachable network, DNS failure leaking through unwrapped
)


def transport_failure(exc: BaseException, timeout_s: float) -> OracleFailure | None:
    """The retryable failure an HTTP-layer exception stands for; None if it is not one."""
    name = f"{type(exc).__module__.split('.')[0]}.{type(exc).__name__}"
    detail = f"{name}: {exc}" if str(exc) else name
    if isinstance(exc, CONNECT_TIMEOUTS):
        return OracleFailure(CONNECTION, f"could not connect within {timeout_s:g}s ({name})", True)
    if isinstance(exc, TIMEOUTS):
        return OracleFailure(TIMEOUT, f"no answer within {timeout_s:g}s", True)
    if isinstance(exc, CONNECTION_ERRORS):
        return OracleFailure(CONNECTION, detail[:200], True)
    return None
