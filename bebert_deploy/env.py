"""What ran where: package versions and machine facts recorded in checkpoints and benchmark JSON."""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def package_versions(names) -> dict[str, str]:
    """{name: installed version} for the installed ones among ``names``, plus python and machine."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out
