"""The wheel carries everything ``qtt tune`` needs, the meta-learned priors included."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _listed_packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_of_qtt_cli_is_listed_in_pyproject():
    found = sorted(
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "qtt_cli").rglob("__init__.py")
    )
    listed = _listed_packages()
    assert [p for p in found if p not in listed] == []  # a new package must be added to the list


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build a wheel")
def test_an_installed_wheel_finds_the_shipped_priors(tmp_path):
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("qtt_cli", "metadata"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "qtt_cli/priors/quicktune/surrogate.safetensors" in names
    assert "qtt_cli/priors/quicktune/surrogate.json" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("QTT_PRIORS_DIR", None)
    probe = (
        "import qtt_cli.surrogate.priors as p; "
        "print(p.PRIORS_DIR); print(p.load_priors(['cat:model:dla46x_c']) is not None)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    priors_dir, loaded = out.stdout.split()
    assert Path(priors_dir) == site / "qtt_cli" / "priors" / "quicktune" and loaded == "True"
