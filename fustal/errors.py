"""User-facing errors: one line naming the file, video or key and what is wrong."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class FustalError(Exception):
    """Bad input or configuration. Entry points print ``error: <message>`` and exit 2."""


class Interrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM) while Lightning was training or predicting.
    Entry points print ``interrupted: <message>`` and exit 130; nothing unfinished was committed,
    so the same command resumes."""


def debug_enabled() -> bool:
    """Full tracebacks are shown when ``HYDRA_FULL_ERROR=1`` or ``FUSTAL_DEBUG=1``."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or os.environ.get("FUSTAL_DEBUG") == "1"


def exit_on_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an entry point so that a :class:`FustalError` becomes a one-line message and exit 2."""

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except FustalError as err:
            if debug_enabled():
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except (Interrupted, KeyboardInterrupt) as err:
            if debug_enabled():
                raise
            reason = str(err) or "stopped; run the same command to resume"
            print(f"interrupted: {reason}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except OSError as err:
            if debug_enabled():
                raise
            where = f": {err.filename}" if getattr(err, "filename", None) else ""
            print(f"error: {err.strerror or err}{where}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper
