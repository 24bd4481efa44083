"""The worker process layer on its own, under both start methods: start, spec errors, crashes, hangs,
garbage on the control pipe, the harness's settings kept out of the worker, its process group ended.

The methods here misbehave while their module is imported, which is the first thing a worker does
with a spec, so no fixture is needed (`tests/plugin/test_isolation.py` runs whole audits)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from unlearn_audit.engine import devices
from unlearn_audit.engine.sandbox import landlock_abi
from unlearn_audit.engine.worker import (
    START_METHOD_ENV,
    SpecCheck,
    UnlearnerWorker,
    WorkerOptions,
    WorkerStartError,
    describe_exit,
    start_method,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process isolation needs POSIX")

METHODS = ["forkserver", "spawn"]


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(START_METHOD_ENV, request.param)
    return str(request.param)


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path (the worker imports what the harness could import) for the test's modules."""
    folder = tmp_path / "pkgs"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def module(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return f"{name}:Method"


GOOD = """
    class Method:
        def unlearn(self, model, request):
            return model
    """


def start_and_close(spec: str) -> None:
    """Start a worker for `spec` (its module runs at import), wait until it is ready, close it."""
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    worker.close()


def test_start_method_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    assert start_method("cuda") == "spawn" and start_method("cuda:1") == "spawn"
    if sys.platform.startswith("linux"):
        assert start_method("cpu") == "forkserver"
        with monkeypatch.context() as m:  # the default device: a GPU only where torch could find one
            m.setattr(devices, "default_device_may_be_gpu", lambda: True)
            assert start_method(None) == "spawn"
            m.setattr(devices, "default_device_may_be_gpu", lambda: False)  # e.g. a CUDA build, no GPU
            assert start_method(None) == "forkserver"
    monkeypatch.setenv(START_METHOD_ENV, "spawn")
    assert start_method("cpu") == "spawn"
    monkeypatch.setenv(START_METHOD_ENV, "fork")
    with pytest.raises(ValueError, match="forkserver, spawn"):
        start_method("cpu")


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-9) == "killed by SIGKILL: out of memory?"
    assert describe_exit(-11) == "killed by SIGSEGV"


