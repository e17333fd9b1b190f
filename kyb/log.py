"""Logging setup shared by every service and the CLI: structlog, one line per event.

JSON lines when stdout is not a terminal (what compose, systemd and log shippers read),
a readable console rendering on a terminal. Every line carries ``service`` and, inside a
span, the ``trace_id`` and ``span_id`` of the current OpenTelemetry span, so a log line
leads to its trace and back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

__all__ = ["add_trace_ids", "configure_logging", "get_logger"]


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add trace_id/span_id of the current span (unless already bound)."""
    sc = trace.get_current_span().get_span_context()
    if sc.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(sc.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(sc.span_id))
    return event_dict


def _add_service(service: str) -> structlog.types.Processor:
    def processor(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def configure_logging(
    service: str,
    *,
    level: int | str = logging.INFO,
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and route the standard ``logging`` module to the same stream).

    ``json`` None means: JSON unless ``stream`` (default stdout) is a terminal.
    """
    out = stream if stream is not None else sys.stdout
    if json is None:
        json = not (hasattr(out, "isatty") and out.isatty())
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    finishing: list[structlog.types.Processor] = []
    if json:
        finishing.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, *finishing, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # libraries (nats-py, docker) log through the standard module: same stream, same shape
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finishing, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_kyb", False)]:
        root.removeHandler(old)
    handler._kyb = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str | None = None, **bound: Any) -> Any:
    """A structlog logger with ``bound`` key/values (e.g. ``service=...``, ``controller=...``)."""
    logger = structlog.get_logger(name) if name else structlog.get_logger()
    return logger.bind(**bound) if bound else logger
