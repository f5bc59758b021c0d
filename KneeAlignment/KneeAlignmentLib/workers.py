"""Child processes that never outlive the process that started them.

A data-loader worker blocked on a full pipe (a decoded radiograph is megabytes; the
pipe holds 64 KiB) does not notice its parent's death, and after a ``kill -9`` of the
parent it would stay alive, re-parented to PID 1, holding its memory. On Linux each
worker asks the kernel to send it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``) and
exits at once if the parent is already gone. Elsewhere only torch's own watchdog applies.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["die_with_parent", "worker_init"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> bool:
    """In a child process: be killed when the parent ``parent_pid`` dies.

    Returns whether the kernel will do it (Linux); exits at once (status 1) if the parent
    died before this call.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    return armed


def _init(parent_pid: int, worker_id: int) -> None:
    die_with_parent(parent_pid)


def worker_init() -> Callable[[int], None]:
    """A ``worker_init_fn`` for ``torch.utils.data.DataLoader``, made in the parent (picklable)."""
    return functools.partial(_init, os.getpid())
