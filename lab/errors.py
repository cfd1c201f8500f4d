"""Errors the lab raises. Libraries raise these; only lab.cli prints them and exits."""


def one_line(message: str) -> str:
    """Control characters (a newline in a bad value) shown escaped, so an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class LabError(Exception):
    """A problem the user can act on: the message is the whole story, one line."""

    exit_code = 1


class TopologyError(LabError):
    """The topology file is wrong: the message names the key path, the value and the file."""

    exit_code = 2


class EngineError(LabError):
    """No usable Docker engine / compose, or an engine call failed."""

    exit_code = 3


class LabNotRunning(LabError):
    """A verb that needs the running lab was called while it is down."""

    exit_code = 4
