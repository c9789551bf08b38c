"""The `farm` CLI's plumbing: `FarmClient` (the HTTP conversation with one control endpoint,
standard library urllib only, so the CLI starts fast), the exit statuses every command
returns, and `add_command`, the one way a command module registers a plain subcommand.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any, BinaryIO, Callable, Iterator

from protocol.errors import DeliveryError, FarmError


DEFAULT_URL = "http://127.0.0.1:8470"
EXIT_OK, EXIT_PHONE_FAILED, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_STDOUT_CLOSED = 141

class RequestRejected(FarmError):
    """The endpoint answered with an HTTP error; ``body`` is its JSON answer (or None)."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class FarmClient:
    """Owns the conversation with one control endpoint: URLs, the bearer token, JSON in and
    out. An HTTP error answer raises FarmError (with the endpoint's message); no answer at
    all raises DeliveryError."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    def _open(self, path: str, body: dict | None = None, timeout: float | None = None,
              method: str | None = None, stream: tuple[BinaryIO, int] | None = None):
        data: Any = None if body is None else json.dumps(body).encode()
        if stream is not None:  # (open file, its size): urllib sends it in blocks
            data = stream[0]
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method or ("GET" if data is None else "POST"))
        if stream is not None:
            request.add_header("Content-Type", "application/octet-stream")
            request.add_header("Content-Length", str(stream[1]))
        elif data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
                message = answer["error"]
            except (ValueError, KeyError, TypeError):
                answer, message = None, raw.decode(errors="replace").strip() or exc.reason
            raise RequestRejected(f"{self.url}{path}: HTTP {exc.code}: {message}", exc.code,
                                  answer) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(self.url, f"cannot reach the control endpoint: {reason}") from None

    def get_json(self, path: str) -> Any:
        with self._open(path) as response:
            try:
                return json.load(response)
            except (OSError, http.client.HTTPException) as exc:  # cut off mid-answer
                raise DeliveryError(self.url, f"the control endpoint broke off its answer: "
                                              f"{exc!r}") from None

    def poll_json(self, path: str, window_s: float) -> Any:
        """`get_json`, riding out an endpoint that cannot be reached (a coordinator being
        restarted) for up to ``window_s`` seconds with growing pauses; one line on stderr
        says so. DeliveryError once the window has passed."""
        deadline: float | None = None
        pause = 0.25
        while True:
            try:
                return self.get_json(path)
            except DeliveryError as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + window_s
                    print(f"farm: {exc}; reconnecting (for up to {window_s:g} s)",
                          file=sys.stderr, flush=True)
                elif now >= deadline:
                    raise
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 5.0)

    def post_json(self, path: str, body: dict) -> Any:
        with self._open(path, body) as response:
            return json.load(response)

    def post_file(self, path: str, fh: BinaryIO, size: int) -> Any:
        """POST an open file of ``size`` bytes as the body, streamed, never read whole."""
        with self._open(path, stream=(fh, size)) as response:
            return json.load(response)

    def delete_json(self, path: str) -> Any:
        with self._open(path, method="DELETE") as response:
            return json.load(response)

    def get_bytes(self, path: str) -> tuple[bytes, str]:
        with self._open(path) as response:
            return response.read(), response.headers.get_content_type()

    def events(self, read_timeout: float = 60.0) -> Iterator[tuple[str, dict]]:
        """Follow /api/stream: (event name, payload) until the server ends the stream.
        Heartbeats (every 15 s) keep the read timeout from firing on a healthy stream."""
        with self._open("/api/stream", timeout=read_timeout) as response:
            name, data = None, []
            for raw in self._lines(response, read_timeout):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line:
                    if name is not None or data:
                        yield name or "message", json.loads("\n".join(data) or "{}")
                    name, data = None, []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)

    def _lines(self, response, read_timeout: float) -> Iterator[bytes]:
        try:
            yield from response
        except (TimeoutError, OSError) as exc:
            raise DeliveryError(self.url, f"status stream stalled or broke "
                                          f"(nothing for {read_timeout:g} s): {exc}") from None

    def run_action(self, scope: str, action: dict) -> dict[str, dict]:
        return self.post_json("/api/actions", {"scope": scope, "action": action})["results"]


# A command: runs against the client with the parsed arguments and returns the exit status.
Command = Callable[[FarmClient, argparse.Namespace], int]


def add_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str,
                help_text: str, func: Command) -> argparse.ArgumentParser:
    """Register subcommand NAME (taking the connection options too) that runs ``func``."""
    p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
    p.set_defaults(func=func)
    return p
