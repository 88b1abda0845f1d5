"""The hub check goes through ``huggingface_hub``: the user's login counts (``HF_TOKEN_PATH``, the
token file ``hf auth login`` writes), a gated model without access is one line saying how to get
it, and a hub that does not answer is an error within seconds.  A loopback server stands in for
the hub (``HF_ENDPOINT``), answering as the hub does (``X-Error-Code``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

RESOLVE = ("import sys\nfrom codealign.tasks.generation.models import ModelNotFound, resolve_model\n"
           "try:\n    print(resolve_model(sys.argv[1]))\nexcept ModelNotFound as exc:\n"
           "    print(exc, file=sys.stderr)\n    sys.exit(2)\n")


class FakeHub(BaseHTTPRequestHandler):
    """``/api/models/<id>/auth-check``: 200 for org/open, and for org/private with the right
    token; the hub's 403 GatedRepo for org/gated; its 404 RepoNotFound otherwise; org/slow never
    answers in time."""

    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        FakeHub.seen.append((self.path, auth))
        repo = self.path.removeprefix("/api/models/").removesuffix("/auth-check")
        if repo == "org/slow":
            time.sleep(30)
        if repo == "org/open" or (repo == "org/private" and auth == "Bearer hf_from_token_file"):
            status, code = 200, None
        elif repo == "org/gated":
            status, code = 403, "GatedRepo"
        else:
            status, code = 404, "RepoNotFound"
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", f"{code} for {repo}")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def resolve(ref: str, hub: str, tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env = {**clean, "HF_ENDPOINT": hub, "HF_HOME": str(tmp_path / "hf"), **env}
    return subprocess.run([sys.executable, "-c", RESOLVE, ref], capture_output=True, text=True, env=env, timeout=120)


def test_a_model_the_hub_knows_resolves_to_its_id(hub, tmp_path):
    done = resolve("org/open", hub, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "org/open", done.stderr


def test_the_login_in_a_token_file_is_used(hub, tmp_path):
    """`hf auth login` writes a token file; HF_TOKEN_PATH names one: both count, not only HF_TOKEN."""
    token_file = tmp_path / "token"
    token_file.write_text("hf_from_token_file")
    assert resolve("org/private", hub, tmp_path).returncode == 2  # no login: not visible
    done = resolve("org/private", hub, tmp_path, HF_TOKEN_PATH=str(token_file))
    assert done.returncode == 0, done.stderr
    (tmp_path / "hf").mkdir(exist_ok=True)
    (tmp_path / "hf" / "token").write_text("hf_from_token_file")  # where `hf auth login` puts it
    assert resolve("org/private", hub, tmp_path).returncode == 0
    assert ("/api/models/org/private/auth-check", "Bearer hf_from_token_file") in FakeHub.seen


@pytest.mark.parametrize("ref, message", [
    ("org/gated", "org/gated: a gated model on the Hugging Face Hub and this login has no access; request it at "),
    ("org/missing", "org/missing: no such model on the Hugging Face Hub"),
])
def test_gated_and_missing_models_are_one_line_saying_what_to_do(hub, tmp_path, ref, message):
    done = resolve(ref, hub, tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_hub_that_does_not_answer_is_an_error_within_seconds(hub, tmp_path):
    started = time.monotonic()
    done = resolve("org/slow", hub, tmp_path)
    assert done.returncode == 2 and "cannot be reached" in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
    assert time.monotonic() - started < 25  # the client's own default would wait the full 30 s answer


def test_a_pinned_revision_resolves_to_its_snapshot_and_another_is_not_taken_for_it(hub, tmp_path):
    """`org/name@rev`: the snapshot of that commit in the Hugging Face cache (offline here), the
    directory every engine loads and lineage fingerprints; a revision not in the cache is not
    replaced by another one."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    done = resolve(f"org/tiny@{commit}", hub, tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 0 and done.stdout.strip() == str(snapshot), done.stderr
    other = resolve("org/tiny@" + "f" * 40, hub, tmp_path, HF_HUB_OFFLINE="1")
    assert other.returncode == 2 and "not in the local Hugging Face cache" in other.stderr
