"""Hostile methods against process isolation, run through the plugin as a user would.

Each hostile method attacks one defence (reference theft from disk or memory, hook stripping,
global state, exits, segfaults, memory, hangs, global randomness); each must end as failing tests
that name the reason, while the other methods of the session keep their verdicts and the
reports are written.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.engine.sandbox import landlock_abi

METHODS = "unlearn_audit.methods"

HOSTILE = textwrap.dedent(
    '''
    import ctypes, gc, os, random, sys, time
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn
    from safetensors.torch import load_file
    from torch.func import functional_call, grad, vmap  # at import: the worker's counted vmap must be in place

    HERE = Path(__file__).parent
    try:  # a sandboxed worker may not write here: only the harness process (which must not import us) can
        (HERE / f"imported-by-{os.getpid()}").write_text("")
    except OSError:
        pass

    def _retrain_from(cache_root, model):
        """The retrain weights of the cached fixture whose original equals `model`, or None."""
        mine = {k: v for k, v in model.state_dict().items()}
        for path in Path(cache_root).rglob("weights.safetensors"):
            w = load_file(str(path))
            if all(torch.equal(w["original." + k], v) for k, v in mine.items()):
                return {k[len("retrain."):]: v for k, v in w.items() if k.startswith("retrain.")}
        return None

    def steals_from_disk(model, request):
        print("cache variable in the worker:", os.environ.get("UNLEARN_AUDIT_CACHE"))
        print("working directory:", os.getcwd())
        stolen = _retrain_from((HERE / "cache_path.txt").read_text(), model)
        model.load_state_dict(stolen)
        return model

    def _steal_and_perturb(model, fraction):
        stolen = _retrain_from((HERE / "cache_path.txt").read_text(), model)
        g = torch.Generator().manual_seed(1)
        model.load_state_dict({k: v + torch.randn(v.shape, generator=g) * fraction * v.std() if v.numel() > 1 else v
                               for k, v in stolen.items()})
        return model

    def steals_and_adds_1pct_noise(model, request):
        return _steal_and_perturb(model, 0.01)

    def steals_and_adds_5pct_noise(model, request):
        return _steal_and_perturb(model, 0.05)

    def probes_the_sandbox(model, request):
        """Reaches for what a confined worker must not: the network, the cache, other workers' directories."""
        import socket
        try:
            socket.create_connection(("127.0.0.1", int((HERE / "port.txt").read_text())), timeout=5).close()
            print("tcp connect: connected")
        except OSError as exc:
            print("tcp connect: refused", exc.strerror)
        try:
            (Path((HERE / "cache_path.txt").read_text()) / "planted").write_text("x")
            print("cache write: written")
        except OSError as exc:
            print("cache write: refused", exc.strerror)
        mine = Path.cwd()
        others = []
        try:
            others = [p for p in mine.parent.iterdir() if p.name.startswith("unlearn-audit-worker-") and p != mine]
            print("other workers listed:", len(others))
        except OSError as exc:
            print("listing the workers' parent: refused", exc.strerror)
        for other in others:
            try:
                print("read another worker's directory:", sorted(os.listdir(other)))
            except OSError as exc:
                print("another worker's directory: refused", exc.strerror)
        return model

    def _module_attr(o, name):
        try:
            return isinstance(getattr(o, name, None), nn.Module)
        except Exception:
            return False

    def steals_from_memory(model, request):
        found = [o for o in gc.get_objects() if _module_attr(o, "retrain") and _module_attr(o, "original")]
        print("harness objects found:", len(found))
        if found:
            model.load_state_dict(found[0].retrain.state_dict())
        return model

    def _train(model, request, epochs):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        for _ in range(epochs):
            for x, y in request.retain.batches(64, generator=request.generator):
                opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
        return model

    def clears_module_hooks(model, request):
        for m in model.modules():
            m._forward_pre_hooks.clear()
        return _train(model, request, 5)  # 5 epochs of the retain set: 1.5x the budget (10% of 30 epochs)

    def clears_global_hooks(model, request):
        torch.nn.modules.module._global_forward_pre_hooks.clear()
        return _train(model, request, 5)

    def _per_example_descent(model, request, vmap):
        """SGD on per-example gradients (vmap over examples), 2x the budget: an honest method that overspends."""
        params = {k: v.detach() for k, v in model.named_parameters()}
        def loss(p, xi, yi):
            return torch.nn.functional.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))
        for x, y in request.retain.batches(64, generator=request.generator, epochs=None,
                                           max_examples=2 * request.budget.example_gradients):
            per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
            params = {k: v - 1e-4 * per_example[k].mean(0) for k, v in params.items()}
        model.load_state_dict(params, strict=False)
        return model

    def per_example_gradients(model, request):
        return _per_example_descent(model, request, vmap)

    def puts_the_uncounted_vmap_back(model, request):
        torch.func.vmap = torch.vmap = torch.func.vmap.__wrapped__
        return _per_example_descent(model, request, torch.func.vmap)

    def sets_float64(model, request):
        torch.set_default_dtype(torch.float64)
        return model

    def exits(model, request):
        os._exit(3)

    def segfaults(model, request):
        ctypes.string_at(0)

    def eats_memory(model, request):
        hog = [torch.ones(2**28, dtype=torch.uint8) for _ in range(64)]  # 16 GiB, touched
        return model

    def sleeps(model, request):
        print("sleeper pid", os.getpid(), flush=True)
        time.sleep(600)
        return model

    def _proc_text(path):
        try:
            return open(path, "rb").read().replace(b"\\0", b" ").decode(errors="replace")
        except OSError as exc:
            return f"denied ({exc.strerror})"

    def snoops_proc(model, request):
        """Looks for the harness as a determined method would: its parents' command lines and environments."""
        for pid in (os.getppid(), int((HERE / "harness.pid").read_text())):
            print(f"cmdline of {pid}:", _proc_text(f"/proc/{pid}/cmdline"))
            print(f"environ of {pid}:", _proc_text(f"/proc/{pid}/environ"))
        try:
            print("proc listing:", len(os.listdir("/proc")))
        except OSError as exc:
            print("proc listing: denied", exc.strerror)
        return model

    def daemonizes(model, request):
        """A double-forked grandchild in a session of its own, meant to outlive the audit."""
        if os.fork() == 0:
            os.setsid()
            pid = os.fork()
            if pid == 0:
                time.sleep(20)
                open(HERE / "daemon-was-here", "w").write("alive after the audit")
                os._exit(0)
            print("daemon pid", pid, flush=True)
            os._exit(0)
        time.sleep(0.5)
        return model

    def signals_the_harness(model, request):
        import signal
        for pid in (os.getppid(), int((HERE / "harness.pid").read_text())):
            try:
                os.kill(pid, signal.SIGKILL)
                print("killed", pid)
            except OSError as exc:
                print("kill refused:", exc.strerror)
        return model

    def signals_its_own_children(model, request):
        """A method may signal what it started itself: a child in its session, and one that left it."""
        import signal, subprocess
        children = [subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"], start_new_session=True)]
        for child in children:
            os.kill(child.pid, signal.SIGTERM)
            print("child ended by", child.wait())
        return model

    def uses_global_random(model, request):
        # as real methods do: a random subset of the retain set via Python's and NumPy's global generators
        n = len(request.retain)
        pick = sorted(random.sample(range(n), 200)) + list(np.random.choice(n, 100))
        x, y = request.retain.inputs[pick], request.retain.labels[pick]
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for i in range(0, len(pick), 50):
            opt.zero_grad(); torch.nn.functional.cross_entropy(model(x[i:i + 50]), y[i:i + 50]).backward(); opt.step()
        return model

    def _replace_own_stdout(make):
        """Put `make(path)` where the job's stdout.txt was (the method's fd 1 keeps the old file)."""
        path = os.readlink("/proc/self/fd/1")
        os.unlink(path)
        make(path)

    def stdout_becomes_a_fifo(model, request):
        print("before the FIFO")
        _replace_own_stdout(os.mkfifo)  # the harness's read of it would wait for a writer for ever
        return model

    def stdout_becomes_sparse(model, request):
        print("the start of a huge output")
        sys.stdout.flush()
        os.ftruncate(1, 1 << 33)  # 8 GiB that use no disk: a whole read would exhaust the harness's memory
        os.lseek(1, 0, os.SEEK_END)
        os.write(1, b"the last line")
        return model

    def stdout_links_to_the_cache(model, request):
        target = (HERE / "link_target.txt").read_text()  # a file the worker may not read; the harness may
        _replace_own_stdout(lambda path: os.symlink(target, path))
        return model

    def _outside(here):
        """Run in a process the fork server forked on the method's request: what can it do?"""
        code = 100
        try:  # the cache's folders may be listed (the worker's own sandbox refuses even that); its files not read
            cache = Path((Path(here) / "cache_path.txt").read_text())
            next(path for path in cache.rglob("*") if path.is_file()).read_bytes()
        except OSError:
            code += 1
        try:
            os.kill(int((Path(here) / "harness.pid").read_text()), 0)
        except OSError:
            code += 2
        try:  # the machine's named sockets (another fork server's among them) are not listed to it
            Path("/proc/net/unix").read_bytes()
        except OSError:
            code += 4
        sys.exit(code)

    def asks_the_fork_server_for_a_process(model, request):
        """Red-teamed: a worker forked by multiprocessing's fork server knows the server's socket, and the
        server forked whoever asked (private names of the standard library: an attacker's, not the harness's).
        The worker drops the server's alive pipe before the method runs, and the server forks only for a
        request that carries it: the method offers every pipe it holds, and one of its own."""
        import multiprocessing
        import multiprocessing.forkserver as fork_server
        import stat
        from multiprocessing import resource_tracker

        server = fork_server._forkserver
        if server._forkserver_address is None:
            print("no fork server to ask")
            return model
        tracker_r, _ = os.pipe()
        server.ensure_running = lambda: None
        resource_tracker._resource_tracker.getfd = lambda: tracker_r
        resource_tracker._resource_tracker.ensure_running = lambda: None
        held = [int(name) for name in os.listdir("/proc/self/fd") if int(name) > 2]
        pipes = [fd for fd in held if _is_pipe(fd)]
        exits = []
        for fd in [*pipes, os.pipe()[1]]:
            server._forkserver_alive_fd = fd
            process = multiprocessing.get_context("forkserver").Process(target=_outside, args=(str(HERE),))
            try:
                process.start()
            except OSError as exc:
                exits.append(type(exc).__name__)
                continue
            process.join(60)
            exits.append(str(process.exitcode))
        print(f"tried {len(exits)} pipes; the fork server's processes exited with {sorted(set(exits))}")
        return model

    def _is_pipe(fd):
        import stat
        try:
            return stat.S_ISFIFO(os.fstat(fd).st_mode)
        except OSError:
            return False

    _JOBS_SEEN = []

    def remembers_its_jobs(model, request):
        """Red-teamed: a method kept one model in a module global and trained it further in each job, each
        time within that job's budget, and passed checks that the same method starting afresh failed."""
        print(f"jobs this process ran before: {len(_JOBS_SEEN)}")
        _JOBS_SEEN.append(request.seed)
        return model

    def raises_loudly(model, request):
        print("hello from the method")
        import warnings
        warnings.warn("a warning from the method")
        raise RuntimeError("boom from the method")

    def talks_and_returns(model, request):
        print("hello from a method that works")
        import warnings
        warnings.warn("a warning from a method that works")
        return model
    '''
)


@pytest.fixture
def hostile(pytester: pytest.Pytester, audit_env: Path) -> pytest.Pytester:
    pytester.makepyfile(hostile=HOSTILE)
    (pytester.path / "cache_path.txt").write_text(str(audit_env))
    pytester.syspathinsert()
    return pytester


def results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_reference_from_disk_is_refused_or_detected_and_the_worker_gets_no_cache_path(
    hostile: pytest.Pytester, sandbox: str
) -> None:
    """Sandboxed (Landlock), the worker cannot read the cache; without a sandbox it can, and returning the
    reference is detected."""
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner",
        "hostile:steals_from_disk",
        "-k",
        "gaussian and not relearning",
        "--audit-report",
        str(report),
        "--audit-sandbox",
        sandbox,
    )
    result.assert_outcomes(failed=4)
    if sandbox == "on" and landlock_abi() > 0:
        # the cache is invisible: the method found no weights to steal, and failed on its own
        assert "unlearn() raised" in result.stdout.str() and "harness's own retrain" not in result.stdout.str()
        assert results(report)[0]["meta"]["sandbox"].startswith(f"landlock abi {landlock_abi()}: fs")
        assert "the methods ran sandboxed by landlock" in result.stdout.str()
    else:
        assert "returned a copy of the harness's retrain reference" in result.stdout.str()
    assert f"imported-by-{os.getpid()}" not in os.listdir(hostile.path), "the harness process imported the method"
    stdout = results(report)[0]["meta"]["unlearn_output"]["stdout"]
    assert "cache variable in the worker: None" in stdout
    assert f"working directory: {hostile.path}" not in stdout


@pytest.mark.parametrize(
    "isolation, expected",
    [("process", "harness objects found: 0"), ("inline", "returned a copy of the harness's retrain reference")],
)
def test_reference_from_memory(hostile: pytest.Pytester, isolation: str, expected: str) -> None:
    """In a worker there is nothing to find; in-process the method finds it and the detection fails it."""
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner",
        "hostile:steals_from_memory",
        "--audit-isolation",
        isolation,
        "-k",
        "gaussian_leakage and gaussian",
        "--audit-report",
        str(report),
    )
    result.assert_outcomes(failed=1)
    text = result.stdout.str() + json.dumps(results(report))
    assert expected in text


@pytest.mark.parametrize("noise", ["1pct", "5pct"])
def test_a_stolen_reference_with_noise_added_is_caught(hostile: pytest.Pytester, noise: str) -> None:
    """Without the sandbox (so that it can be stolen), a retrain reference perturbed by 1% or 5% of each
    tensor's std is still a copy; the reference methods in the same session keep their verdicts."""
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner",
        f"hostile:steals_and_adds_{noise}_noise",
        "--unlearner",
        f"{METHODS}:Retrain",
        "-k",
        "gaussian and (budget or leakage)",
        "--audit-sandbox",
        "off",
        "--audit-report",
        str(report),
    )
    result.assert_outcomes(passed=1, failed=2, skipped=1)  # Retrain's budget is skipped: the reference is exempt
    out = result.stdout.str()
    assert "returned a copy of the harness's retrain reference" in out and "a copy is anything below 0.25" in out
    verdicts = {(r["unlearner"], r["check"]): r["verdict"] for r in results(report)}
    assert verdicts[(f"{METHODS}:Retrain", "gaussian_leakage")] == "pass"
    assert verdicts[(f"hostile:steals_and_adds_{noise}_noise", "gaussian_leakage")] == "fail"


@pytest.mark.skipif(landlock_abi() < 4, reason="refusing TCP needs Landlock ABI 4")
def test_a_confined_method_reaches_no_network_no_cache_and_no_other_worker(
    hostile: pytest.Pytester, audit_env: Path
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        (hostile.path / "port.txt").write_text(str(server.getsockname()[1]))
        report = hostile.path / "r.json"
        result = hostile.runpytest(
            "--unlearner",
            "hostile:probes_the_sandbox",
            "--unlearner",
            f"{METHODS}:NoOp",
            "-k",
            "budget and gaussian",
            "--audit-report",
            str(report),
        )
    result.assert_outcomes(passed=2)
    stdout = [r for r in results(report) if r["unlearner"] == "hostile:probes_the_sandbox"][0]["meta"]["unlearn_output"]
    text = stdout["stdout"]
    assert "tcp connect: refused Permission denied" in text
    assert "cache write: refused Permission denied" in text and not (audit_env / "planted").exists()
    assert "listing the workers' parent: refused Permission denied" in text
    assert "read another worker's directory" not in text


@pytest.mark.parametrize(
    "method, expected",
    [
        ("clears_module_hooks", "spent 6435 example-gradients, budget 4311"),
        ("clears_global_hooks", "the spend could not be verified: the harness's global forward hook was removed"),
        ("per_example_gradients", "spent 8622 example-gradients, budget 4311"),  # vmap lanes count as examples
        ("puts_the_uncounted_vmap_back", "the spend could not be verified: torch.vmap was replaced"),
    ],
)
def test_the_budget_count_survives_what_methods_do_to_it(hostile: pytest.Pytester, method: str, expected: str) -> None:
    result = hostile.runpytest("--unlearner", f"hostile:{method}", "-k", "budget and gaussian")
    result.assert_outcomes(failed=1)
    assert expected in result.stdout.str()


def _scores(path: Path, unlearner: str) -> dict[str, tuple[str, float]]:
    return {r["check"]: (r["outcome"], r["score"]) for r in results(path) if r["unlearner"] == unlearner}


def test_global_state_dies_with_its_worker(hostile: pytest.Pytester) -> None:
    alone, beside = hostile.path / "alone.json", hostile.path / "beside.json"
    k = ["-k", "gaussian and not relearning"]
    hostile.runpytest("--unlearner", f"{METHODS}:GradientDescent", *k, "--audit-report", str(alone))
    result = hostile.runpytest(
        "--unlearner",
        "hostile:sets_float64",
        "--unlearner",
        f"{METHODS}:GradientDescent",
        *k,
        "--audit-report",
        str(beside),
    )
    assert result.parseoutcomes().get("errors", 0) == 0, result.stdout.str()
    gd = f"{METHODS}:GradientDescent"
    assert _scores(beside, gd) == _scores(alone, gd) and len(_scores(alone, gd)) == 4


@pytest.mark.parametrize("method, reason", [("exits", "exited with status 3"), ("segfaults", "killed by SIGSEGV")])
def test_a_crash_fails_its_cases_and_the_session_goes_on(hostile: pytest.Pytester, method: str, reason: str) -> None:
    report, junit = hostile.path / "r.json", hostile.path / "junit.xml"
    result = hostile.runpytest(
        "--unlearner",
        f"hostile:{method}",
        "--unlearner",
        f"{METHODS}:NoOp",
        "-k",
        "gaussian and (budget or leakage)",
        "--audit-report",
        str(report),
        f"--junitxml={junit}",
    )
    result.assert_outcomes(failed=3, passed=1)  # the crashed method's 2 checks, and NoOp's leakage
    assert f"the unlearner's worker process {reason}" in result.stdout.str()
    noop = _scores(report, f"{METHODS}:NoOp")
    assert noop["budget_respected"][0] == "passed" and noop["gaussian_leakage"][0] == "failed"
    assert junit.exists() and "unlearn-audit" in result.stdout.str()


def test_memory_cap_fails_the_method_that_exceeds_it(hostile: pytest.Pytester) -> None:
    result = hostile.runpytest(
        "--unlearner", "hostile:eats_memory", "--audit-max-memory", "2G", "-k", "gaussian_leakage and gaussian"
    )
    result.assert_outcomes(failed=1)
    assert "can't allocate memory" in result.stdout.str() and "--audit-max-memory 2G" in result.stdout.str()


def test_a_hang_is_killed_at_the_timeout(hostile: pytest.Pytester) -> None:
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner",
        "hostile:sleeps",
        "--audit-timeout",
        "3",
        "-k",
        "gaussian_leakage and gaussian",
        "--audit-report",
        str(report),
    )
    result.assert_outcomes(failed=1)
    assert "did not finish within the time limit of 3 s (--audit-timeout) and was killed" in result.stdout.str()
    stdout = results(report)[0]["meta"]["unlearn_output"]["stdout"]
    pid = int(stdout.split("sleeper pid")[1].split()[0])
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock")
def test_snooping_proc_finds_nothing(hostile: pytest.Pytester) -> None:
    """The harness's command line and environment (where the cache path is) are out of the worker's reach."""
    (hostile.path / "harness.pid").write_text(str(os.getpid()))
    report = hostile.path / "r.json"
    hostile.runpytest("--unlearner", "hostile:snoops_proc", "-k", "budget and gaussian", "--audit-report", str(report))
    stdout = results(report)[0]["meta"]["unlearn_output"]["stdout"]
    assert "cmdline of" in stdout and "--audit-cache" not in stdout and "UNLEARN_AUDIT_CACHE" not in stdout
    assert stdout.count("denied (Permission denied)") == 4 and "proc listing: denied" in stdout


def test_a_detached_daemon_does_not_outlive_the_audit(hostile: pytest.Pytester) -> None:
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner",
        "hostile:daemonizes",
        "-k",
        "budget and gaussian",
        "--audit-report",
        str(report),
        "--audit-sandbox",
        "off",
    )  # off: so that it could write its file
    result.assert_outcomes(passed=1)
    pid = int(results(report)[0]["meta"]["unlearn_output"]["stdout"].split("daemon pid")[1].split()[0])
    assert not _alive(pid), "the double-forked daemon was ended with its job"
    assert not (hostile.path / "daemon-was-here").exists()


@pytest.mark.parametrize("sandbox", ["on", "off"])
def test_a_method_that_signals_the_harness_fails_its_case(hostile: pytest.Pytester, sandbox: str) -> None:
    """Its parent and the pytest process are outside its worker: the signals are refused (by the worker's
    guard, and by the kernel where Landlock scopes signals), the attempt fails the method's case, the
    other method keeps its verdicts, and the session ends with its summary, JSON report and JUnit file."""
    (hostile.path / "harness.pid").write_text(str(os.getpid()))
    report, junit = hostile.path / "r.json", hostile.path / "junit.xml"
    result = hostile.runpytest(
        "--unlearner", "hostile:signals_the_harness", "--unlearner", f"{METHODS}:NoOp",
        "-k", "gaussian and (budget or leakage)", "--audit-report", str(report), f"--junitxml={junit}",
        "--audit-sandbox", sandbox,
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=3)  # NoOp passes the budget and fails leakage (it changed nothing)
    verdicts = {(r["unlearner"], r["check"]): r["verdict"] for r in results(report)}
    assert verdicts[(f"{METHODS}:NoOp", "budget_respected")] == "pass"
    hostile_result = [r for r in results(report) if r["unlearner"] == "hostile:signals_the_harness"][0]
    assert hostile_result["meta"]["unlearn_output"]["stdout"].count("kill refused: Operation not permitted") == 2
    assert "tried to signal processes outside its worker (SIGKILL to pid" in result.stdout.str()
    assert junit.exists() and "unlearn-audit" in result.stdout.str()


def test_a_method_may_signal_its_own_children(hostile: pytest.Pytester) -> None:
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner", "hostile:signals_its_own_children", "-k", "budget and gaussian", "--audit-report", str(report),
        "--audit-sandbox", "off",  # off: /proc is readable, so the guard can see the child that left the session
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert results(report)[0]["meta"]["unlearn_output"]["stdout"].count("child ended by -15") == 2


def test_global_randomness_is_seeded_so_reruns_are_identical(hostile: pytest.Pytester) -> None:
    runs = []
    for name in ("a.json", "b.json"):
        hostile.runpytest(
            "--unlearner",
            "hostile:uses_global_random",
            "-k",
            "gaussian_leakage",
            "--audit-report",
            str(hostile.path / name),
        )
        runs.append(_scores(hostile.path / name, "hostile:uses_global_random"))
    assert runs[0] == runs[1] and runs[0]["gaussian_leakage"][1] is not None


def test_a_failed_unlearn_is_reported_once_with_its_output(hostile: pytest.Pytester) -> None:
    report = hostile.path / "failed.json"
    result = hostile.runpytest("--unlearner", "hostile:raises_loudly", "-k", "gaussian", "--audit-report", str(report))
    result.assert_outcomes(failed=5)
    directions = {r["check"]: r["direction"] for r in results(report)}  # as the check would have scored
    assert (
        directions["utility_preserved"] == "higher_is_better" and directions["not_mode_connected"] == "higher_is_better"
    )
    assert directions["gaussian_leakage"] == "lower_is_better"
    # Only the failures section: on CI (the CI variable set) pytest's short summary repeats whole messages.
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count("Traceback (most recent call last)") == 1
    assert out.count("hello from the method") == 1 and out.count("a warning from the method") == 1
    assert out.count("unlearn() failed (see test_budget_respected.py::") == 4


@pytest.mark.parametrize("show", ["-rA", "-s"])
def test_what_a_working_method_prints_is_shown_once(hostile: pytest.Pytester, show: str) -> None:
    """As pytest shows a test's own output: in the report of one test of the case (-rA, or under a failure),
    or at once with -s; not only in the JSON report."""
    result = hostile.runpytest("--unlearner", "hostile:talks_and_returns", "-k", "gaussian and not relearning", show)
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str().split("short test summary info")[0]
    assert out.count("hello from a method that works") == 1
    assert out.count("a warning from a method that works") == 1
    if show == "-rA":
        assert "Captured stdout of unlearn() of seed 0 call" in out
    else:
        assert "--- stdout of unlearn() of seed 0 ---" in out


@pytest.mark.parametrize(
    "method, expected",
    [
        ("stdout_becomes_a_fifo", "[not read: stdout.txt is not a regular file (a FIFO)]"),
        ("stdout_links_to_the_cache", "[not read: stdout.txt is not a regular file (a symbolic link)]"),
        ("stdout_becomes_sparse", "bytes cut ...]"),
    ],
)
def test_result_files_the_method_replaced_are_not_followed_nor_read_whole(
    hostile: pytest.Pytester, audit_env: Path, method: str, expected: str
) -> None:
    """The job's files are in the one folder the method may write: a FIFO there would hang the harness, a
    link would make it copy a file the worker may not read into the report, a sparse file of 8 GiB would
    exhaust its memory. None is followed or read whole, and the case gets its verdict."""
    secret = next(audit_env.rglob("meta.json"))
    (hostile.path / "link_target.txt").write_text(str(secret))
    report = hostile.path / "r.json"
    result = hostile.runpytest(
        "--unlearner", f"hostile:{method}", "-k", "budget and gaussian", "--audit-report", str(report)
    )
    result.assert_outcomes(passed=1)
    stdout = results(report)[0]["meta"]["unlearn_output"]["stdout"]
    assert stdout.startswith(expected) if expected.startswith("[not") else expected in stdout
    assert secret.read_text()[:20] not in stdout and len(stdout) < 5000
    if method == "stdout_becomes_sparse":
        assert stdout.endswith("the last line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server's guard reads /proc")
def test_a_method_gets_no_process_from_the_fork_server(hostile: pytest.Pytester) -> None:
    """Red-teamed: a method asked the fork server (unconfined, reachable through a named socket) for a process,
    which then listed the fixture cache and outlived the audit. The server then confined every child it
    forked, before the child ran anything; but such a process lay outside the worker's own Landlock domain,
    where neither the worker's reaper nor its confinement reached it.

    Red-teamed again: such a process found another audit's server (another session on the machine), whose
    confinement does not deny this audit's cache, and read the retrain model through it. A request that does
    not carry the server's own alive pipe is refused: the child exits (71) before it runs anything; and the
    worker drops that pipe before the method runs, so that no pipe the method holds is it.
    In a subprocess, so that the fork server is this audit's own."""
    (hostile.path / "harness.pid").write_text(str(os.getpid()))
    report = hostile.path / "r.json"
    hostile.runpytest_subprocess(
        "--unlearner",
        "hostile:asks_the_fork_server_for_a_process",
        "-k",
        "budget_respected and gaussian",
        "--audit-report",
        str(report),
    )
    stdout = results(report)[0]["meta"]["unlearn_output"]["stdout"]
    assert "the fork server's processes exited with ['71']" in stdout, stdout
    assert "tried 1 pipes" not in stdout, "the method should have offered the pipes it holds, and one of its own"


def test_each_job_runs_in_a_fresh_process(hostile: pytest.Pytester) -> None:
    """Nothing a method keeps in memory reaches its next job (another scenario, seed or budget)."""
    report = hostile.path / "r.json"
    hostile.runpytest_subprocess(
        "--unlearner",
        "hostile:remembers_its_jobs",
        "--audit-budget",
        "0.05,0.1",
        "-k",
        "budget_respected and (gaussian or backdoor)",
        "--audit-report",
        str(report),
    )
    outputs = [r["meta"]["unlearn_output"]["stdout"] for r in results(report)]
    assert len(outputs) == 4, outputs  # 2 scenarios x 2 budgets: four jobs
    assert all("jobs this process ran before: 0" in out for out in outputs), outputs
    waits = [r["meta"]["worker_wait_seconds"] for r in results(report)]  # what a fresh process cost each job
    assert all(isinstance(w, float) and 0 <= w < 300 for w in waits), waits
