"""What a person reads in the terminal: an error priorflow understood is one line, not a traceback.

Prefect logs a failed flow or task with its traceback, on the console of the process that ran it (the CLI
process, and each Dask worker process, whose output the terminal shows too), and the CLI then prints the same
error as one line. For a PriorflowError, which names the problem and what to do, the traceback only buries it;
for any other exception (a bug) it stays. Dask's shutdown chatter ("Worker process still alive after 4.0 seconds,
killing", a nanny closing busy worker processes on an ordinary exit) goes too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TextIO

from prefect.logging.handlers import PrefectConsoleHandler

from priorflow.errors import PriorflowError


class UnderstoodErrors(logging.Filter):
    """Drop the traceback of records whose exception is a PriorflowError; keep the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PriorflowError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_console(warnings_only: bool = False) -> None:
    """Add the filter to every console handler configured now (Prefect's included) and quiet Dask's nannies;
    `warnings_only` keeps Prefect's console to warnings and errors."""
    for handler in console_handlers():  # Prefect's, configured when it was imported (above)
        if not any(isinstance(f, UnderstoodErrors) for f in handler.filters):
            handler.addFilter(UnderstoodErrors())
        if warnings_only and isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)


def console_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    return [h for logger in loggers for h in logger.handlers if isinstance(h, logging.StreamHandler)]


@contextlib.contextmanager
def above(stream: TextIO) -> Iterator[None]:
    """Prefect's console lines written to `stream` (a live progress display's proxy, which prints them above the
    display) instead of the terminal itself, while the context lasts."""
    handlers = [h for h in console_handlers() if isinstance(h, PrefectConsoleHandler)]
    saved = [(h.stream, h.console.file) for h in handlers]
    for handler in handlers:
        handler.stream, handler.console.file = stream, stream
    try:
        yield
    finally:
        for handler, (old_stream, old_file) in zip(handlers, saved):
            handler.stream, handler.console.file = old_stream, old_file
