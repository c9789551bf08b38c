"""The commands a virtual phone's shell knows, with Android's output formats.

Owns the behaviour of each command (`input`, `am`, `pm`/`cmd package`, `screencap`,
`dumpsys`, `getprop`, `wm`, `settings`, file commands, and `vphone` for controlling the
virtual phone itself). Output mimics a real Android 11 phone closely enough for adbutils
and operators' scripts to parse it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import posixpath
import stat
import struct
import weakref
from typing import Any, Callable, Protocol
from xml.sax.saxutils import quoteattr

import orjson

from actors.node.device.keycodes import key_code, key_name
from virtual.fs import FsError, VirtualFS
from virtual.packages import PackageManager, PmFailure
from virtual.profile import PhoneProfile, UsbBus
from virtual.shell import SHELL_NAME, CommandFunc, CommandResult, Stdin, fail, ok
from virtual.touch import Touchscreen
from virtual.ui import PhoneUI

# Android's screencap raw header since API 28: width, height, pixel format, colour space.
RAW_HEADER = struct.Struct("<IIII")
PIXEL_FORMAT_RGBA_8888 = 1
COLORSPACE_SRGB = 1
IME_PACKAGE = "com.android.adbkeyboard"
KEYCODE_PASTE = 279  # android.view.KeyEvent
UI_DUMP_DEFAULT = "/sdcard/window_dump.xml"


def pm_failure(message: str) -> CommandResult:
    """Android's package manager prints its failures on stdout, where `adb install` looks."""
    return CommandResult((message.rstrip("\n") + "\n").encode(), b"", 1)


def _num(text: str) -> int:
    return int(round(float(text)))


def typable(ch: str) -> bool:
    """Whether the virtual keyboard's key map has a key for ``ch`` (printable ASCII, newline
    and tab): `input text` refuses text with any other character, the scrcpy agent skips
    them."""
    return 32 <= ord(ch) <= 126 or ch in "\n\t"


def _via(via: str | None) -> dict[str, str]:
    return {} if via is None else {"via": via}


class Agents(Protocol):
    """The on-device agents a phone runs (virtual.scrcpy_server.ScrcpyAgents)."""

    async def app_process(self, args: list[str], stdin: Stdin) -> CommandResult:
        """`app_process`: start a Java program (only the scrcpy server exists here)."""

    def kill_all(self) -> list[str]:
        """Kill every running agent at once, as `kill -9` would; their descriptions."""

    def inject_fault(self, fault: str) -> list[str]:
        """Arm ``fault`` on every running agent ("clear" disarms); their descriptions.
        ValueError for an unknown fault."""


class CommandedPhone(Protocol):
    """What the shell commands read and change of their phone (virtual.phone.VirtualPhone,
    which owns the command table and so imports this module)."""

    seed: int
    width: int
    height: int
    density: int
    clock: Callable[[], float]
    ui: PhoneUI
    fs: VirtualFS
    touch: Touchscreen  # `input motionevent`
    props: dict[str, str]
    settings: dict[str, dict[str, str]]  # namespace -> key -> value
    size_override: tuple[int, int] | None  # `wm size WxH`
    slow_ms: int  # `vphone slow`
    profile: PhoneProfile  # `vphone profile`
    bus: UsbBus  # `vphone bus`: the USB bus the farm's phones share
    uiautomator: bool  # `vphone uiautomator off`
    input_log: list[dict]
    packages: PackageManager  # `pm`: installed packages and install sessions
    clipboard: str  # the primary clip's text (set by the scrcpy agent, pasted by PASTE)
    agents: Agents  # `app_process`, `vphone agent-kill`, `vphone agent-fault`
    gallery: list[str]  # media files the scanner indexed (MEDIA_SCANNER_SCAN_FILE), newest last

    def log_input(self, kind: str, **fields: Any) -> None:
        """Append one entry to the input log."""

    def schedule_unplug(self, seconds: float) -> None:
        """`vphone unplug`: drop off the adb server for ``seconds``."""


