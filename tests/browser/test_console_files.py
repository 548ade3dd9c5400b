"""The console's files as the app serves them, without a browser or Ray: headers, types, what the
package ships, and that the code never writes markup or loads anything from elsewhere."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

import serve_app
from commerce.console_files import CONSOLE_TYPES
from commerce.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "commerce" / "console"
FILES = sorted(p.name for p in CONSOLE.iterdir() if p.is_file())
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=serve_app.Ingress(Settings(server_secret="test")).app()), base_url="http://test") as c:
        yield c


async def test_the_page_is_served_with_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    r = await client.get("/console")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/console/app.js">' in r.text
    assert 'rel="icon" href="/console/favicon.svg"' in r.text
    assert (await client.head("/console")).status_code == 200


@pytest.mark.parametrize("name", FILES)
async def test_every_file_is_served_with_its_type_and_the_policy(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/console/{name}")
    assert r.status_code == 200, name
    expected = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    assert r.headers["content-type"].startswith(expected[Path(name).suffix])
    assert r.headers["content-security-policy"] == CSP
    assert r.content == (CONSOLE / name).read_bytes()


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/.hidden.js", "/console/serve_app.py",
                                  "/console/..%2Fserve_app.py", "/console/app.js/x",
                                  "/console/" + "a" * 300 + ".js"])  # longer than a file name may be
async def test_anything_else_is_a_404_problem(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_the_package_ships_every_console_file() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["commerce"]
    for name in FILES:
        assert any(fnmatch(f"console/{name}", g) for g in globs), name
        assert Path(name).suffix in CONSOLE_TYPES, name


def test_modules_import_only_files_of_the_console() -> None:
    for name in FILES:
        if name.endswith(".js"):
            for target in re.findall(r'^import\b.*?\bfrom\s+"([^"]+)";$', (CONSOLE / name).read_text(), re.M | re.S):
                assert target.startswith("./") and (CONSOLE / target[2:]).is_file(), (name, target)


def test_nothing_writes_markup_runs_strings_or_reaches_another_origin() -> None:
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                           r"setAttribute\(\s*[\"']on|javascript:")
    for name in FILES:
        text = "\n".join(line for line in (CONSOLE / name).read_text().splitlines() if not line.lstrip().startswith("//"))
        assert not forbidden.search(text), (name, forbidden.search(text))
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg", "http://127.0.0.1:8265"}
        assert not urls, (name, urls)  # the Ray dashboard's default is only a link, never fetched
    html = (CONSOLE / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html and "<style" not in html
