"""The user's source line of a jaxpr equation, the same in every install layout.

JAX picks the "user frame" of an equation by excluding its own folder and the standard library.
Whether a framework (Keras, Flax, ...) then counts as user code depends on where it is installed:
under a system Python its site-packages sits inside the stdlib folder and is excluded, in a venv
it is not. We choose the frame ourselves, skipping every framework a model is built with, and
print the file relative to the user's project (or as a module path), never as an absolute path of
the converting machine: generated code is reproducible and leaks nothing.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
import sysconfig

UNKNOWN = "unknown source line"

# Libraries whose frames are never the user's code: a model written with them is reported at the
# user's line that called into them.
FRAMEWORKS = ("jax", "jaxlib", "jaxpr2sofie", "keras", "flax", "equinox", "haiku", "optax", "numpy",
              "ml_dtypes", "opt_einsum", "treescope", "chex", "orbax", "tensorflow", "tf_keras", "h5py")


def _dirs(paths) -> tuple:
    return tuple(sorted({os.path.realpath(p).rstrip(os.sep) + os.sep for p in paths if p}))


@functools.lru_cache(maxsize=1)
def _framework_dirs() -> tuple:
    found = []
    for name in FRAMEWORKS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        found += list(spec.submodule_search_locations or []) if spec else []
    return _dirs(found)


@functools.lru_cache(maxsize=1)
def _stdlib_dirs() -> tuple:
    return _dirs(sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib"))


@functools.lru_cache(maxsize=4096)
def _is_user_file(path: str) -> bool:
    if path.startswith("<"):   # <frozen ...>, <string>
        return False
    real = os.path.realpath(path)
    if real.startswith(_framework_dirs()):
        return False
    # Under a system Python, site-packages lies inside the stdlib folder: only the framework
    # folders above decide for installed packages (an installed user package is user code).
    installed = any(part in ("site-packages", "dist-packages") for part in real.split(os.sep))
    return installed or not real.startswith(_stdlib_dirs())


@functools.lru_cache(maxsize=4096)
def display_path(path: str) -> str:
    """`tests/test_keras.py` for a file under the working directory, else the path below the
    sys.path entry that holds it (`mypkg/models.py`), else the file name."""
    real = os.path.realpath(path)
    cwd = os.path.realpath(os.getcwd()) + os.sep
    if real.startswith(cwd):
        return real[len(cwd):]
    roots = sorted((os.path.realpath(p) + os.sep for p in sys.path if p), key=len, reverse=True)
    for r in roots:
        if real.startswith(r):
            return real[len(r):]
    return os.path.basename(real)


def user_line(source_info) -> str:
    """`tests/test_keras.py:382 (SortLayer.call)` for an equation's source_info, or UNKNOWN."""
    tb = getattr(source_info, "traceback", None)
    if tb is None:
        return UNKNOWN
    try:
        frames = tb.frames
    except Exception:   # pragma: no cover - a jaxlib without Traceback.frames
        return UNKNOWN
    for f in frames:
        if _is_user_file(f.file_name):
            return f"{display_path(f.file_name)}:{f.line_num} ({f.function_name})"
    return UNKNOWN


def exception_line(exc: BaseException) -> str:
    """The user's line an exception raised through (the innermost user frame of its traceback)."""
    import traceback
    found = UNKNOWN
    for f in traceback.extract_tb(exc.__traceback__):
        if _is_user_file(f.filename):
            found = f"{display_path(f.filename)}:{f.lineno} ({f.name})"
    return found
