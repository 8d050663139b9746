"""Finding and loading a librelaxed_ik_lib.so, with the exact ctypes signatures of its C ABI.

Lookup order: an explicit path, then the ``RELAXED_IK_LIB`` environment variable, then the copy
that ``make native`` builds into this package (``relaxed_ik_bindings/lib/librelaxed_ik_lib.so``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

LIBRARY_ENV = "RELAXED_IK_LIB"
BUNDLED_LIBRARY = Path(__file__).resolve().parent / "lib" / "librelaxed_ik_lib.so"

_double_p = ctypes.POINTER(ctypes.c_double)


class Opt(ctypes.Structure):
    """The ``{const double *data; int length;}`` every solve returns by value."""

    _fields_ = [("data", _double_p), ("length", ctypes.c_int)]


# name -> (restype, argtypes); the handle is an opaque pointer.
SIGNATURES: Dict[str, Tuple[object, Tuple[object, ...]]] = {
    "relaxed_ik_new": (ctypes.c_void_p, (ctypes.c_char_p,)),
    "relaxed_ik_free": (None, (ctypes.c_void_p,)),
    "reset": (None, (ctypes.c_void_p, _double_p, ctypes.c_int)),
    "solve_position": (
        Opt,
        (ctypes.c_void_p, _double_p, ctypes.c_int, _double_p, ctypes.c_int, _double_p, ctypes.c_int),
    ),
    "solve_velocity": (
        Opt,
        (ctypes.c_void_p, _double_p, ctypes.c_int, _double_p, ctypes.c_int, _double_p, ctypes.c_int),
    ),
    "get_ee_positions": (Opt, (ctypes.c_void_p,)),
    "solve": (
        Opt,
        (ctypes.c_void_p, _double_p, ctypes.c_int, _double_p, ctypes.c_int, _double_p, ctypes.c_int),
    ),
}
# Every symbol the wrapper calls must exist at load time; the legacy `solve` (an alias of
# solve_position that the wrapper never calls) is typed when present.
REQUIRED_SYMBOLS = ("relaxed_ik_new", "relaxed_ik_free", "solve_position", "solve_velocity", "reset",
                    "get_ee_positions")


class RelaxedIKLibraryError(OSError):
    """The library cannot be found or loaded, or lacks a symbol of the ABI."""


class RelaxedIKLibrary:
    """A loaded library: its path and the ABI functions with argtypes/restype set."""

    def __init__(self, path: Path, cdll: ctypes.CDLL, functions: Dict[str, object]) -> None:
        self.path = path
        self._cdll = cdll  # keeps the library mapped while functions are referenced
        self._functions = functions

    def has(self, name: str) -> bool:
        """Whether the library exports the ABI function `name`."""
        return name in self._functions

    def function(self, name: str):
        """The ctypes function `name`; RelaxedIKLibraryError naming it when absent."""
        try:
            return self._functions[name]
        except KeyError:
            raise RelaxedIKLibraryError(f"{self.path} does not export the relaxed_ik symbol {name!r}") from None

    @property
    def is_bundled(self) -> bool:
        """Whether this is the library built with this package (our solver, not upstream's)."""
        try:
            return self.path.resolve() == BUNDLED_LIBRARY.resolve()
        except OSError:
            return False


def resolve_library_path(lib_path: Optional[Union[str, "os.PathLike[str]"]] = None) -> Path:
    """The library to load: lib_path, else $RELAXED_IK_LIB, else the bundled build."""
    if lib_path is not None:
        source, path = "lib_path", Path(os.fspath(lib_path))
    elif os.environ.get(LIBRARY_ENV):
        source, path = LIBRARY_ENV, Path(os.environ[LIBRARY_ENV])
    else:
        source, path = "bundled library", BUNDLED_LIBRARY
    path = path.expanduser()
    if not path.is_file():
        hint = " (run `make native` to build it)" if source == "bundled library" else ""
        raise RelaxedIKLibraryError(f"relaxed_ik library from {source} not found: {path}{hint}")
    return path.resolve()


_cache: Dict[Path, RelaxedIKLibrary] = {}
_cache_lock = threading.Lock()


def load_library(lib_path: Optional[Union[str, "os.PathLike[str]"]] = None) -> RelaxedIKLibrary:
    """Load (once per path) and type the library; RelaxedIKLibraryError with the reason."""
    path = resolve_library_path(lib_path)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None:
            return cached
        try:
            cdll = ctypes.CDLL(str(path))
        except OSError as error:
            raise RelaxedIKLibraryError(f"cannot load relaxed_ik library {path}: {error}") from None
        functions: Dict[str, object] = {}
        for name, (restype, argtypes) in SIGNATURES.items():
            try:
                function = getattr(cdll, name)
            except AttributeError:
                continue
            function.restype = restype
            function.argtypes = list(argtypes)
            functions[name] = function
        missing = [name for name in REQUIRED_SYMBOLS if name not in functions]
        if missing:
            raise RelaxedIKLibraryError(
                f"{path} is not a relaxed_ik library: missing symbol(s) {', '.join(repr(m) for m in missing)}"
            )
        library = RelaxedIKLibrary(path, cdll, functions)
        _cache[path] = library
        return library
