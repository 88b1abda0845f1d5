"""Model references, resolved in one place for every flow and command.

A reference is a local model directory (or its ``file://`` URI), a checkpoint in object storage
(``s3://…``, fetched by whoever loads it), a toy model name (``toy-base``, ``toy-instruct``: built
offline on first use) or a Hugging Face id.  Resolution happens before any engine or cluster
starts and turns every way a reference can be wrong into one clear line: a missing directory
named as such, a malformed id, a hub that cannot be reached (with the hint to pass a local path,
or a cached copy with ``HF_HUB_OFFLINE=1``).  Hub ids already in the local Hugging Face cache
resolve to that copy, so they work offline.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from codealign.tasks.errors import CodealignError
from codealign.tasks.plugins import load_plugin, plugin_names

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
HUB_TIMEOUT_S = 5


class ModelNotFound(CodealignError, ValueError):
    """A model reference that cannot be used; the message says why and what to do."""


def _looks_like_path(ref: str) -> bool:
    """Absolute, relative-with-dot and home paths, anything that exists, and anything with more
    slashes than a hub id (owner/name) can have."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or Path(ref).exists()


def resolve_model(ref: str) -> str:
    """A local directory vLLM and transformers can load for ``ref`` (or a hub id that the hub
    answered for, to be downloaded by them)."""
    if ref in plugin_names("models"):  # the toy world's models (built on first use), and plugins'
        return str(load_plugin("models", ref)(ref))
    if ref.startswith("file://"):
        ref = ref[len("file://"):]
    elif "://" in ref:
        return ref  # a remote checkpoint: fingerprinted and validated where it lives, copied where it runs
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelNotFound(f"{ref}: no such local model directory")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{ref}: not a model directory (no config.json)")
        return str(path.resolve())
    if not _HUB_ID.fullmatch(ref):
        raise ModelNotFound(f"{ref!r}: neither a local model directory, "
                            f"a registered model ({', '.join(plugin_names('models'))}) "
                            "nor a Hugging Face id (owner/name)")
    return _resolve_hub_id(ref)


def _resolve_hub_id(ref: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, local_files_only=True)  # a cached copy: no network needed
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several kinds)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelNotFound(f"{ref}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                            "pass a local model directory")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(f"{endpoint}/api/models/{ref}", method="GET")
    if token := os.environ.get("HF_TOKEN"):
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S):
            return ref
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ModelNotFound(f"{ref}: no such model on the Hugging Face Hub ({endpoint})") from None
        if exc.code in (401, 403):
            raise ModelNotFound(f"{ref}: gated or private on the Hugging Face Hub; set HF_TOKEN") from None
        raise ModelNotFound(f"{ref}: the Hugging Face Hub ({endpoint}) answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelNotFound(f"{ref}: the Hugging Face Hub ({endpoint}) cannot be reached ({reason}); pass a local "
                            "model directory, or a cached copy with HF_HUB_OFFLINE=1") from None
