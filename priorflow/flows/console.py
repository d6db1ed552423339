"""What a person reads in the terminal: an error priorflow understood is one line, not a traceback.

Prefect logs a failed flow or task with its traceback, on the console of the process that ran it (the CLI
process, and each Dask worker process, whose output the terminal shows too), and the CLI then prints the same
error as one line. For a PriorflowError, which names the problem and what to do, the traceback only buries it;
for any other exception (a bug) it stays. Dask's shutdown chatter ("Worker process still alive after 4.0 seconds,
killing", a nanny closing busy worker processes on an ordinary exit) goes too.
"""

from __future__ import annotations

import logging

from priorflow.errors import PriorflowError


class UnderstoodErrors(logging.Filter):
    """Drop the traceback of records whose exception is a PriorflowError; keep the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PriorflowError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_console() -> None:
    """Add the filter to every console handler configured now (Prefect's included) and quiet Dask's nannies."""
    import prefect  # noqa: F401 - configures Prefect's logging, whose console handlers get the filter

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not any(isinstance(f, UnderstoodErrors) for f in handler.filters):
                handler.addFilter(UnderstoodErrors())
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
