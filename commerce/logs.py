"""Log lines that say what they are about.

Every process writes JSON lines (Ray's ``LoggingConfig`` for the actors, Serve's for the ingress), and
every record made while a correlation id is bound carries it as ``correlation_id``: the order a request
or a saga step concerns (DESIGN.md: the correlation id is the order). Serve adds ``request_id`` to the
lines its replicas write during a request; it is the id a problem answer's ``instance`` names.

The id is kept in a holder bound per request or per saga: a route that learns the order only when it
has placed it fills the holder in, and the lines written after that carry it. Pass it by ``bind`` or
``correlate``, never as ``extra={"correlation_id": ...}``: logging refuses an extra field the record has.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import threading
from typing import Any

import ray

FIELD = "correlation_id"
_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("commerce_correlation", default=None)
_installed = False
_flushing: set[str] = set()


def ray_logging() -> ray.LoggingConfig:
    """How the driver and the actors of a job write their logs: JSON lines with every extra field."""
    return ray.LoggingConfig(encoding="JSON", log_level="INFO")


def bind(correlation_id: object | None = None) -> contextvars.Token[dict[str, str] | None]:
    """Begin a unit of work (a request, a saga's run) in this context, correlated with the given id if known."""
    return _bound.set({FIELD: str(correlation_id)} if correlation_id is not None else {})


def unbind(token: contextvars.Token[dict[str, str] | None]) -> None:
    _bound.reset(token)


def correlate(correlation_id: object) -> None:
    """The unit of work under way concerns this id (a new order): lines written from now on carry it."""
    holder = _bound.get()
    if holder is None:
        _bound.set({FIELD: str(correlation_id)})
    else:
        holder[FIELD] = str(correlation_id)


def install() -> None:
    """Make every log record of this process carry the bound correlation id (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = make(*args, **kwargs)
        holder = _bound.get()
        if holder and FIELD in holder and not hasattr(rec, FIELD):
            setattr(rec, FIELD, holder[FIELD])
        return rec

    logging.setLogRecordFactory(record)


def flush_every(logger_name: str, seconds: float) -> None:
    """Flush the buffering handlers of this logger every ``seconds`` (once per process): Serve's replicas
    hold up to 1,000 lines in memory for throughput, so a quiet service's lines would never reach the file.
    A thread, not a task: the replica's event loop may be busy, and a flush must not wait for it."""
    if logger_name in _flushing:
        return
    _flushing.add(logger_name)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(seconds):
            for handler in logging.getLogger(logger_name).handlers:
                if isinstance(handler, logging.handlers.MemoryHandler):
                    handler.flush()

    threading.Thread(target=run, name=f"flush {logger_name} logs", daemon=True).start()
