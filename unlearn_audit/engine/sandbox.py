"""Landlock: the worker process confines itself before it imports the method (Linux, unprivileged).

Landlock (Linux >= 5.13) lets a process give up rights for itself and everything it starts, without
privileges: here, three system calls through ctypes (`landlock_create_ruleset`, `landlock_add_rule`,
`landlock_restrict_self`) after `prctl(PR_SET_NO_NEW_PRIVS)`. What the worker keeps (`SandboxPlan`):

- read and execute: the interpreter and its libraries, every import path of the harness (the method's
  package among them), system libraries and configuration, and a few kernel files torch reads
  (`/proc/self`, `/proc/cpuinfo`, `/sys/devices/system/cpu`, ...); never the rest of `/proc`, where the
  harness's command line would give its cache away;
- write: its private directory (its results and temporary files) and `/dev/shm`;
- devices: `/dev/null`, `/dev/zero`, `/dev/urandom`, and the GPU's device files on a CUDA audit.

Landlock grants by allow-list, so a denied directory inside an allowed one (the fixture cache under the
user's project, say) is handled by granting the allowed directory's other entries, down to the denied
one (`grants_around`). With ABI >= 4 TCP bind and connect are refused (unless allowed); with ABI >= 6
the worker cannot signal, nor connect to the abstract unix sockets of, processes outside its sandbox:
the harness and pytest among them. `describe()` says what applied, for the report.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_audit.engine.devices import GPU_SIGNS

# System call numbers: the same on every architecture that has Landlock (generic table, Linux 5.13).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, by the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

FS_V1 = (1 << 13) - 1
FS_BY_ABI = {1: FS_V1, 2: FS_V1 | FS_REFER, 3: FS_V1 | FS_REFER | FS_TRUNCATE}
READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
WRITE = (
    FS_WRITE_FILE
    | FS_REMOVE_DIR
    | FS_REMOVE_FILE
    | FS_MAKE_DIR
    | FS_MAKE_REG
    | FS_MAKE_SOCK
    | FS_MAKE_FIFO
    | FS_MAKE_SYM
    | FS_REFER
    | FS_TRUNCATE
)
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # what a file (not a dir) takes

SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc",
    "/opt",
    "/nix",
    "/run/current-system",
    "/proc/self",
    "/proc/thread-self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/filesystems",
    "/proc/sys/kernel",
    "/proc/sys/vm",
    "/proc/mounts",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
    "/dev/shm",
)
UNIX_SOCKET_LISTS = ("/proc/self/net", "/proc/thread-self/net")
"""Never readable, although beneath `/proc/self`: `net/unix` lists the paths of the machine's named UNIX
sockets, and connecting to one is not something Landlock governs. Without the list, a socket's path is
not to be found (the folders that hold them, `/tmp` and `/run`, cannot be listed), so that a method cannot
look up, say, another Python process's fork server, which would fork it a process outside the sandbox."""
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")
GPU_DEVICES = tuple(
    dict.fromkeys(
        [
            # where each backend's driver shows itself (`devices.GPU_SIGNS`: the same paths that tell the
            # harness a GPU may be there; WSL 2's `/dev/dxg` among them, its CUDA library under /usr/lib/wsl)
            *(path for paths in GPU_SIGNS.values() for path in paths),
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset",
            "/sys/bus/pci",
            "/sys/devices",
        ]
    )
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none (not Linux, disabled, or blocked by seccomp)."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64", "riscv64", "arm64"):
        return 0
    try:
        version = _libc().syscall(
            SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION)
        )
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


@dataclass(frozen=True)
class SandboxPlan:
    """What the confined process may reach. Paths that do not exist are skipped."""

    read: tuple[str, ...]  # read and execute, beneath each
    write: tuple[str, ...]  # read, write, create and remove, beneath each
    devices: tuple[str, ...]  # read, write and ioctl (device files or folders of them)
    deny: tuple[str, ...] = ()  # never reachable, even beneath a path of `read` or `write`; nothing inside granted
    carve: tuple[str, ...] = ()  # not reached through a grant above it; reachable where a grant names inside it
    allow_network: bool = False
    list_dirs: tuple[str, ...] = ()  # folders listable beneath each, denied ones among them (their files are not)


@dataclass(frozen=True)
class SandboxStatus:
    """What applied: `landlock abi 7: fs, signals, net` or `none: <why>`."""

    abi: int
    protections: tuple[str, ...] = ()
    why_not: str = ""
    denied: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """In words, for the summary and the report: what applied, or 'none: why'."""
        if not self.protections:
            return f"none: {self.why_not}"
        return f"landlock abi {self.abi}: " + ", ".join(self.protections)


