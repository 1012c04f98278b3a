"""Progress that reads well on a terminal and in a log file: the one progress display.

On a terminal it is a tqdm bar. Anywhere else (a log file, CI, a pipe) a bar
redraws into the file dozens of times a step, so instead one plain line is
written each time another `every_percent` of the total is done, and one at the
end: a 4-epoch run writes a few dozen lines, not hundreds.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

# When the total is unknown there are no percentages: a line this often instead.
UNKNOWN_TOTAL_SECONDS = 60.0


class Progress:
    """Counts work done: `update(n)` or `advance_to(done)`, `fields` shown beside the count
    (a loss, the spend); `close()` (or leaving a `with`) writes the last line.

    `enabled=False` shows nothing; `stream` defaults to stderr; `initial` is work
    already done before this run (a resume), counted but not timed;
    `scale_units` lets the bar write 12.3k for large counts.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, stream: TextIO | None = None,
                 every_percent: float = 10.0, initial: int = 0, enabled: bool = True, scale_units: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = self.initial = initial
        self.fields: dict[str, Any] = {}
        self.started = self.last_line_at = time.monotonic()
        self.step = max(1, math.ceil((total or 0) * every_percent / 100))
        self.next_line = initial - initial % self.step + self.step
        self.bar = None
        self.closed = False
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", initial=initial, file=self.stream,
                            dynamic_ncols=True, smoothing=0.05, unit_scale=scale_units)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.advance_to(self.done + n, **fields)

    def advance_to(self, done: int, **fields: Any) -> None:
        """Set the count of work done (never backwards) and any fields to show."""
        step, self.done = max(0, done - self.done), max(done, self.done)
        self.fields.update(fields)
        if self.bar is not None:
            if fields:
                self.bar.set_postfix(self.fields, refresh=False)
            self.bar.update(step)
        elif self.enabled and self._line_due():
            self._write_line()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._write_line(final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line_due(self) -> bool:
        if self.total:
            if self.done < self.next_line or self.done >= self.total:
                return False  # the last line is close()'s
            self.next_line = self.done - self.done % self.step + self.step
            return True
        return time.monotonic() - self.last_line_at >= UNKNOWN_TOTAL_SECONDS

    def _write_line(self, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.done:,}" + (f"/{self.total:,} ({self.done / self.total:.0%})" if self.total else "")
                 + f" {self.unit}"]
        parts.append(f"{rate:.1f} {self.unit}/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        parts += [f"{key}={value}" for key, value in self.fields.items()]
        self.stream.write(", ".join(parts) + "\n")
        self.stream.flush()
        self.last_line_at = now


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
