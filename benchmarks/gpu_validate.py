"""Validate the `cifar10-resnet18` profile on one GPU, within one time-limited command (not a test).

    # here (a machine with the image-folder tree): pack it into one file small enough to carry (~18 MB)
    python benchmarks/gpu_validate.py --pack /path/to/CIFAR-10-images --out cifar10-images.tar.gz
    # on the GPU machine (no network needed): import, build, audit, write OUTDIR/gpu_validate.json
    python benchmarks/gpu_validate.py --images cifar10-images.tar.gz --out OUTDIR [--deadline-s 520]
    # rehearsal on a CPU: the same steps on the stand-in profile, with a small generated image tree
    python benchmarks/gpu_validate.py --standin --out OUTDIR
    # what the machine has (python, torch, CUDA, the packages the audit imports; exit 1 and how to carry
    # the missing ones as wheels), then exit
    python benchmarks/gpu_validate.py --check-env
    # a later slot: continue where committed runs stopped (--plan prints what is left)
    python benchmarks/gpu_validate.py --resume benchmarks/results/RUN-validate.json --plan
    python benchmarks/gpu_validate.py --images cifar10-images.tar.gz --out OUTDIR --resume benchmarks/results/RUN-validate.json

Steps, each timed and written to OUTDIR/gpu_validate.json as soon as it ends:
  1. data: unpack the archive (a .tar.gz of the tree as `--pack` writes it; or give the tree itself),
     import it with `unlearn_audit.profiles.cifar.image_folder` (the code behind `unlearn-audit data
     import cifar10`) into a private data directory, and load it back through the profile's loader;
  2. fixtures: `unlearn-audit fixtures build` of each scenario (`--scenario`; default all five, in the
     order gaussian, backdoor, witches_brew, gradient_canceling, gradient_canceling_low), seed 0, one
     subprocess each (with the reference measurements, whose seconds are recorded); from the fixture's
     meta: per-model training seconds, clean test accuracy (target >= 93% for
     the poisoned original and the retrain reference), peak GPU memory, the attack's validation;
  3. audits: `python -m pytest --unlearner unlearn_audit.methods:<M> --audit-profile <profile>
     --audit-report ...`, one subprocess per (method, scenario), NoOp, GradientDescent, then Retrain
     (the costliest: it trains a model); from the report: each check's outcome, score and time, the
     unlearn() seconds; peak GPU memory of the pytest process.
Before the deadline (`--deadline-s`, default 520 s from the start) a running step is stopped
(SIGTERM to its process group, then SIGKILL) and the remaining ones are skipped; a step is also
skipped when an earlier measurement says it cannot finish in the time left. The JSON always says
what was done, skipped or stopped (`finished`: the script got to its end; `all_done`: and nothing
was skipped or stopped). With `--work DIR` (e.g. `gpu-validate-work`, git-ignored) the imported data and
the fixtures are kept, so that a second call on the same machine (a device stays warm only briefly
between calls) skips the import and audits what the first one built.

Stages across slots: a fixture (about 1.2 GB) does not travel between machines, but the JSON does. With
`--resume EARLIER.json` (repeatable; e.g. the committed runs under benchmarks/results/) a scenario whose
requested audits were all done is neither built nor audited again, and an audit done earlier is skipped;
the new JSON names where each skipped step was done, so one slot at a time covers the five scenarios.

The checkout runs as it is, installed or not: the subprocesses import it through a directory of
symbolic links laid out as an install would (`unlearn_audit/` with `fixtures/` and `conformance/`
inside), put first on PYTHONPATH; the plugin is loaded with `-p` when no installed entry point
provides it. Fixtures and data go to a work directory (`--work`, default a temporary one, deleted at
the end unless `--keep-work`), not to OUTDIR: a fixture is about 1.2 GB.

The stand-in profile reads synthetic data, not the imported tree: `--standin` rehearses the data
path (pack, unpack, import, load) and, separately, the build and audit path, on a CPU.
"""  # noqa: E501 (a usage line of the --help text, kept whole)

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROFILE = "cifar10-resnet18"
STANDIN = "cifar10-resnet18-standin"
SCENARIOS = ("gaussian", "backdoor", "witches_brew", "gradient_canceling", "gradient_canceling_low")
METHODS = ("NoOp", "GradientDescent", "Retrain")
ACCURACY_TARGET = 0.93
KILL_GRACE_S = 5.0
RESERVE_S = 8.0  # kept back from the deadline for stopping a step and writing the JSON
NEEDED_MODULES = (
    "torch",
    "numpy",
    "scipy",
    "sklearn",
    "rich",
    "filelock",
    "platformdirs",
    "safetensors",
    "pytest",
    "PIL",
)
PEAK_PLUGIN = "_gpu_validate_peak"
PEAK_PLUGIN_SOURCE = '''"""pytest plugin of benchmarks/gpu_validate.py: peak GPU memory of this pytest process, at its end."""
import json, os

def pytest_sessionfinish(session):
    path = os.environ.get("GPU_VALIDATE_PEAK_FILE")
    try:
        import torch
    except ImportError:
        return
    if path and torch.cuda.is_available() and torch.cuda.is_initialized():
        with open(path, "w") as f:
            json.dump({str(i): int(torch.cuda.max_memory_allocated(i)) for i in range(torch.cuda.device_count())}, f)
'''  # noqa: E501 (the generated plugin's docstring, kept whole)


