"""Errors the platform reports to a user, and the exit status that goes with them.

Every error names what it concerns (a file, a scan, a session, a config key, a site) and
the cause, so a log line alone tells a data manager what to fix.

Exit statuses of the ``vhi`` command (the table in docs/usage.md, "Exit statuses"):
0 done; :data:`EXIT_INPUT` bad input or config; :data:`EXIT_ENVIRONMENT` stopped by its
environment (a server that cannot be reached, another run holding the work folder, disk
full, no permission, out of memory); anything else is a crash (a bug: the traceback says
where). Each error class carries its status (:attr:`VhiError.exit_status`).
"""

#: Exit status of a ``vhi`` command that stopped on bad input: a file, a session sheet, the
#: config or the method's preconditions (:class:`InputError`, :class:`ConfigError`,
#: :class:`MethodError`). Fix the input and rerun.
EXIT_INPUT = 2
#: Exit status of a ``vhi`` command stopped by its environment, not its input: a server
#: that cannot be reached (:class:`UnreachableError`), the work folder held by another run
#: (:class:`WorkFolderBusyError`), disk full, no permission, out of memory. The message names
#: the site or file; fix the machine or wait, and rerun the same command.
EXIT_ENVIRONMENT = 3


class VhiError(Exception):
    """Base class for every error the platform reports to a user."""

    #: The ``vhi`` command's exit status when this error stops it.
    exit_status = EXIT_INPUT


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


class UnreachableError(VhiError):
    """A site's server cannot be reached: refused or dropped connections, timeouts, or a
    gateway that keeps answering 502/503/504. The environment, not the input: the same
    command works once the server is back."""

    exit_status = EXIT_ENVIRONMENT

    def __init__(self, site: object, cause: str) -> None:
        self.site = str(site)
        self.cause = cause
        named = f"site {self.site}" in cause  # a source's message names its site already
        super().__init__(f"{'' if named else f'site {self.site}: '}server cannot be reached: {cause}")


class WorkFolderBusyError(VhiError):
    """Another run holds the work folder (its run marker, :mod:`vhi.cohort.run`)."""

    exit_status = EXIT_ENVIRONMENT

    def __init__(self, work: object, cause: str) -> None:
        self.work = str(work)
        self.cause = cause
        super().__init__(f"{self.work}: {cause}")
