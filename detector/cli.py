"""Shared plumbing for the thin command lines in ``tools/``: logging setup and user-error handling.

A tool's ``main(argv)`` is wrapped by :func:`run`: user errors (missing files, malformed input, bad
config, wrong weights) become one line on stderr and exit code 2; anything else is a real bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Callable

from .config import AT_LEAST_0, Bound, ConfigError
from .imageio import ImageReadError
from .structures import DatasetError

__all__ = ["USER_ERRORS", "UserError", "setup_logging", "run", "exit_now", "number"]


class UserError(Exception):
    """A problem with the user's input that a tool reports in one line."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ConfigError, DatasetError, ImageReadError, FileNotFoundError, PermissionError,
)


def number(kind: type = int, bound: Bound = AT_LEAST_0) -> Callable[[str], int | float]:
    """An argparse ``type=``: a finite number of ``kind`` (int: a whole number) within ``bound`` (default: 0 or
    more). Anything else is a usage error that names the option, before any model or data is loaded."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or not bound.admits(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def setup_logging(verbose: bool = False, log_file: str | None = None) -> None:
    """Configure the root logger for a tool (INFO, or DEBUG when ``verbose``), optionally to a file too."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a user error becomes ``error: <message>`` on stderr and exit code 2."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        msg = str(e) if not isinstance(e, (FileNotFoundError, PermissionError)) or not e.filename \
            else f"{e.filename}: {e.strerror}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def exit_now(code: int) -> None:
    """End the process with ``code`` once stdout, stderr and the log handlers are flushed and closed, without
    the interpreter's teardown: after ``import torch`` that alone took 0.66 s here (the modules' clean-up; a
    ``tools/detect.py`` run spent 0.9-1.3 s between ``main`` returning and the process ending, 0.1 s with this;
    README "Speed", session 23). For a tool's ``__main__`` block only, after ``main`` has written and closed
    its outputs: atexit handlers and finalizers do not run."""
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a closed pipe (e.g. ``| head``) or stream: nothing left to write
        code = code or 1
    os._exit(code)
