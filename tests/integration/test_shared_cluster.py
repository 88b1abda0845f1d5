"""What several runs sharing one Ray cluster and one store rely on, below the flows: no secrets
in what Ray workers are sent, CPU reservations that match sandbox pools, leases that let one
writer make a shared artifact, fingerprints that do not re-read unchanged checkpoints, and a
verified, size-capped cache of remote checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codealign.tasks.artifacts import checkpoint_cache, checkpoints, leases
from codealign.tasks.artifacts.checkpoints import CheckpointError, fingerprint
from codealign.tasks.artifacts.lineage import ArtifactMeta
from codealign.tasks.artifacts.store import ArtifactStore


def test_forwarded_env_carries_no_secrets(monkeypatch):
    from codealign.flows.runtime import forwarded_env

    secrets = {"AWS_ACCESS_KEY_ID": "AKIA-secret", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok",
               "HF_TOKEN": "hf_secret", "PREFECT_API_KEY": "pnu_secret", "CODEALIGN_DB_PASSWORD": "pw",
               "VLLM_API_KEY": "vk"}
    plain = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_SHARED_CREDENTIALS_FILE": "/etc/codealign/aws",
             "AWS_DEFAULT_REGION": "us-east-1", "CODEALIGN_DATA_DIR": "/data", "HF_HOME": "/hf"}
    for name, value in {**secrets, **plain}.items():
        monkeypatch.setenv(name, value)
    env = forwarded_env()
    assert not set(secrets) & set(env), env
    assert not set(secrets.values()) & set(env.values())
    assert all(env[name] == value for name, value in plain.items())


def test_sandbox_reservation_never_exceeds_the_largest_node(monkeypatch):
    import ray

    from codealign.flows.runtime import sandbox_cpus

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}},
                                               {"Alive": True, "Resources": {"CPU": 1.0}},
                                               {"Alive": False, "Resources": {"CPU": 64.0}}])
    assert sandbox_cpus(None) == 2  # every core of the largest alive node
    assert sandbox_cpus(1) == 1
    assert sandbox_cpus(8) == 2  # more than any node has would never be scheduled


# ---------------------------------------------------------------- leases



def _meta() -> ArtifactMeta:
    return ArtifactMeta("test", {}, (), {})


def test_exclusive_create_admits_one_writer(store):
    assert store.create_exclusive("u/a.lease", b"first")
    assert not store.create_exclusive("u/a.lease", b"second")
    assert store.read_object("u/a.lease") == b"first"
    store.delete_object("u/a.lease")
    assert store.read_object("u/a.lease") is None


def test_concurrent_producers_compute_an_artifact_once(store):
    calls, results = [], []

    def make():
        calls.append(threading.get_ident())
        time.sleep(1.0)  # long enough for the others to find the lease taken
        return store.put("u/out.json", b'{"x": 1}', _meta())

    threads = [threading.Thread(target=lambda: results.append(leases.produce_once(store, "u/out.json", make,
                                                                                  poll_s=0.1)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4 and len(set(results)) == 1
    assert store.get("u/out.json") == b'{"x": 1}'
    assert store.read_object("u/out.json.lease") is None, "the lease is released"


def test_a_stale_lease_is_taken_over(store):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = json.dumps({"holder": "h", "host": os.uname().nodename, "pid": int(finished.stdout), "expires": 1e12})
    store.write_object("u/a.json.lease", dead.encode())  # its holder's process is gone
    ref = leases.produce_once(store, "u/a.json", lambda: store.put("u/a.json", b"a", _meta()), poll_s=0.1)
    assert store.get(ref.uri) == b"a"
    expired = json.dumps({"holder": "h", "host": "another-host", "pid": 1, "expires": time.time() - 1})
    store.write_object("u/b.json.lease", expired.encode())
    ref = leases.produce_once(store, "u/b.json", lambda: store.put("u/b.json", b"b", _meta()), poll_s=0.1)
    assert store.get(ref.uri) == b"b"


def test_a_live_lease_is_waited_for_and_its_artifact_reused(store):
    alive = json.dumps({"holder": "h", "host": "another-host", "pid": 1, "expires": time.time() + 600})
    store.write_object("u/c.json.lease", alive.encode())
    waited = []
    threading.Timer(1.0, lambda: store.put("u/c.json", b"theirs", _meta())).start()
    ref = leases.produce_once(store, "u/c.json", lambda: pytest.fail("computed although another holds the lease"),
                              poll_s=0.1, on_wait=waited.append)
    assert store.get(ref.uri) == b"theirs" and waited and waited[0].host == "another-host"


def test_a_held_lease_is_renewed(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    lease = leases.Lease(store, "u/d.json", ttl=0.6)
    assert lease.try_acquire()
    first = leases.read_lease(store, "u/d.json.lease").expires
    time.sleep(0.8)  # past the first expiry: renewed twice meanwhile
    assert leases.read_lease(store, "u/d.json.lease").expires > first
    assert not leases.Lease(store, "u/d.json", ttl=0.6).try_acquire()
    lease.release()
    assert store.read_object("u/d.json.lease") is None


# ---------------------------------------------------------------- fingerprints


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _count_hashing(monkeypatch) -> list[str]:
    read: list[str] = []
    real = checkpoints.hash_file

    def spy(fs, path):
        read.append(path)
        return real(fs, path)

    monkeypatch.setattr(checkpoints, "hash_file", spy)
    return read


def test_unchanged_checkpoint_is_fingerprinted_without_reading_it(tmp_path, private_cache, monkeypatch):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    with open(ckpt / "model.safetensors", "wb") as f:
        f.truncate(1 << 30)  # 1 GiB
    read = _count_hashing(monkeypatch)
    start = time.perf_counter()
    first = fingerprint(str(ckpt))
    first_s = time.perf_counter() - start
    assert len(read) == 2
    start = time.perf_counter()
    again = fingerprint(str(ckpt))
    again_s = time.perf_counter() - start
    print(f"fingerprint of a 1 GiB checkpoint: first {first_s:.2f} s, unchanged again {again_s:.4f} s")
    assert again == first and len(read) == 2, "the second fingerprint read file bytes"
    with open(ckpt / "model.safetensors", "r+b") as f:  # rewritten in place: a new checkpoint
        f.write(b"x")
    changed = fingerprint(str(ckpt))
    assert changed.sha256 != first.sha256 and read[2:] == [f"{ckpt}/model.safetensors"]


def _upload_checkpoint(s3_server, tmp_path, name: str, weights: bytes) -> str:
    import s3fs

    local = tmp_path / name
    local.mkdir(parents=True)
    (local / "config.json").write_text('{"model_type": "toy"}')
    (local / "model.safetensors").write_bytes(weights)
    (local / "optimizer.pt").write_bytes(b"optimizer state vLLM does not need" * 100)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint"]})
    remote = f"{s3_server['bucket']}/ckpts-{tmp_path.name}/{name}"
    fs.put(str(local) + "/", remote, recursive=True)
    return f"s3://{remote}"


def test_s3_fingerprint_is_keyed_by_etag(s3_server, tmp_path, private_cache, monkeypatch):
    import s3fs

    uri = _upload_checkpoint(s3_server, tmp_path, "checkpoint-1", b"w" * 1000)
    read = _count_hashing(monkeypatch)
    first = fingerprint(uri)
    assert len(read) == 2 and fingerprint(uri) == first and len(read) == 2
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint"]})
    fs.pipe_file(uri[len("s3://"):] + "/model.safetensors", b"v" * 1000)  # same size, new content and ETag
    assert fingerprint(uri).sha256 != first.sha256 and len(read) == 3


# ---------------------------------------------------------------- the checkpoint cache


def _count_downloads(monkeypatch, corrupt: bool = False) -> list[str]:
    fetched: list[str] = []
    real = checkpoint_cache._download

    def spy(fs, source, dest):
        fetched.append(source.rsplit("/", 1)[-1])
        real(fs, source, dest)
        if corrupt and source.endswith(".safetensors"):
            Path(dest).write_bytes(b"bit rot")

    monkeypatch.setattr(checkpoint_cache, "_download", spy)
    return fetched


def test_cached_copy_holds_what_vllm_needs_and_is_verified(s3_server, tmp_path, private_cache, monkeypatch):
    uri = _upload_checkpoint(s3_server, tmp_path, "checkpoint-2", b"weights" * 1000)
    ckpt = fingerprint(uri)
    fetched = _count_downloads(monkeypatch)
    path = Path(checkpoint_cache.local_copy(ckpt))
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # no optimizer state
    assert sorted(fetched) == ["config.json", "model.safetensors"]
    assert checkpoint_cache.local_copy(ckpt) == str(path) and len(fetched) == 2, "a good copy is reused"

    (path / "model.safetensors").write_bytes(b"damaged in the cache")
    assert checkpoint_cache.local_copy(ckpt) == str(path)
    assert len(fetched) == 4 and (path / "model.safetensors").read_bytes() == b"weights" * 1000, "fetched again"


def test_a_bad_transfer_is_an_error_naming_the_file(s3_server, tmp_path, private_cache, monkeypatch):
    uri = _upload_checkpoint(s3_server, tmp_path, "checkpoint-3", b"weights" * 1000)
    ckpt = fingerprint(uri)
    _count_downloads(monkeypatch, corrupt=True)
    with pytest.raises(CheckpointError, match=rf"{uri}/model\.safetensors: the copied file's sha256"):
        checkpoint_cache.local_copy(ckpt)
    assert not any(p.name.startswith(ckpt.sha256[:24]) for p in (private_cache / "checkpoints").iterdir()), \
        "nothing half-copied is left in the cache"


def test_a_checkpoint_rewritten_after_its_fingerprint_is_refused(s3_server, tmp_path, private_cache):
    import s3fs

    uri = _upload_checkpoint(s3_server, tmp_path, "checkpoint-4", b"weights" * 1000)
    ckpt = fingerprint(uri)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server["endpoint"]})
    fs.pipe_file(uri[len("s3://"):] + "/model.safetensors", b"retrained" * 1000)
    with pytest.raises(CheckpointError, match="changed after it was fingerprinted"):
        checkpoint_cache.local_copy(ckpt)


def test_cache_evicts_least_recently_used_copies_under_its_cap(s3_server, tmp_path, private_cache, monkeypatch):
    ckpts = [fingerprint(_upload_checkpoint(s3_server, tmp_path, f"checkpoint-{i}", bytes([i]) * 100_000))
             for i in (10, 11, 12)]
    one = 100_000 + len('{"model_type": "toy"}')
    monkeypatch.setenv("CODEALIGN_CACHE_MAX_GB", str(2.5 * one / (1 << 30)))  # room for two copies
    a, b = (Path(checkpoint_cache.local_copy(c)) for c in ckpts[:2])
    time.sleep(0.05)
    checkpoint_cache.local_copy(ckpts[0])  # a is used again: b is now the least recently used
    time.sleep(0.05)
    c = Path(checkpoint_cache.local_copy(ckpts[2]))
    assert a.is_dir() and c.is_dir() and not b.exists()
    cached = [p for p in (private_cache / "checkpoints").iterdir() if p.is_dir()]
    assert sum(f.stat().st_size for d in cached for f in d.iterdir()) <= 2.5 * one
    monkeypatch.setenv("CODEALIGN_CACHE_MAX_GB", "lots")
    with pytest.raises(ValueError, match="CODEALIGN_CACHE_MAX_GB='lots'"):
        checkpoint_cache.local_copy(ckpts[1])
