"""Errors the platform raises for bad input: each names the file or scan and the cause."""


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
