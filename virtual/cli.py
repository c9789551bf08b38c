"""`farm-virtual`: start N virtual phones, plug them into an adb server, run until stopped.

An adb server that was not running on ``--adb-port`` is started, and stopped again on the
way out (Ctrl-C, SIGTERM); one found running belongs to someone else and is left alone.
The phones' serials are predictable: 127.0.0.1:40001, 127.0.0.1:40002, .. by default (random
ports, with one warning, when one of those is taken), or from ``--base-port``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from actors.node.device.adb_server import AdbServer, AdbServerError, kill_adb_server, start_adb_server
from actors.process import run_main, setup_logging, starting, stop_signal
from virtual.farm import FarmSpec, VirtualFarm
from virtual.profile import PROFILES

# The first phone's port when --base-port is not given: serials a README can name.
DEFAULT_BASE_PORT = 40001


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="farm-virtual", description=__doc__)
    p.add_argument("--phones", type=int, default=4, help="how many phones (default 4)")
    p.add_argument("--app", action="append", dest="apps",
                   help="app to install: a name under virtual/apps or a JSON path (repeatable)")
    p.add_argument("--base-port", type=int, default=None,
                   help=f"first TCP port: the phones' serials are 127.0.0.1:PORT, PORT+1, .. "
                        f"(default {DEFAULT_BASE_PORT}, random ports when one of those is "
                        f"taken; 0: random ports; avoid 5555-5585)")
    p.add_argument("--adb-port", type=int, default=5037, help="adb server port (default 5037)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="instant",
                   help="what the phones' work costs: instant (default, for tests) or real "
                        "(a real phone's input, screencap and app_process times and one "
                        "35 MB/s USB 2.0 bus for all phones: for figures meant to predict "
                        "hardware)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="1080x2400", help="screen size WxH")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    if args.phones < 1:
        p.error("--phones must be at least 1")
    # Only the default may fall back: a port the operator chose is one they rely on.
    args.random_ports_if_taken = args.base_port is None
    if args.base_port is None:
        args.base_port = DEFAULT_BASE_PORT
    last = args.base_port + args.phones - 1
    if args.base_port and not (1 <= args.base_port and last <= 65535):
        p.error(f"--base-port {args.base_port} with {args.phones} phones needs ports "
                f"{args.base_port}-{last}: outside 1-65535")
    if args.base_port and args.base_port <= 5585 and last >= 5555:
        p.error("--base-port in 5555-5585 collides with adb's emulator auto-discovery")
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must look like 1080x2400, got {args.size!r}")
    return args


def adb_server_running(port: int) -> bool:
    try:
        AdbServer(port=port, timeout=2.0).host_query("host:version")
        return True
    except (AdbServerError, OSError):
        return False


async def run(args: argparse.Namespace) -> None:
    ours = not await asyncio.to_thread(adb_server_running, args.adb_port)
    adb = await asyncio.to_thread(start_adb_server, args.adb_port)
    try:
        farm = VirtualFarm(FarmSpec(phones=args.phones, apps=tuple(args.apps or ["demo"]),
                                    base_port=args.base_port,
                                    random_ports_if_taken=args.random_ports_if_taken,
                                    seed=args.seed, width=args.width, height=args.height,
                                    adb=AdbServer(port=adb.port),
                                    profile=PROFILES[args.profile]))
        try:
            with starting("the virtual phones"):
                await farm.start()
            stop = stop_signal()  # a Ctrl-C answering the serials must find our handler
            for serial in farm.serials:
                print(serial, flush=True)
            await stop.wait()
        finally:
            await farm.stop()
    finally:
        if ours:  # the adb server daemonizes: nothing else would ever stop it
            await asyncio.to_thread(kill_adb_server, adb.port)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    return run_main("farm-virtual", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
