"""Decode workers die with the process that started them (issue 16, defect 2).

A child process opens the batch's reader (``batch._reader``, as ``run_batch`` does) on
images too large for a pipe's buffer, takes one batch and waits; it is then killed with
SIGKILL. Without a parent-death signal its two workers stayed alive, blocked on the pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from KneeAlignmentLib.datasets import write_image16

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")

CHILD = textwrap.dedent("""
    import sys, time
    from KneeAlignmentLib.batch import BatchOptions, _reader, discover_inputs
    loader = _reader(discover_inputs([sys.argv[1]]), BatchOptions(workers=2, batch_size=1))
    batches = iter(loader)
    next(batches)
    print("ready", flush=True)
    time.sleep(120)
""")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_when_the_main_process_is_killed(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(8):  # 700 x 700 float32: 2 MB per image, far more than a pipe holds
        write_image16(tmp_path / f"{i}.png", rng.integers(0, 65535, (700, 700), dtype=np.uint16))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env=env)
    workers = []
    try:
        assert child.stdout.readline().strip() == "ready"
        workers = _children(child.pid)
        assert len(workers) >= 2, workers  # the two decode workers (torch may add none of its own)
        time.sleep(1.0)  # let the workers fill the pipe
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 15.0  # torch's own watchdog would give up after 5 s, if it could
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        survivors = [pid for pid in workers if _alive(pid)]
        assert not survivors, f"workers {survivors} outlived their killed parent"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()


def test_a_child_whose_parent_is_already_gone_exits():
    code = ("import os; from KneeAlignmentLib.workers import die_with_parent; "
            "die_with_parent(os.getppid() + 10**7); print('still here')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "still here" not in done.stdout


def test_die_with_parent_arms_the_signal_for_the_current_parent():
    code = "import os; from KneeAlignmentLib.workers import die_with_parent; print(die_with_parent(os.getppid()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True"