def log(msg: str, t0: float | None = None) -> None:
    stamp = f"[{time.monotonic() - t0:7.1f} s] " if t0 is not None else ""
    print(f"gpu_validate {stamp}{msg}", flush=True)


# -- the checkout as an importable package ---------------------------------------------------------
def make_shim(repo: Path, dest: Path) -> Path:
    """`dest/unlearn_audit/` with a link to every entry of `repo/unlearn_audit/`, and `fixtures/` and
    `conformance/` linked from the repository's top level, as the package-dir mapping of pyproject.toml
    installs them. Put `dest` first on sys.path to import the checkout without installing it."""
    pkg = dest / "unlearn_audit"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for entry in (repo / "unlearn_audit").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry.resolve())
    for name in ("fixtures", "conformance"):
        (pkg / name).symlink_to((repo / name).resolve())
    (dest / f"{PEAK_PLUGIN}.py").write_text(PEAK_PLUGIN_SOURCE)
    return dest


# Import name -> distribution on PyPI, for the hint that says how to carry a missing module.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "PIL": "pillow"}


def carry_hint(missing: list[str]) -> str:
    """How to bring missing modules to a machine without network: wheels downloaded here, installed there."""
    if not missing:
        return ""
    names = " ".join(DISTRIBUTIONS.get(m, m) for m in missing)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (
        f"missing: {', '.join(missing)}. Where pip can reach PyPI: pip download --no-deps --only-binary=:all: "
        f"--python-version {py} --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d WHEELS {names}; "
        f"carry WHEELS to this machine, then: pip install --no-index --no-deps --target /tmp/site WHEELS/*.whl "
        f"and PYTHONPATH=/tmp/site (benchmarks/gpu_speed.sh does this for the wheels in its CARRY folder)"
    )


def plugin_is_installed() -> bool:
    return any(
        e.value.split(":")[0] == "unlearn_audit.plugin" for e in importlib.metadata.entry_points(group="pytest11")
    )


