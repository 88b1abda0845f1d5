"""Model references, resolved in one place for every flow and command.

A reference is a local model directory (or its ``file://`` URI), a PEFT adapter directory (merged
into its base, :func:`merged_adapter`), a checkpoint in object storage
(``s3://…``, fetched by whoever loads it), a toy model name (``toy-base``, ``toy-instruct``: built
offline on first use) or a Hugging Face id.  Resolution happens before any engine or cluster
starts and turns every way a reference can be wrong into one clear line: a missing directory
named as such, a malformed id, a gated or missing hub model (asked of the hub through
``huggingface_hub``, so a login by ``hf auth login``, ``HF_TOKEN_PATH`` or ``HF_TOKEN`` counts), a hub
that cannot be reached within seconds (with the hint to pass a local path,
or a cached copy with ``HF_HUB_OFFLINE=1``).  Hub ids already in the local Hugging Face cache
resolve to that copy, so they work offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from codealign.tasks.errors import CodealignError
from codealign.tasks.generation.hub import hub_offline, hub_timeout
from codealign.tasks.plugins import load_plugin, plugin_names

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(@[\w./-]+)?")


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
        if (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
            return merged_adapter(path)
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{ref}: not a model directory (no config.json) nor a PEFT adapter "
                                f"(no {ADAPTER_CONFIG})")
        return str(path.resolve())
    if not _HUB_ID.fullmatch(ref):
        raise ModelNotFound(f"{ref!r}: neither a local model directory, "
                            f"a registered model ({', '.join(plugin_names('models'))}) "
                            "nor a Hugging Face id (owner/name, pinned: owner/name@revision)")
    return _resolve_hub_id(ref)


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_RECORD = "codealign-adapter.json"  # in a merged adapter's directory: what it was made of


def merged_adapter(adapter: Path) -> str:
    """A PEFT adapter directory as a full model vLLM can load: its base (``base_model_name_or_path``
    in adapter_config.json, resolved like any reference) with the adapter merged in, built once
    into codealign's cache under the hash of both.  The directory holds ``codealign-adapter.json``
    (base and adapter, each with its sha256), so the merged model's fingerprint, and every
    evaluation's lineage, name both."""
    from codealign.tasks.artifacts.checkpoints import combined_digest, file_digests
    from codealign.tasks.files import atomic_directory, cache_dir

    try:
        config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    except ValueError as exc:
        raise ModelNotFound(f"{adapter / ADAPTER_CONFIG}: not valid JSON ({exc})") from None
    base_ref = config.get("base_model_name_or_path")
    if not isinstance(base_ref, str) or not base_ref:
        raise ModelNotFound(f"{adapter / ADAPTER_CONFIG}: no base_model_name_or_path, so its base is unknown")
    base = resolve_model(base_ref)
    adapter_sha = combined_digest(file_digests(str(adapter.resolve())))
    base_sha = combined_digest(file_digests(base)) if os.path.isdir(base) else base
    record = {"adapter": str(adapter.resolve()), "adapter_sha256": adapter_sha, "base": base_ref,
              "base_path": base, "base_sha256": base_sha}
    target = cache_dir() / "merged-adapters" / hashlib.sha256(f"{adapter_sha}:{base_sha}".encode()).hexdigest()[:20]
    if not (target / ADAPTER_RECORD).is_file():
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with atomic_directory(target) as work:
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), str(adapter))
            model.merge_and_unload().save_pretrained(work, safe_serialization=True)
            tokenizer_from = adapter if (adapter / "tokenizer_config.json").is_file() else base
            AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(work)
            (work / ADAPTER_RECORD).write_text(json.dumps(record, indent=1))  # last: marks it complete
    return str(target)


def _resolve_hub_id(ref: str) -> str:
    """A cached copy, else the hub's own answer through ``huggingface_hub`` (so the user's login
    counts: ``HF_TOKEN``, ``HF_TOKEN_PATH`` or ``hf auth login``), within the hub timeout."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    name, _, revision = ref.partition("@")
    try:  # a cached copy (of that revision): no network needed
        return snapshot_download(name, revision=revision or None, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (huggingface_hub raises several kinds)
        pass
    if hub_offline():
        raise ModelNotFound(f"{ref}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                            "pass a local model directory")
    endpoint = constants.ENDPOINT.rstrip("/")
    try:
        with hub_timeout():
            HfApi(endpoint=endpoint).auth_check(name)
        if not revision:
            return ref  # downloaded by whoever loads it, at the hub's current revision
    except GatedRepoError:  # first: it is a RepositoryNotFoundError too
        raise ModelNotFound(f"{ref}: a gated model on the Hugging Face Hub and this login has no access; "
                            f"request it at {endpoint}/{name}, then log in (hf auth login) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{ref}: no such model on the Hugging Face Hub ({endpoint}), or a private one this "
                            "login cannot see (hf auth login, or set HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise ModelNotFound(f"{ref}: the Hugging Face Hub ({endpoint}) answered HTTP {status}") from None
    except Exception as exc:  # noqa: BLE001 - the transport's errors (refused, DNS, timeout)
        raise ModelNotFound(f"{ref}: the Hugging Face Hub ({endpoint}) cannot be reached ({type(exc).__name__}: "
                            f"{exc}); pass a local model directory, or a cached copy with HF_HUB_OFFLINE=1") from None
    # A pinned revision is fetched now: its snapshot directory (named by the commit) is what every
    # engine loads and what lineage fingerprints, so a nightly cannot change under the user.
    try:
        return snapshot_download(name, revision=revision)
    except Exception as exc:  # noqa: BLE001 - a revision that is not there, a download that fails
        raise ModelNotFound(f"{ref}: revision {revision!r} cannot be fetched ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
