"""relaxed_ik settings YAML, read and checked in Python before any library call.

Upstream's ``relaxed_ik_new`` panics (and aborts the process) on a missing file, a YAML error, an
unknown link or a wrong ``starting_config`` length, so everything it will read is checked here
first. Keys read: ``urdf``, ``base_links``, ``ee_links``, ``starting_config`` (others, such as
``link_radius`` and ``obstacles``, are ignored as upstream ignores them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import yaml

from .urdf_chain import KinematicChain, load_chain

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class IKSettings:
    """A checked settings file: resolved URDF path, one chain per base/ee pair, start state."""

    settings_path: Path  # absolute
    urdf_name: str  # the `urdf` value as written
    urdf_path: Path  # absolute, exists
    chains: Tuple[KinematicChain, ...]
    starting_config: np.ndarray  # (num_dofs,)

    @property
    def num_chains(self) -> int:
        """Number of chains (base/ee pairs)."""
        return len(self.chains)

    @property
    def num_dofs(self) -> int:
        """Total moving joints over all chains (the joint vector's length)."""
        return sum(chain.dof for chain in self.chains)


def resolve_urdf_path(settings_path: Path, urdf_name: str) -> Path:
    """Where the URDF named in a settings file is: absolute, next to the settings file, or
    <cwd>/configs/urdfs/<urdf> (upstream's convention), in that order."""
    name = Path(urdf_name)
    candidates = [name] if name.is_absolute() else [settings_path.parent / name]
    candidates.append(Path.cwd() / "configs" / "urdfs" / urdf_name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"URDF {urdf_name!r} named in {str(settings_path)!r} not found (tried {tried})")


def _link_list(document: dict, key: str, path: Path) -> Tuple[str, ...]:
    value = document.get(key)
    if not isinstance(value, list) or not value:
        raise ValueError(f"settings {str(path)!r}: {key!r} must be a non-empty list of link names")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"settings {str(path)!r}: {key!r} holds an entry that is not a link name")
    return tuple(value)


def load_settings(settings_path: PathLike) -> IKSettings:
    """Read and check a settings file; FileNotFoundError or ValueError with the reason."""
    path = Path(os.fspath(settings_path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"relaxed_ik settings file {str(path)!r} does not exist")
    path = path.resolve()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"settings {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ValueError(f"settings {str(path)!r} is not a YAML mapping")
    urdf_name = document.get("urdf")
    if not isinstance(urdf_name, str) or not urdf_name:
        raise ValueError(f"settings {str(path)!r}: 'urdf' must name a URDF file")
    urdf_path = resolve_urdf_path(path, urdf_name)
    base_links = _link_list(document, "base_links", path)
    ee_links = _link_list(document, "ee_links", path)
    if len(base_links) != len(ee_links):
        raise ValueError(
            f"settings {str(path)!r}: {len(base_links)} base_links but {len(ee_links)} ee_links"
        )
    chains = tuple(load_chain(urdf_path, base, ee) for base, ee in zip(base_links, ee_links, strict=True))
    num_dofs = sum(chain.dof for chain in chains)

    start = document.get("starting_config")
    if start is None:
        starting_config = np.zeros(num_dofs)  # upstream's default
    else:
        if not isinstance(start, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in start
        ):
            raise ValueError(f"settings {str(path)!r}: 'starting_config' must be a list of numbers")
        starting_config = np.array(start, dtype=np.float64)
        if starting_config.shape != (num_dofs,):
            raise ValueError(
                f"settings {str(path)!r}: 'starting_config' has {starting_config.size} values but the "
                f"chains have {num_dofs} joints"
            )
        if not np.isfinite(starting_config).all():
            raise ValueError(f"settings {str(path)!r}: 'starting_config' holds a non-finite number")
    return IKSettings(path, urdf_name, urdf_path, chains, starting_config)
