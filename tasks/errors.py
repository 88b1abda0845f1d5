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