def grants_around(allowed: Path, denied: Iterable[Path], carved: Iterable[Path] = ()) -> list[Path]:
    """`allowed`, or where a denied path lies beneath it, the entries of `allowed` that lead elsewhere,
    recursively down to each denied path (Landlock cannot subtract from a grant).

    A symbolic link among those entries is left out: a grant goes to what a path opens, and a link's
    target may be the denied folder or one above it (pytest's `*current` links beside its temporary
    folders were: a fork server's child read the fixture cache through one). What a link leads to stays
    reachable through it wherever its target is granted in its own right.

    Nothing inside a denied path is granted (red-teamed: a grant of `<cache>/tiny`, from a fake editable
    distribution, let a worker read the retrain model). A `carved` path is only left out of a grant above
    it: a grant that names a path inside it stands (the fork server's baseline: all of `/` but `/proc`,
    and of `/proc` the process's own files)."""
    denied = list(denied)
    if any(d in allowed.parents for d in denied):
        return []
    inside = [d for d in (*denied, *carved) if d == allowed or allowed in d.parents]
    if not inside:
        return [allowed]
    if any(d == allowed for d in inside):
        return []
    try:
        entries = sorted(allowed.iterdir())
    except OSError:
        return []
    out: list[Path] = []
    for entry in entries:
        if not entry.is_symlink():
            out.extend(grants_around(entry, inside))
    return out


def _rules(plan: SandboxPlan) -> list[tuple[str, int]]:
    denied = [Path(os.path.realpath(d)) for d in plan.deny]
    carved = [Path(os.path.realpath(d)) for d in plan.carve]
    rules: list[tuple[str, int]] = []
    for paths, rights in (
        (plan.read, READ),
        (plan.write, READ | WRITE),
        (plan.devices, READ | FS_WRITE_FILE | FS_IOCTL_DEV),
    ):
        for text in paths:
            if not os.path.exists(text):
                continue
            for path in grants_around(Path(os.path.realpath(text)), denied, carved):
                rules.append((str(path), rights))
    rules.extend((os.path.realpath(text), FS_READ_DIR) for text in plan.list_dirs if os.path.isdir(text))
    return rules


def _create_ruleset(libc: ctypes.CDLL, attr: _RulesetAttr, size: int) -> int:
    """A new ruleset's descriptor (negative on failure, the reason in errno); `size`: the ABI's attr size."""
    return int(libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)))


def _restrict_self(libc: ctypes.CDLL, ruleset: int) -> str:
    """Enforce `ruleset` on this process (after no-new-privileges, which Landlock requires): '' if done,
    else what failed."""
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
        return f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}"
    return ""


