"""The failures a run names in one line, under one base, and how a flow ends on one of them.

- :class:`ConfigError`: bad or missing configuration, refused before any call (CLI exit 2).
- :class:`StageError`: a stage failed as a whole; the run stops and reports what landed.
- :class:`RunFailed`: a run ended with failures; subclasses carry its report.
- :class:`WindowLockTimeout`: the window stayed locked by a live run past the wait timeout.

Per-trace failures (a skip, a TLM error for one item) are not exceptions of this module: they
are outcomes with a reason (``tasks.failures``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar, cast

from tasks.retry import describe

P = ParamSpec("P")
R = TypeVar("R")


class TrustEvalError(Exception):
    """A failure this project explains in one line (its message says what to do)."""


class ConfigError(TrustEvalError, ValueError):
    """Bad or missing configuration; the message says what to set."""


class StageError(TrustEvalError, RuntimeError):
    """A stage failed as a whole (the run stops and reports what landed)."""


class RunFailed(TrustEvalError, RuntimeError):
    """A run ended with failures; a subclass carries its report (what did and did not land)."""


class WindowLockTimeout(RunFailed):
    """The window stayed locked by another (live) run for longer than the wait timeout."""


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@contextmanager
def stage(what: str) -> Iterator[None]:
    """A stage's failure as one line saying which stage; a failure already named, as it is."""
    try:
        yield
    except TrustEvalError:
        raise
    except Exception as err:
        raise StageError(f"{what} failed: {describe(err)}") from err


class NoTracebackForOneLiners(logging.Filter):
    """Drops the tracebacks a deployment run's engine logs after the run (``Engine execution
    exited with unexpected exception``, prefect/flow_engine.py and prefect/engine.py) when the
    exception is one of ours: its one line is the run's state message and was logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, TrustEvalError)


ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.engine")  # flow_run_logger(), the engine's
ONE_LINERS = NoTracebackForOneLiners()


def fails_in_one_line(fn: Callable[P, R]) -> Callable[P, R]:
    """A refused setting or a failed run ends the flow run Failed with the one-line reason as
    its state message (shown by the run page and ``--watch``), without a traceback; a caller
    of the flow function still gets the exception raised."""
    from prefect import get_run_logger
    from prefect.states import Failed

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TrustEvalError as err:
            reason = one_line(err)
            get_run_logger().error("%s", reason)
            for name in ENGINE_LOGGERS:  # addFilter keeps a filter once
                logging.getLogger(name).addFilter(ONE_LINERS)
            # Prefect takes a returned state as the run's final state and raises its data
            return cast(R, Failed(message=reason[:2000], data=err))

    # resolved here: Prefect would read the parameter types in this module otherwise
    run.__annotations__ = typing.get_type_hints(fn)
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run
