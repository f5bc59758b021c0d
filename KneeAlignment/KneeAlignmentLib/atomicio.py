"""Atomic file output: a result file is either complete or absent, never half-written.

Everything a batch run writes goes through here, so an interrupted run (Ctrl-C,
kill -9, a full disk) leaves no truncated file for a later ``--resume`` to trust.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path``.

    The temporary name keeps the suffix (writers such as matplotlib pick the format from
    it) and starts with a dot (hidden from folder scans). On error it is removed and the
    previous ``path``, if any, is left untouched.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(6)}{path.suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as stream:  # on disk before it takes the final name
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write text (UTF-8, LF) or bytes to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_output(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8", newline="\n")
        else:
            temporary.write_bytes(data)
    return path