class PhoneCommands:
    """The command table of one virtual phone; each ``cmd_NAME`` is a shell command."""

    def __init__(self, phone: CommandedPhone) -> None:
        self.phone = phone
        self._raw_cache: tuple[weakref.ref, bytes] | None = None

    def lookup(self, name: str) -> CommandFunc | None:
        attr = "cmd_" + name.replace("-", "_")
        return getattr(self, attr, None) if attr.isidentifier() else None

    # --- basics ----------------------------------------------------------------------------
    async def cmd_echo(self, args: list[str], stdin: Stdin) -> CommandResult:
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        return ok(" ".join(args) + ("\n" if newline else ""))

    async def cmd_true(self, args: list[str], stdin: Stdin) -> CommandResult:
        return ok()

    async def cmd_false(self, args: list[str], stdin: Stdin) -> CommandResult:
        return CommandResult(status=1)

    async def cmd_sleep(self, args: list[str], stdin: Stdin) -> CommandResult:
        try:
            await asyncio.sleep(min(float(args[0]), 60.0) if args else 0)
        except ValueError:
            return fail(f"sleep: invalid number '{args[0]}'")
        return ok()

    async def cmd_id(self, args: list[str], stdin: Stdin) -> CommandResult:
        return ok("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log) "
                  "context=u:r:shell:s0\n")

    async def cmd_whoami(self, args: list[str], stdin: Stdin) -> CommandResult:
        return ok("shell\n")

    async def cmd_uname(self, args: list[str], stdin: Stdin) -> CommandResult:
        if "-a" in args:
            return ok("Linux localhost 5.10.0-virtual #1 SMP PREEMPT x86_64 Toybox\n")
        return ok("Linux\n")

    async def cmd_date(self, args: list[str], stdin: Stdin) -> CommandResult:
        now = dt.datetime.fromtimestamp(self.phone.clock(), dt.timezone.utc)
        if args and args[0] == "+%s":
            return ok(f"{int(now.timestamp())}\n")
        return ok(now.strftime("%a %b %d %H:%M:%S UTC %Y\n"))

    async def cmd_getprop(self, args: list[str], stdin: Stdin) -> CommandResult:
        props = self.phone.props
        if not args:
            return ok("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        value = props.get(args[0], args[1] if len(args) > 1 else "")
        return ok(f"{value}\n")

    async def cmd_setprop(self, args: list[str], stdin: Stdin) -> CommandResult:
        if len(args) != 2:
            return fail("usage: setprop NAME VALUE")
        self.phone.props[args[0]] = args[1]
        return ok()

    async def cmd_wm(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone = self.phone
        if not args or args[0] not in ("size", "density"):
            return fail("usage: wm [size|density] [reset|VALUE]", 255)
        if args[0] == "size":
            text = f"Physical size: {phone.width}x{phone.height}\n"
            if phone.size_override:
                text += "Override size: %dx%d\n" % phone.size_override
            if len(args) > 1:
                if args[1] == "reset":
                    phone.size_override = None
                else:
                    try:
                        w, h = (int(v) for v in args[1].split("x"))
                    except ValueError:
                        return fail(f"Error: bad size {args[1]}", 255)
                    phone.size_override = (w, h)
                return ok()
            return ok(text)
        text = f"Physical density: {phone.density}\n"
        if len(args) > 1:
            return ok()
        return ok(text)

    async def cmd_settings(self, args: list[str], stdin: Stdin) -> CommandResult:
        settings = self.phone.settings
        if len(args) >= 3 and args[0] == "get":
            value = settings.get(args[1], {}).get(args[2])
            return ok(f"{'null' if value is None else value}\n")
        if len(args) >= 4 and args[0] == "put":
            settings.setdefault(args[1], {})[args[2]] = args[3]
            return ok()
        if len(args) >= 3 and args[0] == "delete":
            settings.get(args[1], {}).pop(args[2], None)
            return ok("Deleted 1 rows\n")
        if len(args) == 2 and args[0] == "list":
            return ok("".join(f"{k}={v}\n" for k, v in sorted(settings.get(args[1], {}).items())))
        return fail("usage:  settings [--user <USER_ID> | current] get namespace key\n"
                    "        settings [--user <USER_ID> | current] put namespace key value", 255)

    # --- files -----------------------------------------------------------------------------
    async def cmd_ls(self, args: list[str], stdin: Stdin) -> CommandResult:
        fs = self.phone.fs
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        paths = [a for a in args if not a.startswith("-")] or ["/"]
        out, err, status = [], [], 0
        for path in paths:
            node = fs.stat(path)
            if node is None:
                err.append(f"ls: {path}: No such file or directory\n")
                status = 1
                continue
            names = fs.listdir(path) if node.is_dir else [path]
            if "a" in flags and node.is_dir:
                names = [".", ".."] + names
            for name in names:
                if "l" in flags:
                    full = path if not node.is_dir else posixpath.join(path, name)
                    entry = fs.stat(full) if name not in (".", "..") else node
                    kind = "d" if entry.is_dir else "-"
                    perms = stat.filemode(entry.mode)[1:]
                    when = dt.datetime.fromtimestamp(entry.mtime, dt.timezone.utc)
                    out.append(f"{kind}{perms} 1 shell shell {entry.size:>8} "
                               f"{when:%Y-%m-%d %H:%M} {name}\n")
                else:
                    out.append(name + "\n")
        return CommandResult("".join(out).encode(), "".join(err).encode(), status)

    async def cmd_cat(self, args: list[str], stdin: Stdin) -> CommandResult:
        if not args or args == ["-"]:
            return ok(await stdin.read_all())
        out, err, status = bytearray(), [], 0
        for path in args:
            try:
                out += self.phone.fs.read(path)
            except FsError as exc:
                err.append(f"cat: {exc.strerror}\n")
                status = 1
        return CommandResult(bytes(out), "".join(err).encode(), status)

    async def cmd_rm(self, args: list[str], stdin: Stdin) -> CommandResult:
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        err, status = [], 0
        for path in (a for a in args if not a.startswith("-")):
            try:
                self.phone.fs.remove(path, recursive="r" in flags or "R" in flags)
            except FsError as exc:
                if "f" in flags and exc.errno == 2:
                    continue
                err.append(f"rm: {exc.strerror}\n")
                status = 1
        return CommandResult(b"", "".join(err).encode(), status)

    async def cmd_mkdir(self, args: list[str], stdin: Stdin) -> CommandResult:
        parents = "-p" in args
        for path in (a for a in args if not a.startswith("-")):
            try:
                self.phone.fs.mkdir(path, parents=parents)
            except FsError as exc:
                return fail(f"mkdir: {exc.strerror}")
        return ok()

    async def cmd_touch(self, args: list[str], stdin: Stdin) -> CommandResult:
        for path in (a for a in args if not a.startswith("-")):
            if not self.phone.fs.exists(path):
                try:
                    self.phone.fs.write(path, b"")
                except FsError as exc:
                    return fail(f"touch: {exc.strerror}")
        return ok()

    # --- screen ----------------------------------------------------------------------------
    async def cmd_screencap(self, args: list[str], stdin: Stdin) -> CommandResult:
        png = "-p" in args
        files = [a for a in args if not a.startswith("-")]
        if "-d" in args:
            files = [a for i, a in enumerate(files) if args[args.index("-d") + 1] != a]
        if files and files[0].endswith(".png"):
            png = True
        loop = asyncio.get_running_loop()
        if png:
            data = await loop.run_in_executor(None, self.phone.ui.frame_png)
        else:
            data = self._raw_frame()
        if files:
            try:
                self.phone.fs.write(files[0], data)
            except FsError as exc:
                return fail(f"Error opening file: {files[0]} ({exc.strerror})")
            return ok()
        return ok(data)

    def _raw_frame(self) -> bytes:
        """Header + RGBA pixels; reused while the UI hands out the same frame object."""
        frame = self.phone.ui.frame_rgba()
        cached = self._raw_cache
        if cached is not None and cached[0]() is frame:
            return cached[1]
        h, w = frame.shape[:2]
        data = RAW_HEADER.pack(w, h, PIXEL_FORMAT_RGBA_8888, COLORSPACE_SRGB) + frame.tobytes()
        self._raw_cache = (weakref.ref(frame), data)
        return data

    async def cmd_input(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone, ui = self.phone, self.phone.ui
        sources = {"touchscreen", "touchpad", "keyboard", "mouse", "dpad", "gamepad",
                   "stylus", "trackball", "joystick", "touchnavigation", "rotaryencoder"}
        while args and args[0] in sources:
            args = args[1:]
        while args and args[0].startswith("-d"):
            args = args[2:]
        usage = ("Usage: input [<source>] <command> [<arg>...]\n"
                 "  text <string>\n  keyevent [--longpress] <key code number or name> ...\n"
                 "  tap <x> <y>\n  swipe <x1> <y1> <x2> <y2> [duration(ms)]\n"
                 "  draganddrop <x1> <y1> <x2> <y2> [duration(ms)]\n"
                 "  motionevent <DOWN|UP|MOVE|CANCEL> <x> <y>\n")
        if not args:
            return fail(usage, 1)
        verb, rest = args[0], args[1:]
        try:
            if verb == "tap" and len(rest) == 2:
                x, y = _num(rest[0]), _num(rest[1])
                phone.log_input("tap", x=x, y=y)
                ui.tap(x, y)
            elif verb in ("swipe", "draganddrop") and len(rest) in (4, 5):
                x1, y1, x2, y2 = (_num(v) for v in rest[:4])
                ms = _num(rest[4]) if len(rest) == 5 else 300
                if verb == "draganddrop":
                    phone.log_input("drag", x1=x1, y1=y1, x2=x2, y2=y2, duration_ms=ms)
                    ui.drag(x1, y1, x2, y2, ms)
                elif abs(x2 - x1) <= 20 and abs(y2 - y1) <= 20 and ms >= 500:
                    # Android sees a stationary swipe as a long press, and so does the log.
                    phone.log_input("long_press", x=x1, y=y1, duration_ms=ms)
                    ui.long_press(x1, y1, ms)
                else:
                    phone.log_input("swipe", x1=x1, y1=y1, x2=x2, y2=y2, duration_ms=ms)
                    ui.swipe(x1, y1, x2, y2, ms)
            elif verb == "motionevent" and (len(rest) == 3 or (len(rest) == 1 and rest[0].upper() == "CANCEL")):
                x, y = (_num(rest[1]), _num(rest[2])) if len(rest) == 3 else (0, 0)
                self.motion_event(rest[0], x, y, via="motionevent")
            elif verb == "text" and rest:
                text = rest[0].replace("%s", " ")
                if not all(map(typable, text)):
                    # The virtual keyboard's key map has no keys for these; real Android
                    # throws here and types nothing.
                    return fail("Exception occurred while executing 'text':\n"
                                "java.lang.NullPointerException: Attempt to get length of "
                                "null array", 255)
                self.type_text(text)
            elif verb in ("keyevent", "press"):
                keys = [k for k in rest if not k.startswith("--")] or (["23"] if verb == "press" else [])
                if not keys:
                    return fail(usage, 1)
                codes = [key_code(k) for k in keys]
                for code in codes:
                    self.press_key(code, longpress="--longpress" in rest)
            else:
                return fail(f"Error: Unknown command: {verb}\n{usage}" if verb not in
                            ("tap", "swipe", "text", "keyevent", "draganddrop", "press", "motionevent")
                            else f"Error: wrong arguments for {verb}\n{usage}", 1)
        except ValueError as exc:
            return fail(f"Error: {exc}", 1)
        return ok()

    # --- input events: `input` and the scrcpy agent's control socket share these ----------
    def motion_event(self, action: str, x: int, y: int, *, via: str) -> None:
        """One touch event; a finished DOWN..UP chain is logged and played as `input swipe`
        would be (a tap, a long press or a swipe along the path), marked ``via``."""
        phone, ui = self.phone, self.phone.ui
        touch = phone.touch.event(action, x, y)
        if touch is None:
            return
        if touch.kind == "swipe":
            (x1, y1), (x2, y2) = touch.path[0], touch.path[-1]
            phone.log_input("swipe", x1=x1, y1=y1, x2=x2, y2=y2, duration_ms=touch.duration_ms,
                            path=[list(p) for p in touch.path], via=via)
            ui.swipe(x1, y1, x2, y2, touch.duration_ms, path=touch.path)
            return
        x0, y0 = touch.path[0]
        if touch.kind == "long_press":
            phone.log_input("long_press", x=x0, y=y0, duration_ms=touch.duration_ms, via=via)
            ui.long_press(x0, y0, touch.duration_ms)
        else:
            phone.log_input("tap", x=x0, y=y0, via=via)
            ui.tap(x0, y0)

    def type_text(self, text: str, *, via: str | None = None) -> None:
        """Type ``text`` into the focused field, as `input text` does (``via``: who sent
        it, when not `input`)."""
        self.phone.log_input("text", text=text, **_via(via))
        self.phone.ui.text(text)

    def press_key(self, code: int, *, longpress: bool = False, via: str | None = None) -> None:
        """One key press, as `input keyevent` does. PASTE types the phone's clipboard into
        the focused field, and its log entry says what it pasted."""
        phone = self.phone
        fields = {"code": code, "name": key_name(code), "longpress": longpress}
        if code == KEYCODE_PASTE:
            phone.log_input("key", **fields, text=phone.clipboard, **_via(via))
            phone.ui.text(phone.clipboard)
            return
        phone.log_input("key", **fields, **_via(via))
        phone.ui.key(code)

    async def cmd_app_process(self, args: list[str], stdin: Stdin) -> CommandResult:
        return await self.phone.agents.app_process(args, stdin)

    # --- activities and packages -----------------------------------------------------------
    async def cmd_am(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone, ui = self.phone, self.phone.ui
        if not args:
            return fail("usage: am [start|force-stop|broadcast|kill] ...", 255)
        verb, rest = args[0], args[1:]
        if verb in ("start", "start-activity"):
            component = _option(rest, "-n")
            if component is None:
                pkgs = [a for a in rest if not a.startswith("-") and "." in a and "/" not in a]
                return fail("Error: Activity not started, unable to resolve Intent "
                            f"{{ {' '.join(rest)} }}" if not pkgs else
                            f"Error: no component given for {pkgs[0]}", 1)
            package, _, activity = component.partition("/")
            if package not in ui.packages():
                return CommandResult(f"Starting: Intent {{ cmp={component} }}\n".encode(),
                                     f"Error type 3\nError: Activity class {{{component}}} "
                                     "does not exist.\n".encode(), 1)
            phone.log_input("app_start", package=package, activity=activity or None, via="am")
            ui.start_app(package, activity or None)
            return ok(f"Starting: Intent {{ cmp={component} }}\n")
        if verb in ("force-stop", "kill"):
            if not rest:
                return fail(f"Error: no package given to {verb}", 255)
            phone.log_input("app_stop", package=rest[-1], via=verb)
            ui.force_stop(rest[-1])
            return ok()
        if verb == "broadcast":
            action = _option(rest, "-a")
            if action == MEDIA_SCAN_ACTION:
                return self._media_scan(_option(rest, "-d"))
            if action in ("ADB_INPUT_B64", "ADB_INPUT_TEXT") and IME_PACKAGE in ui.packages():
                value = _option(rest, "--es", value_of="msg")
                if value is None:
                    return fail("Error: --es msg <text> missing", 255)
                decoded = base64.b64decode(value).decode("utf-8") if action == "ADB_INPUT_B64" \
                    else value
                phone.log_input("text", text=decoded, via="ime")
                ui.text(decoded)
            return ok(f"Broadcasting: Intent {{ act={action} flg=0x400000 (has extras) }}\n"
                      "Broadcast completed: result=0\n")
        return fail(f"Error: unknown command '{verb}'", 255)

    def _media_scan(self, data: str | None) -> CommandResult:
        """The media scanner indexes one file (the gallery's newest item), as Android does
        for ``am broadcast -a android.intent.action.MEDIA_SCANNER_SCAN_FILE -d file://PATH``.
        A path that is no file is broadcast all the same (Android does not check) and not
        indexed."""
        phone = self.phone
        path = data[len("file://"):] if data and data.startswith("file://") else None
        if path is not None:
            path = VirtualFS.normalize(path)
            node = phone.fs.stat(path)
            if node is not None and not node.is_dir:
                if path in phone.gallery:
                    phone.gallery.remove(path)
                phone.gallery.append(path)
        phone.log_input("media_scan", path=path)
        dat = f" dat={data}" if data else ""
        return ok(f"Broadcasting: Intent {{ act={MEDIA_SCAN_ACTION}{dat} flg=0x400000 }}\n"
                  "Broadcast completed: result=0\n")

    async def cmd_content(self, args: list[str], stdin: Stdin) -> CommandResult:
        """``content query --uri content://media/external/(file|images/media|video/media)
        [--projection _data]``: the gallery's items still on disk, oldest first, one
        ``Row: N _id=ID, _data=PATH`` line each (what Android prints); "No result found."."""
        if not args or args[0] != "query":
            return fail("usage: content query --uri <URI> [--projection <PROJECTION>]", 255)
        uri = _option(args, "--uri")
        if uri not in MEDIA_URIS:
            return fail(f"Error while accessing provider:{uri}", 1)
        phone = self.phone
        rows = [p for p in phone.gallery if phone.fs.exists(p)]
        kinds = MEDIA_URIS[uri]
        if kinds:
            rows = [p for p in rows if posixpath.splitext(p)[1].lower() in kinds]
        if not rows:
            return ok("No result found.\n")
        only_data = _option(args, "--projection") == "_data"
        return ok("".join(f"Row: {i} _data={p}\n" if only_data else
                          f"Row: {i} _id={phone.gallery.index(p) + 1}, _data={p}\n"
                          for i, p in enumerate(rows)))

    async def cmd_monkey(self, args: list[str], stdin: Stdin) -> CommandResult:
        package = _option(args, "-p")
        if package is None or package not in self.phone.ui.packages():
            return CommandResult(b"", b"** No activities found to run, monkey aborted.\n", 252)
        self.phone.log_input("app_start", package=package, activity=None, via="monkey")
        self.phone.ui.start_app(package)
        return ok("  bash arg: -p\n  bash arg: " + package + "\nEvents injected: 1\n"
                  "## Network stats: elapsed time=12ms (0ms mobile, 0ms wifi, 12ms not connected)\n")

    async def cmd_cmd(self, args: list[str], stdin: Stdin) -> CommandResult:
        if args and args[0] == "package":
            return await self.cmd_pm(args[1:], stdin)
        if args and args[0] == "activity":
            return await self.cmd_am(args[1:], stdin)
        return fail(f"cmd: Can't find service: {args[0] if args else ''}", 20)

    async def cmd_pm(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone, ui, pm = self.phone, self.phone.ui, self.phone.packages
        if not args:
            return fail("usage: pm [list|path|install|uninstall|clear|install-create|"
                        "install-write|install-commit|install-abandon] ...", 255)
        verb, rest = args[0], args[1:]
        if verb == "list" and rest[:1] == ["packages"]:
            flags = [a for a in rest[1:] if a.startswith("-")]
            needle = next((a for a in rest[1:] if not a.startswith("-")), "")
            names = [n for n in ui.packages() if needle in n]
            if "-3" in flags:
                names = [n for n in names if not ui.is_system(n)]
            if "-s" in flags:
                names = [n for n in names if ui.is_system(n)]
            return ok(pm.list_lines(names, show_version="--show-versioncode" in flags))
        if verb == "path":
            if not rest or rest[-1] not in ui.packages():
                return CommandResult(status=1)
            pkg = rest[-1]
            known = pm.installed.get(pkg)
            splits = known.splits if known is not None else ["base"]
            return ok("".join(f"package:/data/app/{pkg}-1/{s if s == 'base' else 'split_' + s}.apk\n"
                              for s in splits))
        if verb == "install":
            size = _option(rest, "-S")
            files = [a for i, a in enumerate(rest) if not a.startswith("-")
                     and (i == 0 or rest[i - 1] not in ("-S", "-i", "--user", "-p",
                                                        "--install-reason"))]
            try:
                if size is not None:
                    blob = await stdin.read_exactly(int(size))
                elif files:
                    blob = phone.fs.read(files[-1])
                else:
                    return fail("Error: must either specify a package size or an APK file", 255)
            except FsError as exc:
                return pm_failure(f"Failure [INSTALL_FAILED_INVALID_URI: {exc.strerror}]")
            return self._installed(lambda: pm.install([("base", blob)],
                                                      allow_downgrade="-d" in rest))
        if verb == "install-create":
            return ok(f"Success: created install session [{pm.create(rest)}]\n")
        if verb == "install-write":
            size = _option(rest, "-S")
            plain = [a for i, a in enumerate(rest) if not a.startswith("-")
                     and (i == 0 or rest[i - 1] != "-S")]
            if len(plain) < 2 or not plain[0].isdigit():
                return fail("Error: usage: install-write [-S BYTES] SESSION SPLIT_NAME [PATH|-]", 255)
            session, name = pm.sessions.get(int(plain[0])), plain[1]
            if session is None:
                return fail(f"Exception occurred while executing 'install-write':\n"
                            f"java.lang.SecurityException: Caller has no access to session "
                            f"{plain[0]}", 255)
            path = plain[2] if len(plain) > 2 else "-"
            if path == "-":
                data = await stdin.read_exactly(int(size)) if size is not None else await stdin.read_all()
            else:
                try:
                    data = phone.fs.read(path)
                except FsError as exc:
                    return pm_failure(f"Failure [INSTALL_FAILED_INVALID_URI: {exc.strerror}]")
            if size is not None and len(data) != int(size):
                # The host went away mid-stream: the session stays open, as on a phone.
                return fail(f"Error: wrote {len(data)} of {size} bytes", 255)
            session.apks[name] = data
            return ok(f"Success: streamed {len(data)} bytes\n")
        if verb == "install-commit":
            if not rest or not rest[0].isdigit():
                return fail("Error: usage: install-commit SESSION", 255)
            return self._installed(lambda: pm.commit(int(rest[0])))
        if verb == "install-abandon":
            if not rest or not rest[0].isdigit() or not pm.abandon(int(rest[0])):
                return fail(f"Exception occurred while executing 'install-abandon':\n"
                            f"java.lang.SecurityException: Caller has no access to session "
                            f"{rest[0] if rest else ''}", 255)
            return ok("Success\n")
        if verb == "uninstall":
            pkg = next((a for a in rest if not a.startswith("-")), "")
            if pm.uninstall(pkg):
                phone.log_input("uninstall", package=pkg)
                return ok("Success\n")
            return pm_failure("Failure [DELETE_FAILED_INTERNAL_ERROR]")
        if verb == "clear":
            if rest and rest[-1] in ui.packages():
                ui.force_stop(rest[-1])
                return ok("Success\n")
            return fail("Failed", 1)
        return fail(f"Error: unknown command '{verb}'", 255)

    def _installed(self, install: Callable[[], str]) -> CommandResult:
        try:
            package = install()
        except PmFailure as exc:
            return pm_failure(f"Failure [{exc}]")
        known = self.phone.packages.installed[package]
        self.phone.log_input("install", package=package, version_code=known.version_code,
                             splits=[s for s in known.splits if s != "base"])
        return ok("Success\n")

    # --- uiautomator -----------------------------------------------------------------------
    async def cmd_uiautomator(self, args: list[str], stdin: Stdin) -> CommandResult:
        """`uiautomator dump [--compressed] [FILE]`: the top window's views as Android's XML,
        written to FILE (default /sdcard/window_dump.xml) or, for /dev/tty, printed."""
        if not self.phone.uiautomator:  # `vphone uiautomator off`: a phone without it
            return fail(f"{SHELL_NAME}: uiautomator: inaccessible or not found", 127)
        if not args or args[0] != "dump":
            return fail("Usage: uiautomator <subcommand> [options]\n\nAvailable subcommands:\n\n"
                        "help: displays help message\n\nruntest: executes UI automation tests\n\n"
                        "dump: creates an XML dump of current UI hierarchy\n", 1)
        files = [a for a in args[1:] if not a.startswith("-")]
        target = files[0] if files else UI_DUMP_DEFAULT
        xml = ui_dump_xml(self.phone.ui.element_tree())
        done = f"UI hierchary dumped to: {target}\n"  # sic: Android's own spelling
        if target == "/dev/tty":
            return ok(xml + done)
        try:
            self.phone.fs.write(target, xml.encode())
        except FsError as exc:
            return fail(f"ERROR: could not write {target}: {exc.strerror}", 1)
        return ok(done)

    # --- dumpsys ---------------------------------------------------------------------------
    async def cmd_dumpsys(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone = self.phone
        package, activity = phone.ui.focus()
        what = args[0] if args else ""
        if what == "window":
            return ok(
                "WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
                f"  Window #0 Window{{7a1c2e5 u0 {package}/{activity}}}:\n"
                f"  mCurrentFocus=Window{{7a1c2e5 u0 {package}/{activity}}}\n"
                f"  mFocusedApp=AppWindowToken{{3f1e2d token=Token{{9c0b1a ActivityRecord"
                f"{{5d6e7f u0 {package}/{activity} t12}}}}}}\n")
        if what == "activity":
            return ok(f"  mResumedActivity: ActivityRecord{{5d6e7f u0 {package}/{activity} t12}}\n"
                      f"  ACTIVITY {package}/{activity} 5d6e7f pid=4242\n")
        if what == "display":
            return ok(f"  DisplayDeviceInfo{{\"Built-in Screen\": {phone.width} x {phone.height}, "
                      f"density {phone.density}}}\n"
                      f"  mCurrentOrientation=0\n  orientation=0\n")
        if what == "battery":
            return ok("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
                      "  status: 2\n  health: 2\n  present: true\n  level: 87\n  scale: 100\n"
                      "  temperature: 300\n")
        if what == "package" and len(args) > 1:
            return ok(phone.packages.dumpsys(args[1]))
        if what == "power":
            return ok("  mWakefulness=Awake\n  mHoldingDisplaySuspendBlocker=true\n")
        return ok("")

    # --- the virtual phone itself ----------------------------------------------------------
    async def cmd_vphone(self, args: list[str], stdin: Stdin) -> CommandResult:
        phone = self.phone
        usage = ("usage: vphone log [--clear] | state | popup NAME | popup-after N NAME | "
                 "random-popups on|off | counts freeze|live | uiautomator on|off | unplug SECONDS | slow MS | "
                 "profile | bus | sessions | agent-kill | "
                 "agent-fault corrupt|truncate|header|control-close|clear | help")
        if not args or args[0] == "help":
            return ok(usage + "\n")
        verb, rest = args[0], args[1:]
        if verb == "log":
            text = b"".join(orjson.dumps(e) + b"\n" for e in phone.input_log)
            if "--clear" in rest:
                phone.input_log.clear()
            return ok(text)
        if verb == "state":
            return ok(orjson.dumps(phone.ui.describe()) + b"\n")
        if verb == "profile" and not rest:
            return ok(orjson.dumps(phone.profile.describe()) + b"\n")
        if verb == "sessions" and not rest:  # open install sessions (a test's check)
            return ok(orjson.dumps(sorted(phone.packages.sessions)) + b"\n")
        if verb == "bus" and not rest:
            return ok(orjson.dumps(phone.bus.describe()) + b"\n")
        if verb == "popup" and rest:
            try:
                phone.ui.force_popup(rest[0])
            except KeyError as exc:
                return fail(f"vphone: {exc.args[0] if exc.args else exc}", 2)
            phone.log_input("popup", name=rest[0])
            return ok()
        if verb == "popup-after" and len(rest) == 2:
            try:
                phone.ui.popup_after(int(rest[0]), rest[1])
            except ValueError:
                return fail(f"vphone: popup-after needs a count of 1 or more, got {rest[0]!r}", 2)
            except KeyError as exc:
                return fail(f"vphone: {exc.args[0] if exc.args else exc}", 2)
            return ok()
        if verb == "counts" and rest in (["freeze"], ["live"]):
            phone.ui.freeze_counts(rest[0] == "freeze")
            return ok()
        if verb == "random-popups" and rest in (["on"], ["off"]):
            phone.ui.random_popups = rest[0] == "on"
            return ok()
        if verb == "uiautomator" and rest in (["on"], ["off"]):
            phone.uiautomator = rest[0] == "on"
            return ok()
        if verb == "unplug" and rest:
            try:
                seconds = float(rest[0])
            except ValueError:
                return fail(f"vphone: unplug needs seconds, got {rest[0]!r}", 2)
            phone.schedule_unplug(seconds)
            return ok(f"unplugging for {seconds:g}s\n")
        if verb == "agent-kill" and not rest:
            # Like `kill -9` of the app_process running the scrcpy server: its sockets drop.
            killed = phone.agents.kill_all()
            if not killed:
                return fail("vphone: no agent running", 1)
            return ok("".join(f"killed {name}\n" for name in killed))
        if verb == "agent-fault" and len(rest) == 1:
            # A fault of the running scrcpy server's sockets (ScrcpyServer.inject), once.
            try:
                servers = phone.agents.inject_fault(rest[0])
            except ValueError as exc:
                return fail(f"vphone: {exc}", 2)
            if rest[0] == "clear":
                return ok("".join(f"cleared {name}\n" for name in servers))
            if not servers:
                return fail("vphone: no agent running", 1)
            return ok("".join(f"{rest[0]} armed on {name}\n" for name in servers))
        if verb == "slow" and rest:
            try:
                phone.slow_ms = max(0, int(rest[0]))
            except ValueError:
                return fail(f"vphone: slow needs milliseconds, got {rest[0]!r}", 2)
            return ok()
        return fail(usage, 2)


def ui_dump_xml(tree: dict[str, Any]) -> str:
    """``PhoneUI.element_tree()`` as `uiautomator dump` writes it: one line, a FrameLayout
    for the window holding a node per view."""
    package = tree["package"]

    def node(index: int, n: dict[str, Any], children: str = "") -> str:
        x0, y0, x1, y1 = n["bounds"]
        flag = lambda key: "true" if n.get(key) else "false"  # noqa: E731
        attrs = (f'index="{index}" text={quoteattr(n.get("text", ""))} '
                 f'resource-id={quoteattr(n.get("resource_id", ""))} class={quoteattr(n["class"])} '
                 f'package={quoteattr(package)} content-desc={quoteattr(n.get("content_desc", ""))} '
                 f'checkable="false" checked="false" clickable="{flag("clickable")}" enabled="true" '
                 f'focusable="{flag("focusable")}" focused="{flag("focused")}" scrollable="false" '
                 f'long-clickable="false" password="{flag("password")}" selected="false" '
                 f'hint={quoteattr(n.get("hint", ""))} bounds="[{x0},{y0}][{x1},{y1}]"')
        return f"<node {attrs}>{children}</node>" if children else f"<node {attrs} />"

    inner = "".join(node(i, child) for i, child in enumerate(tree["children"]))
    window = node(0, {"class": "android.widget.FrameLayout", "bounds": tree["bounds"]}, inner)
    return ("<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
            f'<hierarchy rotation="0">{window}</hierarchy>')


MEDIA_SCAN_ACTION = "android.intent.action.MEDIA_SCANNER_SCAN_FILE"
_IMAGES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".heic")
_VIDEOS = (".mp4", ".mov", ".webm", ".3gp", ".mkv")
# The media store's tables `content query` answers: which file types each lists (() = all).
MEDIA_URIS = {"content://media/external/file": (),
              "content://media/external/images/media": _IMAGES,
              "content://media/external/video/media": _VIDEOS}


def _option(args: list[str], flag: str, value_of: str | None = None) -> str | None:
    """Value after ``flag`` (for ``--es KEY VALUE`` give ``value_of=KEY``)."""
    for i, a in enumerate(args):
        if a != flag:
            continue
        if value_of is None:
            return args[i + 1] if i + 1 < len(args) else None
        if i + 2 < len(args) and args[i + 1] == value_of:
            return args[i + 2]
    return None
