"""Files written atomically: a crash mid-write never leaves a truncated file. Imports no torch."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` with ``write(file)`` to a temporary file beside it, then rename it over ``path``.

    The parent folders are made. The file gets the permissions a plain ``open`` would give it
    (``0o666`` less the umask), not the owner-only ones of a ``tempfile.mkstemp`` file. If
    ``write`` raises (or the process is interrupted), ``path`` is left as it was and the
    temporary file is removed.

    Args:
        path: the file written.
        write: writes the content to the binary file it is given.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out" / "notes.txt"
        >>> atomic_write(path, lambda file: file.write(b"done"))
        >>> path.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
