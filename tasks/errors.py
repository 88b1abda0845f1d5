"""The root of codealign's errors.

Why one root: the command line catches it once, where it starts, and prints one line; a new
error class only says which of its kind it is.  Each class keeps the builtin base callers
already catch it by (``InputError`` is a ``ValueError``, ``MissingArtifact`` a
``FileNotFoundError``).  Anything that is not a :class:`CodealignError` is a bug: a traceback
with ``--verbose``, one line without.  Standard library only and imports nothing: every layer
may raise these.
"""

from __future__ import annotations


class CodealignError(Exception):
    """Something the user can act on (a bad file, option, checkpoint, artifact or setting).
    ``exit_code``: what the command line exits with (2: bad input; 1: the run itself failed)."""

    exit_code = 2


# What a retry can cure: the network, a store or a node that was away for a while.  Matched by
# class name so that this module imports nothing (botocore's and Ray's classes are theirs).
_TRANSIENT_NAMES = frozenset({
    # botocore, when its own retries are used up (s3fs turns most others into OSError)
    "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
    # aiohttp, under s3fs
    "ServerDisconnectedError", "ClientConnectionError", "ClientPayloadError",
    # Ray: a worker, an actor, a node or an object lost
    "RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "ActorUnavailableError",
})
# OSErrors that say something about the input, not the moment: retrying cannot change them.
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                        NotADirectoryError)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` may not happen again if the same work is tried later: a connection, a
    store or a node that was away (an ``OSError`` other than a missing or forbidden file, one of
    the network and Ray classes above, or a class that says ``transient = True``, like an
    engine that failed to start).  Never a :class:`CodealignError` (bad input, or a run whose
    items failed): that would fail the same way.  Anything else is a bug, not retried either."""
    if isinstance(exc, CodealignError):
        return False
    if getattr(exc, "transient", False):
        return True
    if isinstance(exc, OSError):
        return not isinstance(exc, _PERMANENT_OS_ERRORS)
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)
