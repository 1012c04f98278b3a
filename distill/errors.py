"""Exceptions raised by the library. Only the CLI turns them into one clean line."""


class DistillError(Exception):
    """Base class: every expected failure a user can fix."""


class ConfigError(DistillError):
    """A filter package or setting is wrong; the message names the file and key."""


class RecordError(DistillError):
    """One input line is unusable; the message names the file, line and field."""

    def __init__(self, path: str, line_no: int, reason: str):
        self.path = path
        self.line_no = line_no
        self.reason = reason
        super().__init__(f"{path}:{line_no}: {reason}")


class OracleError(DistillError):
    """The oracle could not be called (missing key, bad endpoint, exhausted budget)."""


class ModelArtifactError(DistillError):
    """A model folder is incomplete or inconsistent (no distill.json, missing head...)."""


def raise_settings_problems(problems: list[str]) -> None:
    """One ConfigError listing every problem with a run's settings, if there are any.

    A single problem stays on one line, so the CLI's error is one clean line.
    """
    if len(problems) == 1:
        raise ConfigError(f"invalid settings: {problems[0]}")
    if problems:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))


class JournalError(DistillError):
    """The label journal exists but cannot be used; the message names the file.
    Never answered by starting a new journal: that would pay for labels again."""


class OracleUnreachableError(OracleError):
    """The oracle endpoint failed to connect on every attempt; the journal is intact."""


class LabelRunError(DistillError):
    """A labelling run stopped on an unexpected error; the journal is intact."""


class OutputError(DistillError):
    """An output file cannot be written (read-only folder, full disk); whole lines are kept."""


class OutputBusyError(OutputError):
    """Another run holds the lock on an output; the message names its process id."""


class CheckpointError(DistillError):
    """A training checkpoint cannot be resumed (corrupt, incomplete, or from another run)."""
