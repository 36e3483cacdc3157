"""Errors the platform reports to a user, and the exit status that goes with them.

Every error names what it concerns (a file, a scan, a session, a config key) and the
cause, so a log line alone tells a data manager what to fix.
"""

#: Exit status of a ``vhi`` command that stopped on a :class:`VhiError` (bad input,
#: config or method failure); 0 is success, anything else is a crash.
EXIT_INPUT = 2
#: Exit status of a ``vhi`` command stopped by its environment, not its input: disk full,
#: no permission, out of memory. The message names the file; fix the machine and rerun.
EXIT_ENVIRONMENT = 3


class VhiError(Exception):
    """Base class for every error the platform reports to a user."""


class InputError(VhiError):
    """An input file is missing, unreadable or not what the method needs.

    The message always starts with the file (or scan) it concerns.
    """

    def __init__(self, what: object, cause: str) -> None:
        self.what = str(what)
        self.cause = cause
        super().__init__(f"{self.what}: {cause}")


class MethodError(VhiError):
    """The published method cannot be applied to this scan (e.g. no valid threshold)."""

    def __init__(self, scan: object, cause: str) -> None:
        self.scan = str(scan)
        self.cause = cause
        super().__init__(f"{self.scan}: {cause}")


class ConfigError(VhiError):
    """The config or a session sheet is invalid; the message names the key, row or session."""

    def __init__(self, where: object, cause: str) -> None:
        self.where = str(where)
        self.cause = cause
        super().__init__(f"{self.where}: {cause}")
