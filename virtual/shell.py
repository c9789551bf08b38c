"""The virtual phone's shell: a small POSIX-ish interpreter and the shell/exec stream services.

Owns the command-line language the host sends (quoting, `;` `&&` `||` `|`, `>` `>>` `2>&1`,
`$?`, `NAME=value` prefixes) and the three ways a command arrives: legacy `shell:` (raw
bytes, no exit status), shell protocol v2 (`shell,v2,...:`, framed stdout/stderr/exit) and
`exec:` (raw stdout). A command alone on its line may stream its output and learn of the
host's hang-up (`current_session`), as the scrcpy server's `app_process` does. What each
command does lives in ``virtual.commands``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import struct
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from virtual.adbd import AdbStream

log = logging.getLogger(__name__)

SHELL_NAME = "/system/bin/sh"


@dataclass
class CommandResult:
    """What one command produced."""

    stdout: bytes = b""
    stderr: bytes = b""
    status: int = 0


def ok(text: str | bytes = b"") -> CommandResult:
    return CommandResult(text.encode() if isinstance(text, str) else text, b"", 0)


def fail(message: str, status: int = 1) -> CommandResult:
    return CommandResult(b"", (message.rstrip("\n") + "\n").encode(), status)


@dataclass(frozen=True)
class ShellSession:
    """The stream a command line arrived on, for a command that runs as long as its caller
    keeps the stream open (the scrcpy server): output as it happens, and the hang-up."""

    write_out: Callable[[bytes], Awaitable[None]]
    write_err: Callable[[bytes], Awaitable[None]]
    hung_up: Callable[[], Awaitable[None]]


_SESSION: contextvars.ContextVar[ShellSession | None] = contextvars.ContextVar(
    "shell_session", default=None)
_COMMAND_ENV: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "command_env", default={})
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def current_session() -> ShellSession | None:
    """The stream of the running command line; None in a pipeline or an interactive shell,
    where output is collected and handed over when the command ends."""
    return _SESSION.get()


def command_env() -> dict[str, str]:
    """The running command's `NAME=value` prefix assignments (`CLASSPATH=... app_process`)."""
    return dict(_COMMAND_ENV.get())


class Stdin(Protocol):
    async def read_exactly(self, n: int) -> bytes: ...

    async def read_all(self) -> bytes: ...


