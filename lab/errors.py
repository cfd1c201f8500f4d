"""Errors the lab raises. Libraries raise these; only lab.cli prints them and exits."""


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
