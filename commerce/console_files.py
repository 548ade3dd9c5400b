"""The operator console's static files (commerce/console, shipped as package data): no build step, and
nothing fetched from elsewhere, as the Content-Security-Policy says."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import Response
from starlette.exceptions import HTTPException

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
CONSOLE_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CONSOLE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "X-Content-Type-Options": "nosniff",
                   "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


# The files there, by name, listed once: a name that is not one of them is a 404 without touching the file
# system (a name too long for it would raise there).
CONSOLE_FILES = frozenset(p.name for p in CONSOLE_DIR.iterdir()
                          if p.is_file() and not p.name.startswith(".") and p.suffix in CONSOLE_TYPES)


def console_file(name: str) -> Response:
    """A file of the console by its plain name; anything else (a dot file, a path, another type) is a 404."""
    if name not in CONSOLE_FILES:
        raise HTTPException(404, "no such console file")
    path = CONSOLE_DIR / name
    return Response(path.read_bytes(), media_type=CONSOLE_TYPES[path.suffix], headers=CONSOLE_HEADERS)
