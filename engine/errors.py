"""Errors of bad input, and the entry of every command that reports them as one line.

``UsageError`` is the base of what a user fixes: ``DataError`` for unusable videos, lists,
labels, checkpoints or batch sizes, ``MissingFileError`` for a named input file that is not
there. Both keep the built-in type they refine (ValueError, FileNotFoundError), so callers that
catch those still do. data/ and pipelines/ cannot import engine (design.md); where the engine
hands them the user's files it re-raises their ValueError / FileNotFoundError as these
(``raise_as_data_errors``).

``run_command(main, *args)`` runs a runner's main: a UsageError or a config error
(engine.config.ConfigError) prints ``error: <message>`` on stderr (rank 0 only under torchrun)
and exits with EXIT_USAGE; a non-finite loss (engine.checkpoint.NonFiniteLoss: the run
stopped, nothing after it saved) likewise with EXIT_RUN_FAILED. Any other exception is a bug
and keeps its traceback; ``FAME_DEBUG=1`` (DEBUG_ENV) shows the traceback of these too. This
module imports neither torch nor the data code: the light commands (prepare, report, sweep,
gpu_check) start without them.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from engine.config import ConfigError

DEBUG_ENV = "FAME_DEBUG"        # set to 1: bad-input errors end in their traceback too
DEBUG_OFF = ("", "0")
EXIT_USAGE = 2                  # bad input or config, as argparse exits on a bad command line
EXIT_RUN_FAILED = 1             # the run itself stopped (a non-finite loss)
RANK_ENV = "RANK"               # torchrun's global rank of the process
RUN_STOPPED = ("engine.checkpoint", "NonFiniteLoss")   # module and name of the loss watch's stop

Result = TypeVar("Result")


class UsageError(Exception):
    """Input the user can fix (a file, a list, a video, a setting); the message says what to do."""


class DataError(UsageError, ValueError):
    """Data that cannot be used as given: unusable videos, bad lists or labels, a bad checkpoint."""


class MissingFileError(UsageError, FileNotFoundError):
    """A named input file (a list, a pretrained backbone, a checkpoint) that does not exist."""


@contextlib.contextmanager
def raise_as_data_errors(prefix: str = "") -> Iterator[None]:
    """Re-raise the block's FileNotFoundError / ValueError as MissingFileError / DataError, its
    message after ``prefix``: for calls into data/ and pipelines/ that read the user's files."""
    try:
        yield
    except UsageError:
        raise
    except FileNotFoundError as error:
        raise MissingFileError(prefix + str(error)) from error
    except ValueError as error:
        raise DataError(prefix + str(error)) from error


def run_stopped_errors() -> tuple[type[BaseException], ...]:
    """NonFiniteLoss when engine.checkpoint is loaded, else nothing (then nothing raised it):
    looked up, not imported, as importing it would import torch."""
    module, name = RUN_STOPPED
    return (getattr(sys.modules[module], name),) if module in sys.modules else ()


def is_first_process() -> bool:
    """Rank 0 of a torchrun launch, or a process launched alone."""
    return os.environ.get(RANK_ENV, "0") == "0"


def exit_with_error(error: BaseException, code: int) -> None:
    """Print ``error: <message>`` on stderr (rank 0 only) and exit with ``code``."""
    if is_first_process():
        print(f"error: {error} ({DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
    sys.exit(code)


def run_command(main: Callable[..., Result], *args: Any) -> Result:
    """``main(*args)``, bad input reported in one line and a stopped run likewise (see the module
    docstring); every runner's ``__main__`` block calls its main through this."""
    if os.environ.get(DEBUG_ENV, "0") not in DEBUG_OFF:
        return main(*args)
    try:
        return main(*args)
    except (UsageError, ConfigError) as error:
        exit_with_error(error, EXIT_USAGE)
    except run_stopped_errors() as error:
        exit_with_error(error, EXIT_RUN_FAILED)