def environment() -> dict[str, Any]:
    """What this machine has: versions, CUDA devices, missing modules."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    info["missing_modules"] = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if info["missing_modules"]:
        info["how_to_carry"] = carry_hint(info["missing_modules"])
    for dist in ("torch", "torchvision", "pillow", "numpy", "scipy", "scikit-learn", "rich", "safetensors", "pytest"):
        try:
            info.setdefault("versions", {})[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info.setdefault("versions", {})[dist] = None
    if "torch" not in info["missing_modules"]:
        import torch

        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["cuda"] = torch.version.cuda
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["gpu_memory_bytes"] = [
                torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
            ]
    info["plugin_entry_point_installed"] = plugin_is_installed()
    return info


# -- data: pack, unpack, import --------------------------------------------------------------------
def pack_tree(src: Path, archive: Path, allow_partial: bool = False) -> dict[str, Any]:
    """The image files of a checked tree into one .tar.gz (sorted, fixed metadata), written atomically.

    Images are stored as they are (no re-encoding). CIFAR-10 as JPEG files: 55 MB of files, most of
    each one the same JPEG header, which gzip shares across neighbours: about 18 MB packed."""
    from unlearn_audit.profiles.cifar.image_folder import CLASSES, scan_tree

    t = time.perf_counter()
    tree = scan_tree(src, allow_partial)
    archive = archive.expanduser().resolve()
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".tmp", dir=archive.parent)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            for split, groups in tree.files.items():
                for cls, files in zip(CLASSES, groups):
                    for path in files:
                        data = path.read_bytes()
                        info = tarfile.TarInfo(f"{split}/{cls}/{path.name}")
                        info.size, info.mtime, info.mode = len(data), 0, 0o644
                        tar.addfile(info, io.BytesIO(data))
                        count += 1
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "archive": str(archive),
        "images": count,
        "bytes": archive.stat().st_size,
        "seconds": time.perf_counter() - t,
    }


def unpack(archive: Path, dest: Path) -> int:
    """Extract a --pack archive (regular files under train/ and test/ only) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isdir():
                continue
            if (
                not member.isfile()
                or Path(member.name).is_absolute()
                or ".." in parts
                or parts[0] not in ("train", "test")
            ):
                raise ValueError(f"{archive}: unexpected member {member.name!r} (not an image of a --pack archive)")
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            target.write_bytes(src.read())
            n += 1
    return n


def prepare_data(images: Path, work: Path, allow_partial: bool, t0: float | None = None) -> dict[str, Any]:
    """Unpack (if an archive), import into `work/data/cifar10`, load back; the figures of each part."""
    from unlearn_audit.profiles.cifar.data import load_cifar10_split
    from unlearn_audit.profiles.cifar.image_folder import import_image_folder

    out: dict[str, Any] = {"source": str(images)}
    if images.is_dir():
        tree = images
    else:
        t = time.perf_counter()
        tree = work / "images"
        if tree.exists():
            shutil.rmtree(tree)
        out["archive_bytes"] = images.stat().st_size
        out["unpacked_files"] = unpack(images, tree)
        out["unpack_seconds"] = time.perf_counter() - t
        log(
            f"unpacked {out['unpacked_files']:,} files ({out['archive_bytes'] / 1e6:.1f} MB) "
            f"in {out['unpack_seconds']:.1f} s",
            t0,
        )
    t = time.perf_counter()

    def progress(split: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 5) == 0:
            log(f"import {split}: {done:,}/{total:,} images", t0)

    result = import_image_folder(tree, work / "data" / "cifar10", allow_partial=allow_partial, progress=progress)
    out.update(
        import_seconds=time.perf_counter() - t,
        imported_file=str(result.path),
        complete=result.complete,
        imported_bytes=result.path.stat().st_size,
        shapes={k: list(v) for k, v in result.shapes.items()},
    )
    t = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a partial import warns; `complete` says so already
        split = load_cifar10_split(str(work / "data" / "cifar10"), download=False)
    out["load_seconds"] = time.perf_counter() - t
    out["loaded"] = {
        "train_x": list(split.train_x.shape),
        "test_x": list(split.test_x.shape),
        "dtype": str(split.train_x.dtype),
        "train_per_class": [int(v) for v in split.train_y.bincount(minlength=10)],
        "test_per_class": [int(v) for v in split.test_y.bincount(minlength=10)],
        "channel_means": [round(float(v), 4) for v in split.train_x.mean((0, 2, 3))],
    }
    if tree != images:
        shutil.rmtree(tree, ignore_errors=True)
    return out


def make_standin_tree(root: Path, train: int = 20, test: int = 5, seed: int = 0) -> Path:
    """A small CIFAR-shaped image-folder tree of JPEG files (smooth random images), for the rehearsal."""
    import numpy as np
    from PIL import Image

    from unlearn_audit.profiles.cifar.image_folder import CLASSES

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
                img = np.repeat(np.repeat(coarse, 8, 0), 8, 1)
                Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
    return root


