"""Python bindings for librelaxed_ik_lib.so (relaxed_ik_core's ranged-ik C ABI).

``RelaxedIK`` loads either the library built with this package (``make native``) or the robot's
upstream build (``RELAXED_IK_LIB=/path/to/librelaxed_ik_lib.so``) and makes both safe to call.
"""

from __future__ import annotations

from .check import SolutionCheck
from .library import BUNDLED_LIBRARY, LIBRARY_ENV, RelaxedIKLibraryError, load_library, resolve_library_path
from .relaxed_ik import RelaxedIK, RelaxedIKError
from .settings import IKSettings, load_settings
from .urdf_chain import ChainJoint, KinematicChain, load_chain, parse_chain

__all__ = [
    "BUNDLED_LIBRARY",
    "LIBRARY_ENV",
    "ChainJoint",
    "IKSettings",
    "KinematicChain",
    "RelaxedIK",
    "RelaxedIKError",
    "RelaxedIKLibraryError",
    "SolutionCheck",
    "load_chain",
    "load_library",
    "load_settings",
    "parse_chain",
    "resolve_library_path",
]