def test_a_worker_starts_and_exits(method: str, package: Path) -> None:
    worker = UnlearnerWorker(module(package, "good_method", GOOD), WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    assert worker.alive and worker.home is not None and worker.home.is_dir()
    home = worker.home
    worker.close()
    assert not worker.alive and not home.exists(), "closed, and its directory removed"


def test_every_worker_can_start_processes_of_its_own(method: str, package: Path) -> None:
    """A method may use multiprocessing as it would elsewhere (a DataLoader's workers, a Pool), in every
    worker: not only in the first, whose start left the harness's own multiprocessing folder (where
    the sandbox forbids writing) in the settings every later worker inherits."""
    spec = module(
        package,
        "pool_method",
        """
        import multiprocessing, tempfile
        with multiprocessing.get_context().Pool(1) as pool:  # the default start method, as a DataLoader uses
            assert pool.map(abs, [-3]) == [3]
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.map(abs, [-4]) == [4]
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    for _ in range(2):
        start_and_close(spec)


def test_a_sandboxed_worker_keeps_compiler_caches_where_its_next_process_finds_them(
    method: str, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's (or Triton's default) cache folders lie where the sandbox forbids writing: torch.compile
    failed. The caches go to the spec's caches folder, which outlives each process (one per job), so that
    a compiled method does not compile again in every job."""
    outside = tmp_path / "shared-inductor-cache"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(outside))
    spec = module(
        package,
        "cache_method",
        """
        import os
        for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH"):
            folder = os.environ[variable]
            assert not folder.startswith(os.getcwd()), (variable, folder)  # not the process's own home
            os.makedirs(folder, exist_ok=True)
            print(variable, "found" if os.path.exists(os.path.join(folder, "built")) else "new")
            open(os.path.join(folder, "built"), "w").write("1")
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    caches = worker.caches
    assert caches is not None and (caches / ".cache" / "torchinductor" / "built").exists()
    worker.renew()  # what the harness does after each job
    worker.ensure_started()
    assert worker.home is not None
    log = (worker.home / "worker.log").read_text()
    assert "TORCHINDUCTOR_CACHE_DIR found" in log, log  # the next process found what the first built
    worker.close()
    assert not caches.exists(), "removed with the worker"
    assert not outside.exists() or not any(outside.iterdir()), "nothing was built in the user's own cache"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="named semaphores live in /dev/shm on Linux")
def test_a_worker_cleans_up_the_semaphores_its_method_made(method: str, package: Path) -> None:
    """tqdm makes a multiprocessing lock for any progress bar: a named semaphore, which the worker's exit
    must remove (else the harness's resource tracker warns of "leaked semaphore objects" at the end)."""
    spec = module(
        package,
        "semaphore_method",
        """
        import multiprocessing
        LOCK = multiprocessing.RLock()  # the default context's: named, registered for clean-up
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    before = set(os.listdir("/dev/shm"))
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    made = {name for name in set(os.listdir("/dev/shm")) - before if name.startswith("sem.")}
    worker.close()
    assert made, "the method's lock is a named semaphore while the worker runs"
    assert not made & set(os.listdir("/dev/shm")), "and removed when it exits"


def test_a_spec_that_does_not_resolve_is_a_start_error(method: str, package: Path) -> None:
    worker = UnlearnerWorker(module(package, "no_method", "X = 1\n"), WorkerOptions(device="cpu"))
    worker.start()
    with pytest.raises(WorkerStartError, match="Method"):
        worker.wait_ready(timeout=120)
    worker.close()


def test_a_crash_while_importing_says_how(method: str, package: Path) -> None:
    spec = module(package, "crash_method", "import os\nos._exit(7)\n")
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    with pytest.raises(WorkerStartError, match="exited with status 7"):
        worker.wait_ready(timeout=120)
    worker.close()


def test_a_hang_hits_the_deadline_and_the_process_group_dies(method: str, package: Path, tmp_path: Path) -> None:
    """The method starts a child in the worker's group and hangs; the deadline kills both."""
    spec = module(
        package,
        "hang_method",
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open("child.pid", "w").write(str(child.pid))  # in its own directory, the one place it may write
        time.sleep(600)
        """,
    )
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    started = time.monotonic()
    with pytest.raises(WorkerStartError, match="time limit"):
        worker.wait_ready(timeout=30)
    assert time.monotonic() - started < 60
    assert worker.home is not None
    child = int((worker.home / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "what the method started dies with its worker"
    worker.close()


def test_garbage_on_the_control_pipe_is_refused(method: str, package: Path) -> None:
    """A method that writes to the harness's pipe (it finds it among its file descriptors) cannot pose
    as the worker: a line that is not a JSON object fails the worker."""
    spec = module(
        package,
        "garbage_method",
        """
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"not json\\n")
            except OSError:
                pass
        import time; time.sleep(5)
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    with pytest.raises(WorkerStartError, match="malformed message"):
        worker.wait_ready(timeout=120)
    worker.close()


def test_the_harness_settings_stay_out_of_the_worker(
    method: str, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither `os.environ` nor the initial environment in /proc/self/environ shows the cache path."""
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", "/secret/cache/path")
    spec = module(
        package,
        "env_method",
        """
        import os
        open("environ", "wb").write(open("/proc/self/environ", "rb").read() + b"|" + repr(sorted(os.environ)).encode())
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    assert worker.home is not None
    seen = (worker.home / "environ").read_bytes()
    worker.close()
    assert b"/secret/cache/path" not in seen and b"UNLEARN_AUDIT_CACHE" not in seen
    assert os.environ["UNLEARN_AUDIT_CACHE"] == "/secret/cache/path", "the harness's own environment is restored"


def test_one_spec_check_for_all_specs(method: str, package: Path) -> None:
    good = module(package, "checked_good", GOOD)
    bad = module(package, "checked_bad", "X = 1\n")
    SpecCheck([good], WorkerOptions(device="cpu")).finish()
    with pytest.raises(WorkerStartError, match="checked_bad"):
        SpecCheck([good, bad], WorkerOptions(device="cpu")).finish()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


DETACH = """
    import os, sys, time
    # a grandchild that leaves the worker's process group and tree: double fork + setsid
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open("daemon.pid", "w").write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    time.sleep(1)
    class Method:
        def unlearn(self, model, request):
            return model
    """


def test_a_detached_grandchild_dies_with_its_worker(method: str, package: Path) -> None:
    """A process the method detached (double fork, new session) is re-parented to the worker, which
    declared itself a child subreaper, and ended before the worker exits."""
    worker = UnlearnerWorker(module(package, "detach_method", DETACH), WorkerOptions(device="cpu"))
    worker.start()
    worker.wait_ready(timeout=120)
    assert worker.home is not None
    deadline = time.monotonic() + 20
    while not (worker.home / "daemon.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    daemon = int((worker.home / "daemon.pid").read_text())
    assert _alive(daemon)
    worker.close()
    assert not _alive(daemon), "the detached grandchild outlived its worker"


HOPPER = """
    import os
    # Red-teamed: a process that forks and exits without pause, each hop in a session of its own, is always
    # gone from where a look at /proc found it. It counts its hops in a file, and stops when told to.
    count_file, stop_file = {count!r}, {stop!r}
    if os.fork() == 0:
        hops = 0
        while True:
            if os.fork():
                os._exit(0)
            os.setsid()
            hops += 1
            if hops % 20 == 0:
                if os.path.exists(stop_file):
                    os._exit(0)
                with open(count_file, "w") as f:
                    f.write(str(hops))
    class Method:
        def unlearn(self, model, request):
            return model
    """


def _hops(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return -1


@pytest.mark.skipif(landlock_abi() < 6, reason="ending a worker's domain needs Landlock to scope signals (ABI 6)")
def test_a_process_that_forks_and_exits_without_pause_ends_with_its_worker(method: str, package: Path) -> None:
    """The worker's reaper, in a Landlock domain around the worker's, ends the whole domain with one
    `kill(-1)`: the hopper stops hopping, and nothing outside the domain (this process) is touched."""
    import uuid

    name = f"/dev/shm/unlearn-audit-test-hopper-{uuid.uuid4().hex}"
    count, stop = Path(name + ".count"), Path(name + ".stop")
    spec = module(package, "hopper_method", HOPPER.format(count=str(count), stop=str(stop)))
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu"))
    try:
        worker.start()
        worker.wait_ready(timeout=120)
        assert worker._reaper is not None, "the worker named no reaper although Landlock scopes signals"
        deadline = time.monotonic() + 20
        while _hops(count) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _hops(count) >= 100, "the hopper did not start"
        worker.close()
        ended_at = _hops(count)
        time.sleep(2.0)  # a hop of a process with torch imported takes about a millisecond, 20 about 0.02 s
        assert _hops(count) == ended_at, "the hopper outlived its worker"
    finally:
        stop.touch()  # a hopper that did outlive the test stops within its next 20 hops
        time.sleep(1.0)
        count.unlink(missing_ok=True)
        stop.unlink(missing_ok=True)


OUTLIVER = """
    import ctypes, os, threading, time
    # Red-teamed: keep the worker alive once its harness is gone (a thread that is not a daemon), clear the
    # parent-death signal that would end it with the fork server, and leave a process that beats.
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    beat, stop = {beat!r}, {stop!r}
    if os.fork() == 0:
        os.setsid()
        for _ in range(600):
            if os.path.exists(stop):
                break
            with open(beat, "w") as f:
                f.write(repr(time.time()))
            time.sleep(0.05)
        os._exit(0)
    threading.Thread(target=time.sleep, args=(60,)).start()
    class Method:
        def unlearn(self, model, request):
            return model
    """

HARNESS = """
import sys, time
from unlearn_audit.engine.worker import UnlearnerWorker, WorkerOptions
worker = UnlearnerWorker(sys.argv[1], WorkerOptions(device="cpu"))
worker.start()
worker.wait_ready(timeout=120)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(landlock_abi() < 6, reason="ending a worker's domain needs Landlock to scope signals (ABI 6)")
def test_what_a_method_started_ends_with_a_killed_harness(method: str, package: Path) -> None:
    """The reaper watches the harness as well as the worker: a harness killed outright (a CI job cancelled)
    takes the method's processes with it, even where the method keeps its worker alive."""
    import subprocess
    import uuid

    name = f"/dev/shm/unlearn-audit-test-outliver-{uuid.uuid4().hex}"
    beat, stop = Path(name + ".beat"), Path(name + ".stop")
    spec = module(package, "outliver_method", OUTLIVER.format(beat=str(beat), stop=str(stop)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), *sys.path])}
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, spec], stdout=subprocess.PIPE, env=env)
    try:
        assert harness.stdout is not None and harness.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        while not beat.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat.exists(), "the method's process did not start"
        harness.kill()
        harness.wait(timeout=30)
        time.sleep(1.0)
        last = beat.read_text()
        time.sleep(1.5)  # it beats every 0.05 s while it lives
        assert beat.read_text() == last, "the method's process outlived its killed harness"
    finally:
        harness.kill()
        harness.wait(timeout=30)
        stop.touch()
        time.sleep(0.5)
        beat.unlink(missing_ok=True)
        stop.unlink(missing_ok=True)


def test_a_fake_editable_distribution_widens_nothing(method: str, package: Path, tmp_path: Path) -> None:
    """Red-teamed: a `*.dist-info` folder beside a method's module (on the import path, no code run) named a
    folder inside the fixture cache, or `/`, as its editable source; the worker granted itself that folder,
    and under `spawn` the method read the retrain model. Neither is readable now."""
    if landlock_abi() == 0:
        pytest.skip("this kernel has no Landlock")
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / "tiny").mkdir(parents=True)
    outside.mkdir()
    (cache / "tiny" / "weights.bin").write_bytes(b"retrain model")
    (outside / "secret.txt").write_text("a file no plan grants")
    for name, target in (("evil_cache", cache / "tiny"), ("evil_root", outside)):
        info = package / f"{name}-0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0\n")
        (info / "direct_url.json").write_text(f'{{"url": "file://{target}", "dir_info": {{"editable": true}}}}')
    spec = module(
        package,
        "reads_through_fake_distributions",
        f"""
        for path in ({str(cache / "tiny" / "weights.bin")!r}, {str(outside / "secret.txt")!r}):
            try:
                open(path, "rb").read()
            except PermissionError:
                continue
            raise RuntimeError("read " + path)
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    worker = UnlearnerWorker(spec, WorkerOptions(device="cpu", deny=(str(cache),)))
    worker.start()
    try:
        worker.wait_ready(timeout=120)  # a read that went through fails the import, and with it this
    finally:
        worker.close()


def test_a_method_may_start_processes_through_a_fork_server_of_its_own(method: str, package: Path) -> None:
    """The worker drops the harness's fork server's alive pipe; a method that uses multiprocessing's
    forkserver context gets a server of its own, inside its worker's sandbox, and its processes run."""
    spec = module(
        package,
        "own_fork_server_method",
        """
        import multiprocessing, time
        child = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(0,))
        child.start()
        child.join(60)
        if child.exitcode != 0:
            raise RuntimeError(f"the method's own fork server's process exited with {child.exitcode}")
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    start_and_close(spec)


def test_the_harness_s_own_fork_server_children_are_confined(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the fork server forks for the harness itself starts confined to the baseline of the worker
    it would serve: the denied folder's files unreadable, the harness not signalable (ABI 6). A worker drops
    the server's alive pipe, so that its method cannot ask for such a process (`test_isolation`)."""
    if not sys.platform.startswith("linux") or landlock_abi() == 0:
        pytest.skip("the fork server's confinement needs Linux and Landlock")
    from unlearn_audit.engine.worker import worker_context

    secret, allowed = tmp_path / "cache" / "secret.bin", tmp_path / "open.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"retrain model")
    allowed.write_bytes(b"anyone may read this")
    monkeypatch.setenv(START_METHOD_ENV, "forkserver")
    options = WorkerOptions(device="cpu", deny=(str(secret.parent),))
    worker = UnlearnerWorker(module(package, "confined_neighbour", GOOD), options)
    worker.start()  # writes the policy its server's next children obey, and starts the server if need be
    worker.wait_ready(timeout=120)
    try:
        context = worker_context("forkserver")
        probes = {
            "denied file": (Path.read_bytes, (secret,)),
            "open file": (Path.read_bytes, (allowed,)),
            "signal the harness": (os.kill, (os.getpid(), 0)),
        }
        exits = {}
        for what, (target, args) in probes.items():
            child = context.Process(target=target, args=args)
            child.start()
            child.join(60)
            exits[what] = child.exitcode
    finally:
        worker.close()
    assert exits["open file"] == 0 and exits["denied file"] == 1, exits
    if landlock_abi() >= 6:
        assert exits["signal the harness"] == 1, exits


def test_the_sandbox_can_be_turned_off(method: str, package: Path, tmp_path: Path) -> None:
    out = tmp_path / "written-from-the-worker"
    spec = module(
        package,
        "writer_method",
        f"""
        open({str(out)!r}, "w").write("1")
        class Method:
            def unlearn(self, model, request):
                return model
        """,
    )
    for sandbox in (True, False):
        worker = UnlearnerWorker(spec, WorkerOptions(device="cpu", sandbox=sandbox))
        worker.start()
        if sandbox and landlock_abi() > 0:
            with pytest.raises(WorkerStartError, match="Permission denied"):
                worker.wait_ready(timeout=120)
            assert not out.exists()
        else:
            worker.wait_ready(timeout=120)
            assert out.exists()
            assert worker.sandbox == "none: --audit-sandbox off" or landlock_abi() == 0
        worker.close()


def test_the_fork_server_confines_each_child_as_the_policy_says_when_it_is_forked(tmp_path: Path) -> None:
    """The harness rewrites the policy before each start; a child reads it at its fork (no half-written file)."""
    import json

    from unlearn_audit.engine.forkserver_guard import write_policy

    policy = tmp_path / "policy.json"
    write_policy(policy, str(tmp_path / "workers"), ["/cache"], False)
    assert json.loads(policy.read_text())["confine"] == {
        "workers_root": str(tmp_path / "workers"),
        "deny": ["/cache"],
        "allow_network": False,
    }
    write_policy(policy, str(tmp_path / "workers"), None, False)  # the sandbox off
    assert json.loads(policy.read_text()) == {"confine": None}
    assert [p.name for p in tmp_path.iterdir()] == ["policy.json"], "no partial file left"


def test_a_child_obeys_only_a_policy_file_of_its_own_user(tmp_path: Path) -> None:
    """Were the policy's folder removed and its name taken, the child must refuse the stranger's file
    (it exits unconfined-refused), not obey it; a link is not followed."""
    from unlearn_audit.engine.forkserver_guard import _read_own_policy, write_policy

    policy = tmp_path / "policy.json"
    write_policy(policy, str(tmp_path / "workers"), ["/cache"], False)
    assert _read_own_policy(str(policy)) == {
        "workers_root": str(tmp_path / "workers"),
        "deny": ["/cache"],
        "allow_network": False,
    }
    link = tmp_path / "link.json"
    link.symlink_to(policy)
    with pytest.raises(OSError):
        _read_own_policy(str(link))
    fifo = tmp_path / "fifo.json"  # would block a child that opened it for reading
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        _read_own_policy(str(fifo))
    if os.geteuid() == 0:  # as root, a file of another user can be made here
        os.chown(policy, 65534, 65534)
        with pytest.raises(ValueError, match="another user"):
            _read_own_policy(str(policy))
