"""The Hugging Face Hub, asked the same way by every part that asks it.

Why one module: models, datasets and uploads each ask the hub a question before any long work
starts, and each must answer offline in seconds.  ``huggingface_hub``'s shared session waits
forever by default, and ``HF_HUB_OFFLINE`` is read once at its import (so a value set later, by a
test or a wrapper script, is seen only through the environment).  Both rules live here once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HUB_TIMEOUT_S = 10
# The session is shared by the whole process and sweep pieces run in threads: the first caller
# in sets the timeout, the last one out restores it.
_lock = threading.Lock()
_holders = 0
_previous: object = None


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as the client read it at import, or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
        "1", "true", "yes", "on")


@contextmanager
def hub_timeout(seconds: float = HUB_TIMEOUT_S) -> Iterator[None]:
    """Every hub request inside gives up after ``seconds`` (the shared session's timeout, restored
    after)."""
    global _holders, _previous
    from huggingface_hub import get_session

    session = get_session()
    with _lock:
        if _holders == 0:
            _previous, session.timeout = session.timeout, seconds
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                session.timeout = _previous
