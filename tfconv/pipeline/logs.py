"""Logging of the workflow's steps and of the command line: stdlib `logging`, logger ``tfconv``.

    with task_log(snakemake.log[0]):     # a step: its log file and the screen (stderr), timestamped
        log("[plot] ...")                # one line at INFO
    setup_logging(verbosity)             # the command line: -q (warnings only) / -v (debug)

The level of the workflow's steps is ``TFCONV_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; default INFO),
the command line's ``-v`` / ``-q``.  Under `task_log` the handlers sit on the root logger, so the log
file also gets the records of the libraries that log (Ray, Dask's distributed, Snakemake's scripts) and
Python's warnings; an error that ends the step is written with its traceback before it propagates.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

LOGGER = logging.getLogger("tfconv")
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
DATEFMT = "%H:%M:%S"
#: environment variable with the level of the workflow's steps
LEVEL_ENV = "TFCONV_LOG_LEVEL"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def level_from_env(default: int = logging.INFO) -> int:
    """The level named by ``TFCONV_LOG_LEVEL`` (`default` when unset); a bad name is refused, naming the
    allowed ones."""
    name = os.environ.get(LEVEL_ENV, "").strip().upper()
    if not name:
        return default
    if name not in _LEVELS:
        raise ValueError(f"{LEVEL_ENV}={name!r} is not a log level; allowed: {', '.join(_LEVELS)}")
    return getattr(logging, name)


def level_of(verbosity: int) -> int:
    """-q (verbosity -1): WARNING; none (0): INFO; -v (1 or more): DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO


def setup_logging(verbosity: int = 0, stream=None) -> None:
    """The command line's logging: messages to stderr (plain, no timestamp) at the level -v / -q ask for."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level_of(verbosity))
    LOGGER.propagate = False


@contextlib.contextmanager
def task_log(path: Optional[str], level: Optional[int] = None) -> Iterator[None]:
    """Log the step to its log file (appended) and to stderr, timestamped, at `level` (default: the
    environment's, `level_from_env`); an exception that ends the step is logged with its traceback."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    level = level_from_env() if level is None else level
    fmt = logging.Formatter(FORMAT, DATEFMT)
    handlers = [logging.FileHandler(path, mode="a", encoding="utf-8"), logging.StreamHandler(sys.stderr)]
    root = logging.getLogger()
    old = (root.level, LOGGER.level, LOGGER.propagate, list(LOGGER.handlers))
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(level)
        root.addHandler(h)
    root.setLevel(level)
    LOGGER.handlers[:] = []
    LOGGER.setLevel(level)
    LOGGER.propagate = True
    logging.captureWarnings(True)
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, SystemExit) or exc.code not in (0, None):
            LOGGER.error("the step failed: %s", exc, exc_info=not isinstance(exc, SystemExit))
        raise
    finally:
        logging.captureWarnings(False)
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old[0])
        LOGGER.setLevel(old[1])
        LOGGER.propagate = old[2]
        LOGGER.handlers[:] = old[3]


def log(msg: str, level: int = logging.INFO) -> None:
    """One line of progress (to the step's log file and the screen under `task_log`)."""
    if not LOGGER.hasHandlers():  # outside task_log and the command line: still seen
        setup_logging(0)
    LOGGER.log(level, msg)