class BytesStdin:
    """Stdin from a pipe or an empty one."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytearray(data)

    async def read_exactly(self, n: int) -> bytes:
        if len(self._data) < n:
            raise EOFError(f"stdin ended after {len(self._data)} of {n} bytes")
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    async def read_all(self) -> bytes:
        out = bytes(self._data)
        self._data.clear()
        return out


class RawStreamStdin:
    """Stdin carried raw on the stream (legacy shell and exec)."""

    def __init__(self, stream: AdbStream) -> None:
        self._stream = stream

    async def read_exactly(self, n: int) -> bytes:
        return await self._stream.read_exactly(n)

    async def read_all(self) -> bytes:
        chunks = []
        while chunk := await self._stream.read_some():
            chunks.append(chunk)
        return b"".join(chunks)


V2_PACKET = struct.Struct("<BI")
V2_STDIN, V2_STDOUT, V2_STDERR, V2_EXIT, V2_CLOSE_STDIN, V2_WINDOW = 0, 1, 2, 3, 4, 5


class ShellV2Stdin:
    """Stdin framed as shell-v2 packets: id 0 data, id 4 end of input."""

    def __init__(self, stream: AdbStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        while not self._eof:
            try:
                kind, length = V2_PACKET.unpack(await self._stream.read_exactly(V2_PACKET.size))
                payload = await self._stream.read_exactly(length) if length else b""
            except Exception:
                self._eof = True
                return False
            if kind == V2_STDIN:
                self._buf += payload
                return True
            if kind == V2_CLOSE_STDIN:
                self._eof = True
        return False

    async def read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise EOFError(f"stdin ended after {len(self._buf)} of {n} bytes")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def read_all(self) -> bytes:
        while await self._fill():
            pass
        out = bytes(self._buf)
        self._buf.clear()
        return out

    async def read_line(self) -> bytes | None:
        while b"\n" not in self._buf and b"\r" not in self._buf:
            if not await self._fill():
                if self._buf:
                    return await self.read_all()
                return None
        cut = min(i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0)
        line = bytes(self._buf[:cut])
        del self._buf[:cut + 1]
        return line


# ----------------------------------------------------------------------------------------
# the language


class ShellSyntaxError(Exception):
    pass


@dataclass
class Op:
    text: str


@dataclass
class SimpleCommand:
    argv: list[str] = field(default_factory=list)
    stdout_file: str | None = None
    append: bool = False
    stdin_file: str | None = None
    stderr_to_stdout: bool = False
    stderr_null: bool = False


OPERATORS = ("&&", "||", ">>", ";", "|", ">", "<", "&")
# `$?` must be expanded when its command runs, not when the line is split: it stands in the
# words as this private-use character until then.
LAST_STATUS = "\ue000"


def tokenize(line: str) -> list[str | Op]:
    """Split a command line into words and operators, removing quotes; `$?` is deferred."""
    tokens: list[str | Op] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(line)

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            tokens.append("".join(word))
            word.clear()
            in_word = False

    while i < n:
        c = line[i]
        if c in " \t\n":
            end_word()
            i += 1
        elif c == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise ShellSyntaxError("unterminated single quote")
            word.append(line[i + 1:close])
            in_word = True
            i = close + 1
        elif c == '"':
            i += 1
            in_word = True
            while True:
                if i >= n:
                    raise ShellSyntaxError("unterminated double quote")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\$`':
                    word.append(line[i + 1])
                    i += 2
                elif c == "$" and line.startswith("$?", i):
                    word.append(LAST_STATUS)
                    i += 2
                else:
                    word.append(c)
                    i += 1
        elif c == "\\":
            if i + 1 < n:
                word.append(line[i + 1])
                in_word = True
            i += 2
        elif c == "$" and line.startswith("$?", i):
            word.append(LAST_STATUS)
            in_word = True
            i += 2
        elif c == "#" and not in_word:
            break
        else:
            op = next((o for o in OPERATORS if line.startswith(o, i)), None)
            if op is None:
                word.append(c)
                in_word = True
                i += 1
                continue
            # `2>` / `1>`: the digit belongs to the redirection, not to the argument list.
            if op in (">", ">>") and in_word and "".join(word) in ("1", "2"):
                fd = "".join(word)
                word.clear()
                in_word = False
                if line.startswith(">&1", i) and fd == "2":
                    tokens.append(Op("2>&1"))
                    i += 3
                    continue
                tokens.append(Op(f"{fd}{op}"))
                i += len(op)
                continue
            end_word()
            tokens.append(Op(op))
            i += len(op)
    end_word()
    return tokens


def parse_simple(tokens: list[str | Op]) -> SimpleCommand:
    cmd = SimpleCommand()
    it = iter(tokens)
    for tok in it:
        if isinstance(tok, str):
            cmd.argv.append(tok)
            continue
        if tok.text == "2>&1":
            cmd.stderr_to_stdout = True
            continue
        target = next(it, None)
        if not isinstance(target, str):
            raise ShellSyntaxError(f"syntax error: missing file after '{tok.text}'")
        if tok.text in (">", "1>"):
            cmd.stdout_file, cmd.append = target, False
        elif tok.text in (">>", "1>>"):
            cmd.stdout_file, cmd.append = target, True
        elif tok.text in ("2>", "2>>"):
            cmd.stderr_null = target == "/dev/null"
        elif tok.text == "<":
            cmd.stdin_file = target
    return cmd


CommandFunc = Callable[[list[str], Stdin], Awaitable[CommandResult]]


class ShellInterpreter:
    """Runs command lines against a table of commands (name -> async function)."""

    def __init__(self, lookup: Callable[[str], CommandFunc | None], fs,
                 start_cost: Callable[[list[str]], float] = lambda argv: 0.0) -> None:
        self._lookup = lookup
        self._fs = fs
        # Seconds a program takes to start on the phone (virtual.profile.PhoneProfile).
        self._start_cost = start_cost
        self.last_status = 0
        self.exit_code = 0

    async def run(self, line: str, stdin: Stdin) -> tuple[CommandResult, bytes]:
        """Run a whole line; returns the last result and all output interleaved in order."""
        try:
            tokens = tokenize(line)
        except ShellSyntaxError as exc:
            self.last_status = 2
            res = fail(f"{SHELL_NAME}: {exc}", 2)
            return res, res.stderr
        current: list[str | Op] = []
        segments: list[tuple[list[str | Op], str]] = []
        for tok in tokens:
            if isinstance(tok, Op) and tok.text in (";", "&&", "||", "&"):
                segments.append((current, tok.text))
                current = []
            else:
                current.append(tok)
        segments.append((current, ";"))
        if len(segments) == 1:
            # One command: hand its output over as is (screencap frames are 10 MB).
            res = await self._pipeline(segments[0][0], stdin) if segments[0][0] else CommandResult()
            status = self.exit_code if res.status == -1 else res.status
            self.last_status = status
            combined = res.stdout + res.stderr if res.stderr else res.stdout
            return CommandResult(res.stdout, res.stderr, status), combined
        # Output of a list is collected in order, so none of its commands streams its own.
        session_token = _SESSION.set(None)
        try:
            return await self._run_list(segments, stdin)
        finally:
            _SESSION.reset(session_token)

    async def _run_list(self, segments: list[tuple[list[str | Op], str]],
                        stdin: Stdin) -> tuple[CommandResult, bytes]:
        combined = bytearray()
        out, err = bytearray(), bytearray()
        status = 0
        skip_next = False
        stdin_used = False
        for seg, sep in segments:
            if seg and not skip_next:
                res = await self._pipeline(seg, stdin if not stdin_used else BytesStdin())
                stdin_used = True
                out += res.stdout
                err += res.stderr
                combined += res.stdout + res.stderr
                status = res.status
                self.last_status = status
                if status == -1:  # `exit`
                    break
            skip_next = (sep == "&&" and status != 0) or (sep == "||" and status == 0)
        final = CommandResult(bytes(out), bytes(err), self.exit_code if status == -1 else status)
        return final, bytes(combined)

    async def _pipeline(self, tokens: list[str | Op], stdin: Stdin) -> CommandResult:
        parts: list[list[str | Op]] = [[]]
        for tok in tokens:
            if isinstance(tok, Op) and tok.text == "|":
                parts.append([])
            else:
                parts[-1].append(tok)
        if len(parts) > 1:
            session_token = _SESSION.set(None)  # a pipe's output is collected, not streamed
            try:
                return await self._run_pipe(parts, stdin)
            finally:
                _SESSION.reset(session_token)
        return await self._run_pipe(parts, stdin)

    async def _run_pipe(self, parts: list[list[str | Op]], stdin: Stdin) -> CommandResult:
        res = CommandResult()
        data_in: Stdin = stdin
        stderr = bytearray()
        for index, part in enumerate(parts):
            try:
                cmd = parse_simple(part)
            except ShellSyntaxError as exc:
                return fail(f"{SHELL_NAME}: {exc}", 2)
            res = await self._simple(cmd, data_in)
            stderr += res.stderr
            if index < len(parts) - 1:
                data_in = BytesStdin(res.stdout)
        return CommandResult(res.stdout, bytes(stderr), res.status)

    async def _simple(self, cmd: SimpleCommand, stdin: Stdin) -> CommandResult:
        if not cmd.argv:
            return CommandResult()
        cmd.argv = [a.replace(LAST_STATUS, str(self.last_status)) for a in cmd.argv]
        env: dict[str, str] = {}
        while cmd.argv and ASSIGNMENT.match(cmd.argv[0]):
            key, _, value = cmd.argv.pop(0).partition("=")
            env[key] = value
        if not cmd.argv:  # assignments alone set shell variables: nothing to run
            return CommandResult()
        name = cmd.argv[0]
        if name == "exit":
            try:
                self.exit_code = int(cmd.argv[1]) & 0xFF if len(cmd.argv) > 1 else self.last_status
            except ValueError:
                self.exit_code = 2
            return CommandResult(status=-1)
        if cmd.stdin_file:
            try:
                stdin = BytesStdin(self._fs.read(cmd.stdin_file))
            except OSError as exc:
                return fail(f"{SHELL_NAME}: {exc.strerror}", 1)
        func = self._lookup(name.rsplit("/", 1)[-1] if name.startswith("/system/") else name)
        if func is None:
            return fail(f"{SHELL_NAME}: {name}: inaccessible or not found", 127)
        cost = self._start_cost(cmd.argv)
        if cost:  # a real phone's program start (a Java VM for `input`): before it acts
            await asyncio.sleep(cost)
        env_token = _COMMAND_ENV.set(env)
        redirected = cmd.stdout_file or cmd.stderr_null or cmd.stderr_to_stdout
        session_token = _SESSION.set(None) if redirected else None  # collect, then redirect
        try:
            res = await func(cmd.argv[1:], stdin)
        except EOFError as exc:
            res = fail(f"{name}: {exc}", 1)
        except Exception as exc:
            log.exception("command %r crashed", cmd.argv)
            res = fail(f"{name}: internal error: {exc}", 255)
        finally:
            _COMMAND_ENV.reset(env_token)
            if session_token is not None:
                _SESSION.reset(session_token)
        if cmd.stderr_null:
            res = CommandResult(res.stdout, b"", res.status)
        if cmd.stderr_to_stdout:
            res = CommandResult(res.stdout + res.stderr, b"", res.status)
        if cmd.stdout_file and cmd.stdout_file != "/dev/null":
            try:
                self._fs.write(cmd.stdout_file, res.stdout, append=cmd.append)
            except OSError as exc:
                return CommandResult(b"", res.stderr + f"{SHELL_NAME}: {exc.strerror}\n".encode(), 1)
            res = CommandResult(b"", res.stderr, res.status)
        elif cmd.stdout_file == "/dev/null":
            res = CommandResult(b"", res.stderr, res.status)
        return res


# ----------------------------------------------------------------------------------------
# stream services

PROMPT = b"vphone:/ $ "


async def _run_on(shell: ShellInterpreter, command: str, stdin: Stdin,
                  session: ShellSession) -> tuple[CommandResult, bytes]:
    token = _SESSION.set(session)
    try:
        return await shell.run(command, stdin)
    finally:
        _SESSION.reset(token)


def _raw_session(stream: AdbStream) -> ShellSession:
    return ShellSession(stream.write, stream.write, stream.wait_closed)


async def serve_legacy_shell(stream: AdbStream, shell: ShellInterpreter, command: str) -> None:
    """`shell:CMD`: stdout and stderr interleaved on the raw stream, no exit status."""
    if not command.strip():
        await _interactive_raw(stream, shell)
        return
    _, combined = await _run_on(shell, command, RawStreamStdin(stream),
                                _raw_session(stream))
    if combined:
        await stream.write(combined)


async def serve_exec(stream: AdbStream, shell: ShellInterpreter, command: str) -> None:
    """`exec:CMD`: raw and binary-safe (screencap, cat); like adbd, stderr shares the stream."""
    _, combined = await _run_on(shell, command, RawStreamStdin(stream),
                                _raw_session(stream))
    if combined:
        await stream.write(combined)


async def serve_shell_v2(stream: AdbStream, shell: ShellInterpreter, command: str) -> None:
    """`shell,v2,...:CMD`: framed stdout, stderr and exit status."""
    stdin = ShellV2Stdin(stream)
    if not command.strip():
        await _interactive_v2(stream, shell, stdin)
        return

    async def write(kind: int, data: bytes) -> None:
        if data:
            await stream.write(V2_PACKET.pack(kind, len(data)) + data)

    session = ShellSession(lambda data: write(V2_STDOUT, data),
                           lambda data: write(V2_STDERR, data), stream.wait_closed)
    result, _ = await _run_on(shell, command, stdin, session)
    out = bytearray()
    if result.stdout:
        out += V2_PACKET.pack(V2_STDOUT, len(result.stdout)) + result.stdout
    if result.stderr:
        out += V2_PACKET.pack(V2_STDERR, len(result.stderr)) + result.stderr
    out += V2_PACKET.pack(V2_EXIT, 1) + bytes([result.status & 0xFF])
    await stream.write(bytes(out))


async def _interactive_raw(stream: AdbStream, shell: ShellInterpreter) -> None:
    await stream.write(PROMPT)
    pending = bytearray()
    while chunk := await stream.read_some():
        pending += chunk.replace(b"\r", b"\n")
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending = bytearray(rest)
            result, combined = await shell.run(line.decode("utf-8", "replace"), BytesStdin())
            if result.status == -1 or line.strip() == b"exit":
                return
            await stream.write(combined + PROMPT)


async def _interactive_v2(stream: AdbStream, shell: ShellInterpreter, stdin: ShellV2Stdin) -> None:
    async def send(kind: int, data: bytes) -> None:
        if data:
            await stream.write(V2_PACKET.pack(kind, len(data)) + data)

    await send(V2_STDOUT, PROMPT)
    while (line := await stdin.read_line()) is not None:
        if line.strip() == b"exit":
            break
        result, _ = await shell.run(line.decode("utf-8", "replace"), BytesStdin())
        await send(V2_STDOUT, result.stdout)
        await send(V2_STDERR, result.stderr)
        await send(V2_STDOUT, PROMPT)
    await stream.write(V2_PACKET.pack(V2_EXIT, 1) + bytes([shell.last_status & 0xFF]))


def parse_shell_service(service: str) -> tuple[str, str] | None:
    """Map a service name to (mode, command): mode is 'legacy', 'v2' or 'exec'."""
    if service.startswith("shell:"):
        return "legacy", service[len("shell:"):]
    if service.startswith("shell,"):
        options, sep, command = service[len("shell,"):].partition(":")
        if not sep:
            return None
        return ("v2" if "v2" in options.split(",") else "legacy"), command
    if service.startswith("exec:"):
        return "exec", service[len("exec:"):]
    return None


ServiceCoroutine = Callable[[AdbStream], Awaitable[None]]


def shell_service(service: str, make_shell: Callable[[], ShellInterpreter]) -> ServiceCoroutine | None:
    parsed = parse_shell_service(service)
    if parsed is None:
        return None
    mode, command = parsed
    serve = {"legacy": serve_legacy_shell, "v2": serve_shell_v2, "exec": serve_exec}[mode]

    async def handler(stream: AdbStream) -> None:
        await serve(stream, make_shell(), command)

    return handler
