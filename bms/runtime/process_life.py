"""Child processes that end with their parent. A parent killed by SIGKILL (a CI runner's
timeout, a test's `proc.kill()`, the OOM killer) runs no clean-up of its own: the children
it started would go on running their work, orphaned, unless the kernel tells them."""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def end_with_parent(parent_pid: int, signum: int) -> bool:
    """Asks Linux to send `signum` to this process when its parent ends. False when the
    parent, `parent_pid` before the fork, has already gone (it died before the request,
    which then never comes): the caller ends. Off Linux a no-op that returns True.

    Linux's parent is the thread that forked this process: the signal comes when that
    thread ends, so fork from one that lasts as long as its process (the main thread)."""
    if not sys.platform.startswith("linux"):
        return True
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signum))
    return os.getppid() == parent_pid