def confine(plan: SandboxPlan, abi: int | None = None) -> SandboxStatus:
    """Confine this process (and what it starts) to `plan`; the status says what applied. Never raises
    for a kernel without Landlock: the run then goes on with detection as the defence, and says so."""
    abi = landlock_abi() if abi is None else abi
    if abi <= 0:
        why = "Landlock is not available (not Linux, a kernel before 5.13, or disabled)"
        return SandboxStatus(0, why_not=why)
    handled_fs = FS_BY_ABI.get(abi, FS_BY_ABI[3] | FS_IOCTL_DEV)
    handled_net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 and not plan.allow_network else 0
    scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0
    attr = _RulesetAttr(handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    libc = _libc()
    ruleset = _create_ruleset(libc, attr, size)
    if ruleset < 0:
        return SandboxStatus(abi, why_not=f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        for path, rights in _rules(plan):
            rights &= handled_fs
            flags = os.O_PATH | os.O_CLOEXEC
            try:
                fd = os.open(path, flags)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    rights &= FILE_RIGHTS
                rule = _PathBeneathAttr(rights, fd)
                if (
                    libc.syscall(
                        SYS_LANDLOCK_ADD_RULE,
                        ruleset,
                        LANDLOCK_RULE_PATH_BENEATH,
                        ctypes.byref(rule),
                        ctypes.c_uint32(0),
                    )
                    < 0
                ):
                    return SandboxStatus(
                        abi, why_not=f"landlock_add_rule({path}) failed: {os.strerror(ctypes.get_errno())}"
                    )
            finally:
                os.close(fd)
        why = _restrict_self(libc, ruleset)
        if why:
            return SandboxStatus(abi, why_not=why)
    finally:
        os.close(ruleset)
    protections = ["fs"] + (["signals", "abstract sockets"] if scoped else []) + (["net"] if handled_net else [])
    return SandboxStatus(abi, tuple(protections), denied=tuple(plan.deny))


def scope_signals() -> bool:
    """Enter a Landlock domain that restricts signals only (ABI >= 6): from now on this process, and what
    it starts, may signal only processes in this domain or in domains nested in it. True if entered.

    Why: a process in this domain, outside the worker's own nested one, can end everything the worker
    starts with one `kill(-1)` (`engine.domain_reaper`), and nothing in the nested domain can signal it.
    """
    if landlock_abi() < 6:
        return False
    libc = _libc()
    ruleset = _create_ruleset(libc, _RulesetAttr(0, 0, SCOPE_SIGNAL), 24)
    if ruleset < 0:
        return False
    try:
        return not _restrict_self(libc, ruleset)
    finally:
        os.close(ruleset)


def installed_packages_dirs() -> set[Path]:
    """The folders where pip installs distributions for this interpreter (site-packages, the user's too)."""
    import site
    import sysconfig

    folders = [sysconfig.get_paths().get(key, "") for key in ("purelib", "platlib")]
    for ask in ("getsitepackages", "getusersitepackages"):  # absent from some embedded and old virtualenvs
        try:
            found = getattr(site, ask)()
        except (AttributeError, OSError):
            continue
        folders += [found] if isinstance(found, str) else list(found)
    return {Path(os.path.realpath(folder)) for folder in folders if folder}


def editable_project_dirs() -> list[str]:
    """The source folders of distributions installed in editable mode (`pip install -e`): their modules
    are imported through a finder, not through `sys.path`, so the import path alone would miss them.
    Read from each distribution's `direct_url.json` (PEP 610), of distributions that pip installed
    (in site-packages) only: red-teamed, a `*.dist-info` folder that a method's project put on the import
    path named `file:///` as its editable source, and the worker granted itself all of the file system."""
    import json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    installed = installed_packages_dirs()
    found = []
    for dist in distributions():
        try:
            where = Path(os.path.realpath(str(dist.locate_file(""))))
        except (OSError, TypeError, ValueError):
            continue
        if where not in installed:
            continue
        try:
            text = dist.read_text("direct_url.json")
            info = json.loads(text) if text else {}
        except (OSError, ValueError):
            continue
        if (
            isinstance(info, dict)
            and (info.get("dir_info") or {}).get("editable")
            and str(info.get("url", "")).startswith("file:")
        ):
            found.append(unquote(urlparse(info["url"]).path))
    return found


def module_dirs(names: Iterable[str]) -> list[str]:
    """Where the named top-level modules would be imported from, found without importing them."""
    import importlib.util

    found: list[str] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        locations = list(spec.submodule_search_locations or []) or (
            [os.path.dirname(spec.origin)] if spec.origin else []
        )
        found.extend(str(Path(p).resolve()) for p in locations if p and os.path.exists(p))
    return found


def link_targets(folders: Iterable[str]) -> list[str]:
    """The real paths of the symbolic links directly inside `folders`.

    Why: Landlock grants by the real path, so a package assembled from links (a checkout laid out as
    installed without installing it, as the GPU benchmarks lay out this one) cannot be imported through
    its links by a confined process unless their targets are granted too. Only for the harness's own
    package: a method's links stay ungranted, so they cannot lead a method into the fixture cache.
    """
    found: list[str] = []
    for folder in folders:
        try:
            entries = list(Path(folder).iterdir())
        except OSError:
            continue
        found.extend(str(entry.resolve()) for entry in entries if entry.is_symlink() and entry.exists())
    return found


def worker_plan(
    home: str,
    import_paths: Iterable[str],
    deny: Iterable[str],
    *,
    cuda: bool = False,
    allow_network: bool = False,
    request_dir: str | None = None,
    keep: str | None = None,
) -> SandboxPlan:
    """The worker's plan: its interpreter, import paths and system files to read, `request_dir` (the
    request data) to read, its `home` and `keep` (the compilers' caches its spec's next process finds) to
    write; `deny` (the fixture cache, the harness's directories) never, even beneath an import path."""
    prefixes = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
    }
    read = [*SYSTEM_READ, *sorted(prefixes), *import_paths, *([request_dir] if request_dir else [])]
    devices = [*DEVICES, *(GPU_DEVICES if cuda else ())]
    if cuda:
        devices += [str(p) for p in Path("/dev").glob("nvidia[0-9]*")]
    return SandboxPlan(
        read=tuple(dict.fromkeys(read)),
        write=(home, *([keep] if keep else []), "/dev/shm"),
        devices=tuple(dict.fromkeys(devices)),  # /dev/nvidia0 is both a driver sign and a glob match
        deny=(*deny, *UNIX_SOCKET_LISTS),
        allow_network=allow_network,
    )
