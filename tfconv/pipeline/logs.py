"""Logging of the workflow's steps: everything a step prints goes to its log file and to stderr."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator, Optional


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()

    def flush(self):
        for st in self.streams:
            st.flush()

    def fileno(self):  # libraries that need a real descriptor (faulthandler) get the log file's
        return self.streams[0].fileno()

    def isatty(self):
        return False


@contextlib.contextmanager
def task_log(path: Optional[str]) -> Iterator[None]:
    """Send everything the step prints to its log file, and to stderr so progress shows on screen."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = _Tee(fh, old_err)
        sys.stderr = _Tee(fh, old_err)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err


def log(msg: str) -> None:
    """One timestamped line of progress (to the step's log and the screen under `task_log`)."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)
