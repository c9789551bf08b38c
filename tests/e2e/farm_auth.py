"""The token side of tests and benches that start a real coordinator, which always
authenticates (issue 17.3).

Owns: reading the super user ``admin``'s token that the coordinator writes to
``DATA/admin.token`` at its start (`admin_token`), remembering it per endpoint so a helper
that only knows a base URL finds it (`auth_headers`, `api_json`), handing it to `farm`
subprocesses (`farm_env`) and putting it where the web console keeps its token before a
page loads (`sign_in_console`), so browser tests start logged in whatever the login page
looks like. Open apps (``make_app(hub)`` with no access control) need none of this.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from actors.access.bootstrap import ADMIN_TOKEN_FILE

# Where actors/control/static/api.js keeps the token of the page's tab.
CONSOLE_TOKEN_KEY = "phonefarm.token"

_tokens: dict[str, str] = {}  # origin of an endpoint -> its admin token


def _origin(url: str) -> str:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def admin_token(data: Path | str, url: str | None = None, timeout: float = 30.0) -> str:
    """The token the coordinator over data dir ``data`` keeps in ``DATA/admin.token``
    (written before its endpoint listens; waited for up to ``timeout`` s), remembered as the
    token of the endpoint at ``url`` (a base URL or ``host:port``) when given."""
    path = Path(data) / ADMIN_TOKEN_FILE
    deadline = time.monotonic() + timeout
    while True:
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if token:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no token in {path} after {timeout:.0f} s: did the "
                                 f"coordinator start?")
        time.sleep(0.1)
    if url is not None:
        _tokens[_origin(url)] = token
    return token


def token_for(url: str) -> str:
    """The admin token remembered for the endpoint of ``url`` (`admin_token`)."""
    try:
        return _tokens[_origin(url)]
    except KeyError:
        raise AssertionError(f"no token known for {_origin(url)}: call "
                             f"farm_auth.admin_token(data, url) once it started") from None


def auth_headers(url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``Authorization: Bearer`` with the token of ``url``'s endpoint."""
    return {**(headers or {}), "Authorization": f"Bearer {token_for(url)}"}


def api_json(url: str, body: Any = None, *, method: str | None = None,
             timeout: float = 60.0) -> Any:
    """``body`` as JSON (None: none, a GET) to ``url`` as admin; the decoded answer. An
    error status raises urllib's HTTPError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method,
        headers=auth_headers(url, {"Content-Type": "application/json"}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def farm_env(url: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default this process's) for a `farm` command against ``url``'s endpoint:
    its token in ``PHONEFARM_TOKEN``, which the CLI takes before any stored login."""
    return {**(os.environ if env is None else env), "PHONEFARM_TOKEN": token_for(url)}


def sign_in_console(target: Any, url: str) -> None:
    """Have every page of ``target`` (a Playwright BrowserContext or Page) at ``url``'s
    endpoint start with the admin token in its sessionStorage, as after logging in: set by
    an init script, before the console's own scripts run. The one place browser tests log
    in; a page that must show the login page is opened without it."""
    origin, token = _origin(url), token_for(url)
    target.add_init_script(
        f"if (location.origin === {json.dumps(origin)}) "
        f"sessionStorage.setItem({json.dumps(CONSOLE_TOKEN_KEY)}, {json.dumps(token)});")
