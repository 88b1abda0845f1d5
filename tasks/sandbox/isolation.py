"""Linux isolation primitives for the sandbox: namespaces, read-only mounts, capability drop.

Python 3.11 has no ``os.unshare``/``mount``, so the few syscalls we need go through libc with
ctypes.  The design is two-stage so the per-sample cost stays near one ``fork``:

* once per worker process (:func:`enter_worker_isolation`): a private network namespace with no
  usable interface and a private mount namespace in which every mount is read-only;
* once per worker, too: the worker becomes PID 1 of its own PID namespace
  (:func:`become_namespace_init`) with a ``/proc`` showing only that namespace;
* once per worker: home directories covered by an empty read-only tmpfs (:func:`hide_secrets`),
  and samples run as an unprivileged uid of their own (:func:`become_unprivileged`);
* between samples (:func:`reset_sample_filesystem`): fresh tmpfs mounts over ``/tmp`` (the
  private working directory), ``/dev/shm`` and ``/var/tmp``, with the interpreter's own
  directories that lie under them bound back read-only (:func:`keep_visible`).  The worker
  kills every other process of its namespace after each verdict (see ``runner.py``).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


_CAP_LAST = _cap_last()

_MOUNT_FLAG_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

# The running interpreter already links libc; CDLL(None) finds its symbols without
# ctypes.util, whose imports make every later fork of a worker measurably slower.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class IsolationError(OSError):
    """The OS refused a namespace, mount or capability operation."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise IsolationError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


@dataclass(frozen=True)
class IsolationMode:
    """What the worker managed to set up; reported once so users know what protects them."""

    namespaces: bool
    user_namespace: bool
    reason: str = ""


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _mount_points() -> list[tuple[str, int]]:
    """Mount points of this mount namespace with their per-mount flags, parents first."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            target = parts[4].encode().decode("unicode_escape")
            flags = 0
            for opt in parts[5].split(","):
                flags |= _MOUNT_FLAG_OPTIONS.get(opt, 0)
            points.append((target, flags))
    return points


def enter_worker_isolation() -> IsolationMode:
    """Move this worker into private network and mount namespaces with a read-only view of
    every filesystem.  Uses a user namespace when not root.  Returns what was achieved; the
    caller decides whether a fallback is acceptable (``--strict-isolation`` says no)."""
    uid, gid = os.geteuid(), os.getegid()
    user_ns = False
    try:
        if uid != 0:
            unshare(CLONE_NEWUSER)
            user_ns = True
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
        unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        for target, flags in _mount_points():
            try:
                mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
            except IsolationError:
                # Mounts hidden under others, or special ones the kernel will not remount:
                # only fatal for "/" itself.
                if target == "/":
                    raise
    except (IsolationError, OSError) as exc:
        return IsolationMode(namespaces=False, user_namespace=False, reason=str(exc))
    return IsolationMode(namespaces=True, user_namespace=user_ns)


def become_namespace_init() -> bool:
    """Fork into a new PID namespace.  Returns True in the child, which is PID 1 there and
    goes on serving; the parent only waits for it and exits with its status (never returns).
    PID 1 gets a /proc of its own, dies with its parent, and ignores SIGINT so a sample cannot
    interrupt it (SIGKILL from inside the namespace is dropped by the kernel anyway)."""
    import signal

    unshare(CLONE_NEWPID)
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return True


SCRATCH_MOUNTS = ("/tmp", "/dev/shm", "/var/tmp")
# Directories under a covered one (scratch mount or home) that samples must still see (the
# interpreter, its libraries, the project), kept as open handles: a tmpfs hides the originals,
# and each is bound back read-only from its handle (see keep_visible).  _clean: the scratch
# mounts' directories (mode, entries) right after the last reset.
_kept: list[tuple[str, int]] = []
_clean: dict[str, tuple[int, list[str]]] = {}


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_paths(hidden: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    """Where this interpreter and everything it imports live: its prefixes and the entries of
    its import path that lie outside the ``hidden`` answer keys (the project's checkout is one:
    what samples need from it is imported before they run)."""
    import sys

    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p}
    entries = {os.path.realpath(p) for p in sys.path if p}
    found = prefixes | {p for p in entries if not any(_under(p, h) for h in hidden)}
    return sorted(p for p in found if os.path.isdir(p))


def project_root() -> str:
    """The checkout (or installed tree) that holds ``tasks/``."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def answer_keys(paths: list[str]) -> list[str]:
    """The existing ones of ``paths`` (real paths, parents first) and every other place the
    same files are mounted (a bind mount of the data folder elsewhere shows the same answers):
    benchmark data, reference caches, stores, user files, the project's checkout."""
    found = {os.path.realpath(p) for p in paths if p and os.path.exists(p)}
    mounts = _mounts()  # read once: one answer-key path after another
    found |= {a for p in found for a in _mount_aliases(p, mounts)}
    return sorted(p for p in found if p != "/" and os.path.exists(p))


