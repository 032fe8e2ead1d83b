"""What the scripts share: a user error (bad option, data, folder in use, Hub unreachable, diverged run) ends the
program with one clear line and exit status 2 instead of a traceback; ``GPT1_HF_TRACEBACK=1`` shows the traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "run_main"]


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpointing import NonFiniteError, RunMismatchError
    from .durable import DiskWriteError, RunInUseError

    errors: list[type[BaseException]] = [ValueError, FileNotFoundError, FileExistsError, RunInUseError,
                                         NonFiniteError, RunMismatchError, DiskWriteError]
    try:
        from .hub import HubAccessError

        errors.append(HubAccessError)
    except ImportError:  # an older hub module
        pass
    return tuple(errors)


USER_ERRORS = _user_errors


def run_main(main: Callable[[], int]) -> int:
    """``main()``, with user errors reported as ``error: <message>`` on stderr (exit status 2)."""
    try:
        return main()
    except _user_errors() as e:
        if os.environ.get("GPT1_HF_TRACEBACK", "").lower() in ("1", "true", "yes"):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
