"""CIFAR-10 from an image-folder tree (`unlearn-audit data import cifar10`): checks, pixels, the loader,
the console script. Offline, on small trees of PNG/JPEG files generated here with pillow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from unlearn_audit.errors import MissingExtra  # noqa: E402
from unlearn_audit.profiles.cifar import image_folder as imf  # noqa: E402
from unlearn_audit.profiles.cifar.image_folder import CLASSES, IMPORTED_FILE, ImageFolderError, import_image_folder  # noqa: E402
from unlearn_audit.tools.cli import main as cli_main  # noqa: E402

# Folder names in mixed case: they are matched to CIFAR-10's classes case-insensitively.
FOLDER_NAMES = ["Airplane", "AUTOMOBILE", "bird", "Cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_tree(root: Path, train: int = 3, test: int = 2, fmt: str = "png", seed: int = 0) -> dict[str, np.ndarray]:
    """PATH/{train,test}/<class>/<i>.<fmt> of random 32x32 RGB images; returns relative path -> pixels."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, n in (("train", train), ("test", test)):
        for folder in FOLDER_NAMES:
            d = root / split / folder
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                if fmt == "jpg":  # smooth images, so that JPEG's loss is small
                    img = np.repeat(np.repeat(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
                name = f"{i}.{fmt}"
                Image.fromarray(img).save(d / name, quality=95) if fmt == "jpg" else Image.fromarray(img).save(d / name)
                pixels[f"{split}/{folder}/{name}"] = img
    return pixels


def load(data_dir: Path) -> dict[str, np.ndarray]:
    with np.load(data_dir / IMPORTED_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_png_round_trip_is_exact_with_cifar_class_order(tmp_path: Path) -> None:
    pixels = make_tree(tmp_path / "tree", train=3, test=2)
    (tmp_path / "tree" / "train" / "Cat" / "notes.txt").write_text("not an image")  # ignored
    (tmp_path / "tree" / "train" / "Cat" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored
    seen: list[tuple[str, int, int]] = []
    result = import_image_folder(
        tmp_path / "tree", tmp_path / "data", allow_partial=True, progress=lambda *a: seen.append(a)
    )
    assert result.path == tmp_path / "data" / IMPORTED_FILE and not result.complete and result.ignored == 1
    assert result.shapes == {"train_x": (30, 32, 32, 3), "train_y": (30,), "test_x": (20, 32, 32, 3), "test_y": (20,)}
    assert seen[-1] == ("test", 20, 20) and ("train", 30, 30) in seen
    doc = load(tmp_path / "data")
    assert tuple(doc["classes"]) == CLASSES and not bool(doc["complete"])
    for split in ("train", "test"):
        assert doc[f"{split}_x"].dtype == np.uint8
        for x, y, f in zip(doc[f"{split}_x"], doc[f"{split}_y"], doc[f"{split}_files"]):
            assert np.array_equal(x, pixels[f]), f  # PNG is lossless
            assert CLASSES[y] == f.split("/")[1].lower()  # label = CIFAR-10's index of the folder's class
    # rows are shuffled (not class after class), deterministically
    assert doc["train_y"].tolist() != sorted(doc["train_y"].tolist())
    again = import_image_folder(tmp_path / "tree", tmp_path / "data2", allow_partial=True)
    assert np.array_equal(load(again.path.parent)["train_files"], doc["train_files"])


def test_jpeg_tree_imports_close_to_its_pixels(tmp_path: Path) -> None:
    pixels = make_tree(tmp_path / "tree", train=1, test=1, fmt="jpg")
    import_image_folder(tmp_path / "tree", tmp_path / "data", allow_partial=True)
    doc = load(tmp_path / "data")
    diffs = [np.abs(x.astype(int) - pixels[f].astype(int)).mean() for x, f in zip(doc["train_x"], doc["train_files"])]
    assert max(diffs) < 8  # lossy, but the same image


def test_loader_reads_the_import_without_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from unlearn_audit.profiles.cifar import data as cifar

    monkeypatch.setitem(sys.modules, "torchvision", None)  # no download may be attempted
    monkeypatch.setattr(imf, "SPLITS", {"train": 3, "test": 2})  # a "complete" tree at this size: no warning
    make_tree(tmp_path / "tree", train=3, test=2)
    monkeypatch.setenv(cifar.DATA_ENV, str(tmp_path / "data"))
    result = import_image_folder(tmp_path / "tree", cifar.default_data_dir())
    assert result.complete
    split = cifar.load_cifar10_split(download=False)
    doc = load(cifar.default_data_dir())
    assert split.train_x.shape == (30, 3, 32, 32) and split.test_x.shape == (20, 3, 32, 32) and split.num_classes == 10
    assert split.train_x.dtype == torch.float32
    c, h, w = 1, 7, 30
    assert split.train_x[4, c, h, w].item() == pytest.approx(doc["train_x"][4, h, w, c] / 255.0)
    assert split.train_y.tolist() == doc["train_y"].tolist() and split.test_y.tolist() == doc["test_y"].tolist()


def test_partial_import_warns_when_loaded(tmp_path: Path) -> None:
    from unlearn_audit.profiles.cifar.data import load_cifar10_split

    make_tree(tmp_path / "tree", train=1, test=1)
    import_image_folder(tmp_path / "tree", tmp_path / "data", allow_partial=True)
    with pytest.warns(UserWarning, match="partial CIFAR-10 import"):
        split = load_cifar10_split(str(tmp_path / "data"), download=False)
    assert len(split.train_y) == 10


def test_counts_are_enforced_unless_allowed(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", train=2, test=1)
    with pytest.raises(ImageFolderError, match=r"airplane|Airplane") as info:
        import_image_folder(tmp_path / "tree", tmp_path / "data")
    assert "2 images, expected 5,000" in str(info.value) and "--allow-partial" in str(info.value)
    assert not (tmp_path / "data" / IMPORTED_FILE).exists()


def _bad_tree(tmp_path: Path, what: str) -> tuple[Path, str]:
    root = tmp_path / "tree"
    make_tree(root, train=1, test=1)
    cat = root / "train" / "Cat"
    if what == "missing split":
        for f in (root / "test").rglob("*"):
            f.unlink() if f.is_file() else None
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.rmdir()
        (root / "test").rmdir()
        return root, "missing split folder test/"
    if what == "unknown class":
        (root / "test" / "dragon").mkdir()
        return root, "unknown class folder(s) dragon"
    if what == "missing class":
        (root / "train" / "truck" / "0.png").unlink()
        (root / "train" / "truck").rmdir()
        return root, "missing class folder(s) truck"
    if what == "duplicate class":
        (root / "train" / "CAT").mkdir()
        return root, "two folders for class 'cat'"
    if what == "wrong size":
        Image.fromarray(np.zeros((32, 33, 3), np.uint8)).save(cat / "1.png")
        return root, r"1.png: 33x32 pixels, expected 32x32"
    if what == "grey":
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(cat / "1.png")
        return root, r"1.png: image mode 'L', expected 'RGB'"
    if what == "rgba":
        Image.fromarray(np.zeros((32, 32, 4), np.uint8)).save(cat / "1.png")
        return root, r"1.png: image mode 'RGBA'"
    if what == "unreadable":
        (cat / "1.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
        return root, r"1.jpg: unreadable image file"
    if what == "truncated":
        full = cat / "0.png"
        (cat / "1.png").write_bytes(full.read_bytes()[:200])
        return root, r"1.png: unreadable image file"
    raise AssertionError(what)


@pytest.mark.parametrize(
    "what",
    [
        "missing split",
        "unknown class",
        "missing class",
        "duplicate class",
        "wrong size",
        "grey",
        "rgba",
        "unreadable",
        "truncated",
    ],
)
def test_each_problem_is_named(tmp_path: Path, what: str) -> None:
    root, expected = _bad_tree(tmp_path, what)
    with pytest.raises(ImageFolderError, match=re.escape(expected)):
        import_image_folder(root, tmp_path / "data", allow_partial=True)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path / "tree", train=1, test=1)
    first = import_image_folder(tmp_path / "tree", tmp_path / "data", allow_partial=True)
    before = first.path.read_bytes()

    def broken_savez(f, **arrays):  # type: ignore[no-untyped-def]
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        import_image_folder(tmp_path / "tree", tmp_path / "data", allow_partial=True)
    assert first.path.read_bytes() == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == [IMPORTED_FILE]  # no temp file left


def test_damaged_import_file_is_named(tmp_path: Path) -> None:
    from unlearn_audit.profiles.cifar.data import load_cifar10_split

    (tmp_path / IMPORTED_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ImageFolderError, match="unreadable"):
        load_cifar10_split(str(tmp_path), download=False)


def test_missing_pillow_is_a_missing_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    make_tree(tmp_path / "tree", train=1, test=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtra, match=r"unlearn-audit\[cifar\]"):
        import_image_folder(tmp_path / "tree", tmp_path / "data", allow_partial=True)
    assert cli_main(["data", "import", "cifar10", str(tmp_path / "tree"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "pillow" in capsys.readouterr().out


def test_cli_imports_into_the_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_tree(tmp_path / "tree", train=1, test=1)
    rc = cli_main(
        ["data", "import", "cifar10", str(tmp_path / "tree"), "--data-dir", str(tmp_path / "d"), "--allow-partial"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured
    assert (tmp_path / "d" / "cifar10" / IMPORTED_FILE).is_file()
    assert "train_x 10x32x32x3" in captured.out and "partial import" in captured.out
    assert "train: 10/10 images read" in captured.err  # not a terminal: plain progress lines


def test_cli_error_is_exit_2_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree", train=1, test=1)
    (tmp_path / "tree" / "test" / "Unicorn").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unlearn_audit.tools.cli",
            "data",
            "import",
            "cifar10",
            str(tmp_path / "tree"),
            "--data-dir",
            str(tmp_path / "d"),
            "--allow-partial",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc
    out = proc.stdout + proc.stderr
    assert "unknown class folder(s) Unicorn" in out and "Traceback" not in out