# Top-level directories of the operating system itself; every other one (/work, /srv, /opt,
# /mnt, /media, a CI runner's checkout...) is hidden from samples unless something they need
# lies inside (the interpreter, its libraries, the toolchains are bound back).
SYSTEM_ROOTS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin",
                          "sys", "tmp", "usr", "var"})


def non_system_roots() -> list[str]:
    """Top-level directories outside :data:`SYSTEM_ROOTS`: copies of data sets, checkouts and
    stores anywhere outside the system are out of a sample's view by default."""
    return sorted(os.path.join("/", d) for d in os.listdir("/")
                  if d not in SYSTEM_ROOTS and os.path.isdir(os.path.join("/", d))
                  and not os.path.islink(os.path.join("/", d)))


def _mounts() -> list[tuple[str, str, str]]:
    """(device, root within its filesystem, mount point) of every mount, from mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            decode = lambda s: s.encode().decode("unicode_escape")  # noqa: E731 - octal escapes
            out.append((parts[2], decode(parts[3]), decode(parts[4])))
    return out


def _mount_aliases(path: str, mounts: list[tuple[str, str, str]]) -> list[str]:
    """Other paths that show the same files as ``path`` (same device, same place within it)."""
    holder = max((m for m in mounts if _under(path, m[2])), key=lambda m: len(m[2]), default=None)
    if holder is None:
        return []
    device, root, point = holder
    inside = os.path.normpath(root.rstrip("/") + "/" + path[len(point):].lstrip("/"))
    aliases = []
    for dev, other_root, other_point in mounts:
        if dev == device and _under(inside, other_root) and other_point != point:
            alias = os.path.normpath(other_point.rstrip("/") + "/" + inside[len(other_root.rstrip("/")):].lstrip("/"))
            if alias != path and os.path.exists(alias):
                aliases.append(os.path.realpath(alias))
    return aliases


_answer_keys: list[str] = []


def hide_answer_keys(paths: list[str]) -> None:
    """Cover each directory with an empty read-only tmpfs (kept paths below it bound back) and
    each file with an empty one: samples see none of their content.  Covers that a scratch
    reset drops (a key inside a kept path under /tmp) are made again by each reset."""
    _answer_keys[:] = paths
    for path in paths:
        _hide(path)


def _hide(path: str) -> None:
    if os.path.isdir(path):
        _cover(path, "size=1m,mode=0755")
        mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    elif os.path.isfile(path):
        mount("/dev/null", path, None, MS_BIND)


def secret_roots() -> list[str]:
    """Directories samples must not see at all: home directories (SSH keys, cloud credentials,
    tokens, codealign's and Prefect's and Ray's state under the account's home)."""
    home = os.path.realpath(os.path.expanduser("~"))
    roots = ["/root", "/home"]
    if home != "/" and not any(_under(home, r) for r in roots):
        roots.append(home)
    return [r for r in roots if os.path.isdir(r)]


def keep_visible(paths: list[str], hidden: list[str]) -> list[str]:
    """Remember the ``paths`` that lie under a ``hidden`` directory (a venv in /tmp or in the
    account's home, a CI cache there) so that whatever covers that directory gets them bound
    back, read-only: verdicts must not depend on where Python is installed.  Call while the
    originals are still reachable, before anything is covered.  Returns the paths kept."""
    for path in sorted(paths):
        inside = any(_under(path, h) and path != h for h in hidden)  # never a whole hidden directory
        if inside and not any(_under(path, k) for k, _ in _kept):
            _kept.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)))
    return [k for k, _ in _kept]


def _cover(target: str, opts: str) -> None:
    """A fresh tmpfs over ``target``, with the kept paths below it bound back read-only (and
    the answer keys inside those hidden again)."""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    for path, handle in _kept:
        if _under(path, target) and path != target:
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            for key in _answer_keys:
                if _under(key, path) and key != target:
                    _hide(key)


def hide_secrets(roots: list[str]) -> None:
    """Cover each of ``roots`` with an empty read-only tmpfs (the kept paths below bound back),
    once per worker: samples see neither the files there nor their names."""
    for root in roots:
        _cover(root, "size=1m,mode=0755")
        mount(None, root, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _scratch_directories() -> dict[str, tuple[int, list[str]]]:
    """Every directory of the scratch mounts (not descending into kept binds) with its mode and
    entries: taken once per reset, as the picture of a clean scratch."""
    kept = {k for k, _ in _kept}
    picture = {}
    for target in SCRATCH_MOUNTS:
        if not os.path.isdir(target):
            continue
        for root, dirs, _ in os.walk(target):
            dirs[:] = [d for d in dirs if os.path.join(root, d) not in kept]
            picture[root] = (os.stat(root).st_mode, sorted(os.listdir(root)))
    return picture


def _scratch_is_pristine() -> bool:
    """True when every directory of the clean picture still holds exactly what it held, with the
    same mode (the common case: most samples write nothing, and then the scratch mounts need not
    be replaced).  One stat and one listdir per directory: this runs after every sample."""
    if not _clean:
        return False
    try:
        return all(os.stat(path).st_mode == mode and sorted(os.listdir(path)) == entries
                   for path, (mode, entries) in _clean.items())
    except OSError:
        return False


def reset_sample_filesystem(tmpfs_mb: int, work: str, owner: int | None = None) -> None:
    """Give the next sample empty scratch space and an empty private ``work`` directory:
    replace the writable scratch mounts with fresh tmpfs ones (called by PID 1 between samples,
    after every sample process is dead, so the old mounts are simply dropped), unless they are
    exactly as the last reset left them (the common case: most samples write nothing).  The
    work directory belongs to ``owner``, the uid samples run as."""
    if _scratch_is_pristine():
        return
    opts = f"size={tmpfs_mb}m,mode=1777"
    for target in SCRATCH_MOUNTS:
        if not os.path.isdir(target):
            continue
        _libc.umount2(target.encode(), MNT_DETACH)  # EINVAL the first time: nothing mounted yet
        _cover(target, opts)
    os.mkdir(work, 0o700)
    if owner is not None:
        os.chown(work, owner, owner)
    _clean.clear()
    _clean.update(_scratch_directories())


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def lock_inheritable_privileges() -> None:
    """Empty the capability bounding set, lock the securebits and set no_new_privs: what every
    sample inherits through fork and can never undo.  Done once in the worker, not per sample
    (each of these commits new credentials, and ~45 commits per sample cost ~0.4 ms of CPU);
    harmless there because the worker never execs, and its own effective capabilities, which
    it still needs to replace tmpfs mounts, are untouched."""
    for cap in range(_CAP_LAST + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    # SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP(_LOCKED) | KEEP_CAPS_LOCKED
    _libc.prctl(PR_SET_SECUREBITS, 0x2F, 0, 0, 0)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


# Samples run as an unprivileged uid of their own worker: SAMPLE_UID_BASE + the worker's pid
# (unique while the worker lives, so RLIMIT_NPROC counts one worker's sample and nothing else).
SAMPLE_UID_BASE = 200_000


def drop_groups() -> None:
    """No supplementary groups, set once in the worker for every sample it forks (samples then
    only switch uid and gid: fewer credential changes per sample)."""
    os.setgroups([])


def become_unprivileged(uid: int) -> None:
    """Switch a sample process to ``uid`` (group ``uid``, no supplementary groups): files the
    host keeps to their owner (/etc/shadow, keys, 0600 files) are unreadable by permission.
    The securebits locked in the worker keep the capabilities across the switch; the caller
    drops them right after."""
    os.setresgid(uid, uid, uid)  # supplementary groups were cleared in the worker (drop_groups)
    os.setresuid(uid, uid, uid)
    # A uid change makes the process non-dumpable, which hands its /proc/self to root: the
    # sample could no longer read its own status, fds or environment.  Core dumps stay off
    # (RLIMIT_CORE 0) and only the sample's own processes share its uid.
    _check(_libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")


def make_non_dumpable() -> None:
    """No ptrace and no /proc/<pid>/mem for processes of the same uid without CAP_SYS_PTRACE
    (the tests process of the self-tests path, which its sample must not reach)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "non-dumpable")


_CAPSET = 126 if os.uname().machine == "x86_64" else 91


def drop_capabilities() -> None:
    """Give up every capability (in a sample process, after lock_inheritable_privileges ran in
    its worker), so the sample cannot remount, unmount, raise its limits again or leave its
    namespaces; it stays uid 0 only inside its own view."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.syscall(_CAPSET, ctypes.byref(header), data), "capset")
