"""Errors kqlib raises on purpose. Each message says what was wrong and what to do about it."""


class KqError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class UnknownModelError(KqError, ValueError):
    pass


class UnsupportedArchitectureError(KqError, ValueError):
    pass


class MissingDependencyError(KqError, ImportError):
    pass


class OfflineError(KqError, OSError):
    pass


class DataError(KqError, ValueError):
    pass


class ParameterError(KqError, ValueError):
    pass


class TooFewFacts(DataError):
    """The model answers fewer ParaRel facts than the run needs; the message lists, per relation, the facts
    scanned and kept, and what to run instead (``kq run`` stops the chapter with exit status 2)."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C = SIGINT, or SIGTERM); the command exits 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class ChapterFailed(KqError):
    """A chapter raised (or timed out, or its kernel died) while executing."""

    exit_code = 1