# -- subprocess steps under a deadline -------------------------------------------------------------
FAILED_TAIL_LINES = 5
"""How much of a failed step's log is echoed."""


def run_step(
    name: str,
    cmd: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    log_dir: Path,
    t0: float | None = None,
    heartbeat_s: float = 30.0,
    ok_codes: tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """Run `cmd`, its output echoed (prefixed) and kept in `log_dir/<name>.log`; stopped after `timeout` s.

    The step is "ok" when it ended in time with one of `ok_codes` (for an audit: pytest's 0 and 1, a verdict
    either way); any other exit (pytest's 4, a usage error such as a method that cannot be imported) is
    "failed", with the log's last lines echoed unprefixed, where a filter of the prefixed output still shows them.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    started = time.monotonic()
    log(f"{name}: start (time limit {timeout:.0f} s): {' '.join(cmd)}", t0)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                print(f"  | {line.rstrip()}", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        status = "ok"
        while True:
            left = timeout - (time.monotonic() - started)
            try:
                proc.wait(timeout=max(0.01, min(heartbeat_s, left)))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started >= timeout:
                    status = "stopped at the deadline"
                    _stop(proc)
                    break
                log(f"{name}: running, {time.monotonic() - started:.0f} s", t0)
        reader.join(timeout=5)
    seconds = time.monotonic() - started
    if status == "ok" and proc.returncode not in ok_codes:
        status = "failed"
    log(f"{name}: {status}, exit {proc.returncode}, {seconds:.1f} s", t0)
    if status == "failed":
        for line in log_path.read_text(errors="replace").splitlines()[-FAILED_TAIL_LINES:]:
            log(f"{name}: {line}", t0)
    return {
        "name": name,
        "cmd": cmd,
        "status": status,
        "rc": proc.returncode,
        "seconds": round(seconds, 2),
        "log": str(log_path),
    }


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- reading what the steps left -------------------------------------------------------------------
def fixture_summary(cache: Path, profile: str, scenario: str, seed: int = 0) -> dict[str, Any] | None:
    metas = sorted(cache.glob(f"{profile}/{scenario}-seed{seed}-*/meta.json"))
    if not metas:
        return None
    from unlearn_audit.scenarios.provenance import built_with, fixture_id

    m = json.loads(metas[-1].read_text())
    v = m.get("validation", {})
    acc = {k: v.get(f"{k}_test_accuracy") for k in ("original", "retrain")}
    return {
        "path": str(metas[-1].parent),
        "device": m.get("device"),
        "fixture_id": fixture_id(m),  # the build the audits of this run were measured on
        "built_with": built_with(m),
        "build_seconds": m.get("build_seconds"),
        "train_seconds": m.get("train_seconds", {}),  # with "shared <name>" for the shared models this build trained
        "shared_models": m.get("shared_models", []),
        "test_accuracy": acc,
        "meets_accuracy_target": all(a is not None and a >= ACCURACY_TARGET for a in acc.values()),
        "peak_gpu_memory_bytes": m.get("peak_gpu_memory_bytes", {}),
        "attack_effective": v.get("effective"),
        "validation": v,
    }


def reference_seconds(build_log: Path) -> float | None:
    """The reference measurements' seconds, as `unlearn-audit fixtures build` prints them."""
    import re

    try:
        found = re.search(r"reference measurements of \d+ fixture\(s\) in ([0-9.]+) s", build_log.read_text())
    except OSError:
        return None
    return float(found.group(1)) if found else None


def audit_summary(report: Path) -> dict[str, Any] | None:
    if not report.is_file():
        return None
    doc = json.loads(report.read_text())
    tests = [
        {
            "check": r.get("check"),
            "outcome": r.get("outcome"),
            "verdict": r.get("verdict"),
            "score": r.get("score"),
            "stderr": r.get("stderr"),
            "reference": r.get("reference"),
            "duration_s": r.get("duration"),
            "message": str(r.get("message") or "")[:300],
        }
        for r in doc.get("results", [])
    ]
    unlearn = {r.get("meta", {}).get("unlearn_seconds") for r in doc.get("results", [])} - {None}
    # each job's wait for its fresh worker process (spawned on CUDA), beyond what the previous job hid
    waits = {
        (r.get("scenario"), r.get("meta", {}).get("seed")): r.get("meta", {}).get("worker_wait_seconds")
        for r in doc.get("results", [])
    }
    return {
        "tests": tests,
        "unlearn_seconds": sorted(unlearn),
        "worker_wait_seconds": sorted(w for w in waits.values() if w is not None),
    }


# -- earlier runs (a slot continues where the last one stopped) -------------------------------------
def load_earlier(paths: list[str], mode: str | None = None) -> dict[str, Any]:
    """What earlier gpu_validate.json files finished: fixtures built and validated, audits that ran to the
    end ({"fixtures": {scenario: summary}, "audits": {(method, scenario): entry}}, each with "from")."""
    fixtures: dict[str, Any] = {}
    audits: dict[tuple[str, str], Any] = {}
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if mode is not None and doc.get("mode") != mode:
            raise SystemExit(f"--resume {path}: a {doc.get('mode')!r} run cannot stand in for this {mode!r} run")
        for scenario, summary in (doc.get("fixtures") or {}).items():
            if summary.get("validation"):
                fixtures[scenario] = {**summary, "from": str(path)}
        for entry in doc.get("audits") or []:
            if entry.get("status") == "ok" and entry.get("tests"):
                audits[(entry["method"], entry["scenario"])] = {**entry, "from": str(path)}
    return {"fixtures": fixtures, "audits": audits}


def plan(scenarios: list[str], methods: list[str], earlier: dict[str, Any]) -> list[str]:
    """The steps still to do: per scenario, a build (the fixture does not travel between machines) when any of
    its audits is not done yet, then those audits."""
    steps = []
    for scenario in scenarios:
        todo = [m for m in methods if (m, scenario) not in earlier["audits"]]
        if todo or scenario not in earlier["fixtures"]:
            steps.append(f"build {scenario}")
            steps.extend(f"audit {m} on {scenario}" for m in todo)
    return steps


def scenario_keyword(selected: list[str], known: tuple[str, ...] = SCENARIOS) -> str:
    """A pytest `-k` expression that selects exactly the tests of the `selected` scenarios.

    Why not the names alone: `-k` matches substrings of test ids, so `-k gradient_canceling` also runs
    `gradient_canceling_low`, whose fixture the audit would then build inside its own time (measured
    on the stand-in: 81 s instead of 25 s for NoOp). Known scenarios that contain a selected name
    without being selected are excluded by name."""
    chosen = " or ".join(selected)
    others = [k for k in known if k not in selected and any(s in k for s in selected)]
    if not others:
        return chosen
    return f"({chosen}) and not ({' or '.join(others)})"


# -- the whole validation ---------------------------------------------------------------------------
class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.deadline_s
        self.args = args
        self.out = Path(args.out).expanduser().resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.profile = STANDIN if args.standin else PROFILE
        self.doc: dict[str, Any] = {
            "schema": 1,
            "mode": "standin" if args.standin else "gpu",
            "profile": self.profile,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "deadline_s": args.deadline_s,
            "argv": sys.argv[1:],
            "accuracy_target": ACCURACY_TARGET,
            "finished": False,
            "data": None,
            "fixtures": {},
            "audits": [],
            "steps": [],
            "skipped": [],
            "errors": [],
        }

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.monotonic() - self.t0, 2)
        tmp = self.out / ".gpu_validate.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        os.replace(tmp, self.out / "gpu_validate.json")

    def skip(self, what: str, why: str) -> None:
        log(f"skip {what}: {why}", self.t0)
        self.doc["skipped"].append({"step": what, "why": why})
        self.save()

    def main(self) -> int:
        args = self.args
        work = Path(args.work).expanduser().resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu-validate-"))
        work.mkdir(parents=True, exist_ok=True)
        self.doc["work"] = str(work)
        try:
            return self._main(work)
        except Exception as exc:  # noqa: BLE001  (reported in the JSON, which must be written)
            import traceback

            self.doc["errors"].append(f"{type(exc).__name__}: {exc}")
            self.doc["traceback"] = traceback.format_exc()[-4000:]
            log(f"error: {type(exc).__name__}: {exc}", self.t0)
            return 1
        finally:
            self.doc["total_seconds"] = round(time.monotonic() - self.t0, 2)
            self.doc["all_done"] = bool(
                self.doc["finished"]
                and not self.doc["skipped"]
                and not self.doc["errors"]
                and all(s["status"] == "ok" for s in self.doc["steps"])
            )
            self.save()
            if not args.keep_work and not args.work:
                shutil.rmtree(work, ignore_errors=True)
            log(f"wrote {self.out / 'gpu_validate.json'}", self.t0)

    def _main(self, work: Path) -> int:
        args, t0 = self.args, self.t0
        shim = make_shim(REPO, work / "site")
        sys.path.insert(0, str(shim))
        env_info = environment()
        self.doc["environment"] = env_info
        log(
            f"python {env_info['python']}, torch {env_info['versions'].get('torch')}, "
            f"GPUs {env_info.get('gpus', 'none')}, missing: {env_info['missing_modules'] or 'nothing'}",
            t0,
        )
        self.save()
        if env_info["missing_modules"]:
            self.doc["errors"].append(carry_hint(env_info["missing_modules"]))
            log(carry_hint(env_info["missing_modules"]), t0)
            return 1
        device = args.device or ("cpu" if args.standin else "cuda")
        if device.startswith("cuda") and not env_info.get("cuda_available"):
            self.doc["errors"].append("CUDA is not available (use --device cpu, or --standin to rehearse on a CPU)")
            return 1
        self.doc["device"] = device

        # 1. data
        images = Path(args.images).expanduser() if args.images else None
        if images is None and not args.standin:
            self.doc["errors"].append("--images is required (an archive written by --pack, or an image-folder tree)")
            return 2
        scenarios = list(args.scenario or SCENARIOS)
        if self.left() < args.min_step_s:
            for what in ["data", *(f"build {s}" for s in scenarios)]:
                self.skip(what, f"{self.left():.0f} s left")
            self.doc["finished"] = True
            return 0
        if images is None:
            tree = make_standin_tree(work / "standin-tree")
            images = work / "standin-images.tar.gz"
            self.doc["standin_pack"] = pack_tree(tree, images, allow_partial=True)
            shutil.rmtree(tree)
        log(f"data: {images}", t0)
        imported = work / "data" / "cifar10" / "cifar10-image-folder.npz"
        if imported.is_file() and not args.standin:  # a kept work directory: imported by an earlier call
            self.doc["data"] = {
                "source": str(images),
                "reused": str(imported),
                "import_seconds": 0.0,
                "load_seconds": 0.0,
                "shapes": "kept from an earlier call",
            }
        else:
            self.doc["data"] = prepare_data(images, work, allow_partial=args.standin or args.allow_partial, t0=t0)
        d = self.doc["data"]
        log(f"data: imported {d['shapes']} in {d['import_seconds']:.1f} s, loaded in {d['load_seconds']:.1f} s", t0)
        self.save()

        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]),
            UNLEARN_AUDIT_DATA=str(work / "data"),
            UNLEARN_AUDIT_CACHE=str(work / "cache"),
            PYTHONUNBUFFERED="1",
        )
        py, cache, logs = sys.executable, work / "cache", self.out / "logs"

        # 2. fixtures (a scenario whose every requested audit an earlier run did is not built again)
        methods = args.methods or list(METHODS)
        earlier = load_earlier(args.resume or [], self.doc["mode"])
        self.doc["earlier"] = {
            "fixtures": {k: v["from"] for k, v in earlier["fixtures"].items()},
            "audits": {f"{m} on {sc}": v["from"] for (m, sc), v in earlier["audits"].items()},
        }
        for scenario in list(scenarios):
            if scenario in earlier["fixtures"] and all((m, scenario) in earlier["audits"] for m in methods):
                self.skip(f"build {scenario} and its audits", f"done in {earlier['fixtures'][scenario]['from']}")
                scenarios.remove(scenario)
        build_wall: list[float] = []
        for scenario in scenarios:
            if self.left() < args.min_step_s:
                self.skip(f"build {scenario}", f"{self.left():.0f} s left")
                continue
            if build_wall and self.left() < build_wall[-1]:
                self.skip(f"build {scenario}", f"{self.left():.0f} s left, the last build took {build_wall[-1]:.0f} s")
                continue
            step = run_step(
                f"build-{scenario}",
                [
                    py,
                    "-m",
                    "unlearn_audit.tools.cli",
                    "fixtures",
                    "build",
                    "--profile",
                    self.profile,
                    "--scenario",
                    scenario,
                    "--cache",
                    str(cache),
                    "--device",
                    device,
                ],
                env=env,
                cwd=work,
                timeout=self.left(),
                log_dir=logs,
                t0=t0,
            )
            self.doc["steps"].append(step)
            summary = fixture_summary(cache, self.profile, scenario)
            if summary is not None:
                summary["reference_seconds"] = reference_seconds(Path(step["log"]))
                self.doc["fixtures"][scenario] = summary
                build_wall.append(step["seconds"])
                log(
                    f"fixture {scenario}: train s {summary['train_seconds']}, "
                    f"test accuracy {summary['test_accuracy']}, "
                    f"attack effective {summary['attack_effective']}, "
                    f"peak GPU memory {summary['peak_gpu_memory_bytes']}",
                    t0,
                )
            self.save()

        # 3. audits
        plugin = [] if plugin_is_installed() else ["-p", "unlearn_audit.plugin"]
        seconds: dict[tuple[str, str], float] = {}
        for method in methods:
            for scenario in scenarios:
                what = f"audit {method} on {scenario}"
                if (method, scenario) in earlier["audits"]:
                    self.skip(what, f"done in {earlier['audits'][(method, scenario)]['from']}")
                    continue
                if scenario not in self.doc["fixtures"]:
                    self.skip(what, "no fixture")
                    continue
                need = self._estimate(method, scenario, seconds)
                if self.left() < max(args.min_step_s, need):
                    self.skip(what, f"{self.left():.0f} s left, estimated {need:.0f} s")
                    continue
                report = self.out / "reports" / f"{method}-{scenario}.json"
                report.parent.mkdir(parents=True, exist_ok=True)
                peak_file = work / f"peak-{method}-{scenario}.json"
                step = run_step(
                    f"audit-{method}-{scenario}",
                    [
                        py,
                        "-m",
                        "pytest",
                        "-q",
                        "-p",
                        "no:cacheprovider",
                        *plugin,
                        "-p",
                        PEAK_PLUGIN,
                        "--unlearner",
                        f"unlearn_audit.methods:{method}",
                        "--audit-profile",
                        self.profile,
                        "--audit-cache",
                        str(cache),
                        "--audit-device",
                        device,
                        "--audit-report",
                        str(report),
                        "-k",
                        scenario_keyword([scenario]),
                    ],
                    env=dict(env, GPU_VALIDATE_PEAK_FILE=str(peak_file)),
                    cwd=work,
                    timeout=self.left(),
                    log_dir=logs,
                    t0=t0,
                    ok_codes=(0, 1),  # 1: some checks failed, which is a verdict too
                )
                self.doc["steps"].append(step)
                entry: dict[str, Any] = {
                    "method": method,
                    "scenario": scenario,
                    "status": step["status"],
                    "rc": step["rc"],
                    "wall_seconds": step["seconds"],
                }
                entry["peak_gpu_memory_bytes"] = json.loads(peak_file.read_text()) if peak_file.is_file() else None
                summary = audit_summary(report)
                if summary is not None:
                    entry.update(summary, report=str(report))
                    if step["status"] == "ok":
                        seconds[(method, scenario)] = step["seconds"]
                    verdicts = ", ".join(f"{t['check']}={t['outcome']}" for t in summary["tests"])
                    log(f"{what}: {verdicts}", t0)
                self.doc["audits"].append(entry)
                self.save()
        self.doc["finished"] = True
        return 0

    def _estimate(self, method: str, scenario: str, seconds: dict[tuple[str, str], float]) -> float:
        """Seconds an audit will take, from what this run measured (0 when nothing is known yet)."""
        if (method, scenario) in seconds:
            return seconds[(method, scenario)]
        same = [s for (m, _), s in seconds.items() if m == method]
        if same:
            return max(same)
        base = max([s for (m, _), s in seconds.items() if m == "NoOp"], default=0.0)
        if method == "Retrain":  # NoOp's checks plus one more model trained like the fixture's retrain
            retrain = (self.doc["fixtures"].get(scenario, {}).get("train_seconds") or {}).get("retrain", 0.0)
            return base + retrain
        return base


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", help="archive written by --pack (.tar.gz), or an image-folder tree")
    p.add_argument(
        "--out", help="output directory (gpu_validate.json, logs/, reports/); with --pack: the archive to write"
    )
    p.add_argument("--pack", metavar="TREE", help="pack the image-folder tree TREE into the archive --out, then exit")
    p.add_argument("--standin", action="store_true", help="the CPU stand-in profile, with a small generated image tree")
    p.add_argument("--check-env", action="store_true", help="print what this machine has, then exit")
    p.add_argument("--deadline-s", type=float, default=520.0, help="stop and write the JSON by then (default 520)")
    p.add_argument(
        "--min-step-s", type=float, default=20.0, help="do not start a step with less time left (default 20)"
    )
    p.add_argument("--device", default=None, help="build and audit device (default cuda; with --standin, cpu)")
    p.add_argument(
        "--scenario", action="append", default=None, help=f"only these scenarios (default {', '.join(SCENARIOS)})"
    )
    p.add_argument(
        "--methods", nargs="*", default=None, help=f"methods of unlearn_audit.methods (default {', '.join(METHODS)})"
    )
    p.add_argument("--allow-partial", action="store_true", help="import a tree without the full 50,000 + 10,000 images")
    p.add_argument("--work", default=None, help="work directory for data and fixtures, kept (default: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work directory")
    p.add_argument(
        "--resume",
        action="append",
        default=None,
        metavar="JSON",
        help="an earlier run's gpu_validate.json (repeatable): what it finished is not done again, and the "
        "new JSON says where each skipped step was done",
    )
    p.add_argument("--plan", action="store_true", help="print the steps still to do (after --resume), then exit")
    args = p.parse_args(argv)
    if args.check_env:
        info = environment()
        print(json.dumps(info, indent=2))
        if info["missing_modules"]:
            print(info["how_to_carry"], file=sys.stderr)
            return 1
        return 0
    if args.plan:
        earlier = load_earlier(args.resume or [])
        steps = plan(args.scenario or list(SCENARIOS), args.methods or list(METHODS), earlier)
        print("\n".join(steps) if steps else "nothing left to do")
        return 0
    if args.pack:
        if not args.out:
            p.error("--pack needs --out ARCHIVE.tar.gz")
        with tempfile.TemporaryDirectory() as tmp:
            sys.path.insert(0, str(make_shim(REPO, Path(tmp))))
            from unlearn_audit.errors import ResourceUnavailable

            try:
                result = pack_tree(Path(args.pack).expanduser(), Path(args.out), allow_partial=args.allow_partial)
            except ResourceUnavailable as exc:  # the tree is not CIFAR-10 as expected: the message says what
                print(f"error: {exc}", file=sys.stderr)
                return 2
        print(
            f"packed {result['images']:,} images into {result['archive']} ({result['bytes'] / 1e6:.1f} MB) "
            f"in {result['seconds']:.1f} s"
        )
        return 0
    if not args.out:
        p.error("--out OUTDIR is required")
    return Run(args).main()


if __name__ == "__main__":
    sys.exit(main())
