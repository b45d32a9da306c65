"""A non-editable install (`pip install .`, a wheel) carries everything the package reads at run time: the
configs under mini_bert/configs (so `--config debugging` works from any install) and every other package data
file, each listed in pyproject.toml's package-data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mini_bert"


def test_the_wheel_holds_every_file_the_package_reads(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "runs",
                                                                "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert any(p.suffix == ".yaml" for p in data)
    missing = [p.relative_to(REPO).as_posix() for p in data if p.relative_to(REPO).as_posix() not in names]
    assert not missing, f"package files the wheel does not carry (add them to package-data): {missing}"
