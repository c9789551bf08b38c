"""`farm phones`, the actions (tap, long-tap, swipe, text, key, launch, stop), `farm screenshot`
and `farm watch`.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from actors.control.cli.people import add_assign_command
from actors.control.cli.client import EXIT_OK, EXIT_PHONE_FAILED, FarmClient, add_command
from actors.control.cli.format import format_event, format_result, phones_table


def _cmd_phones(client: FarmClient, args: argparse.Namespace) -> int:
    phones = client.get_json("/api/phones")["phones"]
    if args.json:
        print(json.dumps(phones, indent=2))
    else:
        print(phones_table(phones))
    return EXIT_OK


def _action_of(args: argparse.Namespace) -> dict:
    kind = args.command
    if kind == "tap":
        return {"type": "tap", "x": args.x, "y": args.y}
    if kind == "long-tap":
        return {"type": "long_tap", "x": args.x, "y": args.y, "duration_ms": args.ms}
    if kind == "swipe":
        return {"type": "swipe", "x1": args.x1, "y1": args.y1, "x2": args.x2, "y2": args.y2,
                "duration_ms": args.ms}
    if kind == "text":
        return {"type": "text", "text": args.text}
    if kind == "key":
        return {"type": "key", "key": int(args.key) if args.key.isdigit() else args.key,
                "repeat": args.repeat}
    if kind == "launch":
        return {"type": "launch_app", "package": args.package, "activity": args.activity}
    if kind == "stop":
        return {"type": "stop_app", "package": args.package}
    raise AssertionError(kind)


def _cmd_action(client: FarmClient, args: argparse.Namespace) -> int:
    results = client.run_action(args.scope, _action_of(args))
    if not results:
        print(f"farm: scope {args.scope!r} matched no phone", file=sys.stderr)
        return EXIT_PHONE_FAILED
    for serial, result in results.items():
        print(format_result(serial, result))
    failed = any(r.get("status") != "ok" for r in results.values())
    return EXIT_PHONE_FAILED if failed else EXIT_OK


def _cmd_screenshot(client: FarmClient, args: argparse.Namespace) -> int:
    path = f"/api/phones/{urllib.parse.quote(args.serial, safe='')}/screen"
    if args.width is not None:
        path += f"?w={args.width}"
    image, content_type = client.get_bytes(path)
    if args.output == "-":
        sys.stdout.buffer.write(image)
        sys.stdout.flush()
    else:
        with open(args.output, "wb") as f:
            f.write(image)
        print(f"{args.serial}: wrote {args.output} ({len(image)} bytes, {content_type})")
    return EXIT_OK


def _cmd_watch(client: FarmClient, args: argparse.Namespace) -> int:
    seen = 0
    for name, payload in client.events():
        print(format_event(name, payload), flush=True)
        seen += 1
        if args.count and seen >= args.count:
            break
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = add_command(sub, common, "phones", "list phones: serial, node, state, lock, app, screen", _cmd_phones)
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    phones_sub = p.add_subparsers(dest="phones_command")
    add_assign_command(phones_sub, common)

    p = add_command(sub, common, "tap", "tap X Y on every phone of SCOPE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("x", type=int)
    p.add_argument("y", type=int)

    p = add_command(sub, common, "long-tap", "press X Y for --ms milliseconds", _cmd_action)
    p.add_argument("scope")
    p.add_argument("x", type=int)
    p.add_argument("y", type=int)
    p.add_argument("--ms", type=int, default=800, help="press duration (default 800)")

    p = add_command(sub, common, "swipe", "swipe from X1 Y1 to X2 Y2", _cmd_action)
    p.add_argument("scope")
    for coordinate in ("x1", "y1", "x2", "y2"):
        p.add_argument(coordinate, type=int)
    p.add_argument("--ms", type=int, default=300, help="swipe duration (default 300)")

    p = add_command(sub, common, "text", "type TEXT into the focused field", _cmd_action)
    p.add_argument("scope")
    p.add_argument("text")

    p = add_command(sub, common, "key", "press KEY (a keycode number or a name: HOME, BACK, ENTER...)", _cmd_action)
    p.add_argument("scope")
    p.add_argument("key")
    p.add_argument("--repeat", type=int, default=1, help="presses in one go (default 1)")

    p = add_command(sub, common, "launch", "start the app PACKAGE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("package")
    p.add_argument("--activity", default=None, help="activity to start, e.g. .MainActivity")

    p = add_command(sub, common, "stop", "force-stop the app PACKAGE", _cmd_action)
    p.add_argument("scope")
    p.add_argument("package")

    p = add_command(sub, common, "screenshot", "save the phone's latest frame", _cmd_screenshot)
    p.add_argument("serial")
    p.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    p.add_argument("--width", type=int, default=None,
                   help="JPEG thumbnail this many pixels wide instead of the full PNG")

    p = add_command(sub, common, "watch", "follow live events, one line each (times in UTC)", _cmd_watch)
    p.add_argument("--count", type=int, default=0, help="stop after N events")
