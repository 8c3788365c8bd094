"""Shared pytest fixtures. Keep each fixture small, documented, and as narrow in scope as it can be."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script(relative: str) -> ModuleType:
    """Import a script of the repo (not a package module) by path, once."""
    name = "_qtt_" + Path(relative).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def make_dataset() -> ModuleType:
    """``examples/make_dataset.py`` as a module (``load_source``, ``write_image_folder``, ...)."""
    return _load_script("examples/make_dataset.py")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory, make_dataset) -> Path:
    """scikit-learn digits as PNGs, flat layout ``<class>/*.png``, 20 images per class (200 in all).

    Session-scoped and shared: tests must not modify it (copy it first, e.g. with ``shutil.copytree``).
    """
    out = tmp_path_factory.mktemp("digits") / "digits"
    make_dataset.make_dataset("digits", out, layout="flat", per_class=20, seed=0)
    return out


@pytest.fixture(scope="session")
def digits_split_dir(tmp_path_factory, make_dataset) -> Path:
    """scikit-learn digits as PNGs, ``train|val|test/<class>/*.png``, 20 per class (12/4/4). Read-only."""
    out = tmp_path_factory.mktemp("digits_split") / "digits"
    make_dataset.make_dataset("digits", out, layout="split", per_class=20, seed=0)
    return out


@pytest.fixture
def deterministic():
    """Deterministic torch kernels for the duration of a test (bit-exact continuation checks)."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="session")
def digits_cache(digits_dir, tmp_path_factory):
    """``digits_dir`` decoded once at 32 px: 160 train / 40 val images of 10 classes. Read-only."""
    from qtt_cli.data import build_cache, discover

    return build_cache(discover(digits_dir, val_fraction=0.2, seed=0), tmp_path_factory.mktemp("cache"), 32)


@pytest.fixture(scope="session")
def cheap_space() -> Path:
    """``tests/cheap-space.yaml`` (see ``tune_helpers.py``)."""
    return REPO / "tests" / "cheap-space.yaml"


@pytest.fixture(scope="session")
def one_hub() -> Path:
    """``tests/one-model-hub.yaml``: mobilenetv3_small_050 at 32 px."""
    return REPO / "tests" / "one-model-hub.yaml"


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs (a disk that can be filled for real); skipped where mounting needs root and we lack it."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    yield mount
    # Lazily: a CliRunner result keeps the failed run's traceback alive, and with it the run's memory-mapped
    # cache and the failed checkpoint writer's file, so a plain umount finds the file system busy and each
    # test run would leave a mount behind.
    subprocess.run(["umount", "--lazy", str(mount)], check=False)
