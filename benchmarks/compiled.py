"""The compiled build of the library for the benchmark's `compiled` server.

`build()` copies the package, `setup.py` and `pyproject.toml` into
`build/compiled/<key>/` and runs the project's own optional build there
(`USOCKET_ASYNCIO_COMPILE=1 python setup.py build_ext --inplace`, i.e. mypyc, and Cython
for the direct send path's helper). The key hashes the sources, the Python and the mypy
version, so a build is made once and reused
until the code changes. A server started with that directory as its working directory
imports the compiled package (`python -m` puts the working directory first on the path).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PACKAGE = "usocket_asyncio"


class BuildError(RuntimeError):
    """The compiled build could not be made (no mypy, no C compiler, or a build error)."""


def _sources() -> list[Path]:
    pkg = ROOT / PACKAGE
    files = [*sorted(pkg.glob("*.py")), *sorted(pkg.glob("*.pyx")), *sorted(pkg.glob("*.pyi"))]
    files.append(pkg / "py.typed")
    return [*files, ROOT / "setup.py", ROOT / "pyproject.toml"]


def build_key() -> str:
    """A hash of everything the compiled build depends on."""
    try:
        import mypy.version

        mypy_version = mypy.version.__version__
        from importlib.metadata import version

        mypy_version += " Cython " + version("Cython")
    except ImportError as e:
        raise BuildError("the compiled build needs mypy and Cython: pip install -e '.[dev]'") from e
    h = hashlib.sha256()
    h.update(f"{platform.python_version()} {sys.implementation.cache_tag} {mypy_version}".encode())
    for path in _sources():
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def is_compiled_dir(directory: Path) -> bool:
    """Does `directory` hold a compiled build of the package (its engine and the direct
    send path's helper as extensions)?"""
    pkg = directory / PACKAGE
    return any(pkg.glob("_stream.*.so")) and any(pkg.glob("_fastsend.*.so"))


def build() -> Path:
    """The directory of a compiled build of the current sources (made if need be).

    Raises:
        BuildError: mypy is missing, or the build failed (the tail of its output says why).
    """
    key = build_key()
    # outside every Python package: mypy would name the modules after an enclosing one
    base = ROOT / "build" / "compiled"
    target = base / key
    if (target / ".built").exists() and is_compiled_dir(target):
        return target
    shutil.rmtree(target, ignore_errors=True)
    (target / PACKAGE).mkdir(parents=True)
    for path in _sources():
        shutil.copy2(path, target / path.relative_to(ROOT))
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=target,
        env={**os.environ, "USOCKET_ASYNCIO_COMPILE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not is_compiled_dir(target):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BuildError("the mypyc build failed:\n" + "\n".join(tail))
    (target / ".built").write_text(key + "\n")
    for old in base.iterdir():  # keep only the current build
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def build_floor(target: Path) -> None:
    """Build the floor (benchmarks/floor.py) with mypyc as the top-level module
    `bench_floor` in the compiled build's directory `target` (again when floor.py
    changed).

    Raises:
        BuildError: the mypyc build failed (the tail of its output says why).
    """
    src, copy = HERE / "floor.py", target / "bench_floor.py"
    built = any(target.glob("bench_floor.*.so")) and copy.exists()
    if built and copy.read_bytes() == src.read_bytes():
        return  # built from this floor.py
    for old in target.glob("bench_floor.*.so"):
        old.unlink()
    shutil.copy2(src, copy)
    code = (
        "from mypyc.build import mypycify; from setuptools import setup; "
        "setup(name='bench_floor', ext_modules=mypycify(['bench_floor.py'], opt_level='3'), "
        "script_args=['-q', 'build_ext', '--inplace'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=target, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not any(target.glob("bench_floor.*.so")):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise BuildError("the floor's mypyc build failed:\n" + "\n".join(tail))


if __name__ == "__main__":
    try:
        print(build())
    except BuildError as e:
        sys.exit(str(e))
