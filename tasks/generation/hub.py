"""The Hugging Face Hub, asked the same way by every part that asks it.

Why one module: models, datasets and uploads each ask the hub a question before any long work
starts, and each must answer offline in seconds.  ``huggingface_hub``'s shared session waits
forever by default, and ``HF_HUB_OFFLINE`` is read once at its import (so a value set later, by a
test or a wrapper script, is seen only through the environment).  Both rules live here once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

HUB_TIMEOUT_S = 10


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as the client read it at import, or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in (
        "1", "true", "yes", "on")


@contextmanager
def hub_timeout(seconds: float = HUB_TIMEOUT_S) -> Iterator[None]:
    """Every hub request inside gives up after ``seconds`` (the shared session's timeout, restored
    after)."""
    from huggingface_hub import get_session

    session = get_session()
    previous, session.timeout = session.timeout, seconds
    try:
        yield
    finally:
        session.timeout = previous
