"""Atomic file output: write to a temporary sibling, then rename, so an interrupted run never leaves a
half-written file or folder behind. The result gets the mode a plain ``open(path, "w")`` / ``mkdir`` would give
(0644 / 0755 under the usual umask 022), not the owner-only mode of mkstemp / mkdtemp."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask. Read from /proc on Linux, because os.umask can only be read by setting it, which
    briefly changes it for every thread."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, is_dir: bool = False):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        # mkstemp / mkdtemp create 0600 / 0700: give the output what the umask allows, as torch.save / onnx.save do.
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~current_umask())
        yield tmp
        if is_dir and path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
