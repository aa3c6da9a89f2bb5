"""Shared plumbing for the thin command lines in ``tools/``: logging setup and user-error handling.

A tool's ``main(argv)`` is wrapped by :func:`run`: user errors (missing files, malformed input, bad
config, wrong weights) become one line on stderr and exit code 2; anything else is a real bug and
keeps its traceback.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable

from .config import ConfigError
from .imageio import ImageReadError
from .structures import DatasetError

__all__ = ["USER_ERRORS", "UserError", "setup_logging", "run"]


class UserError(Exception):
    """A problem with the user's input that a tool reports in one line."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError, ConfigError, DatasetError, ImageReadError, FileNotFoundError, PermissionError,
)


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
