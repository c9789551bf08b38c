"""`farm registry check|identify|path` (locally on a registry folder; the registry modules,
OpenCV included, are imported only when run) and `farm registry apps` (the coordinator's).
"""

from __future__ import annotations

import argparse
import os
import sys

from actors.control.cli.client import EXIT_OK, EXIT_PHONE_FAILED, EXIT_REJECTED, FarmClient
from actors.control.cli.format import align_columns, format_table
from protocol.errors import FarmError


def _registry_dir(args: argparse.Namespace) -> str:
    if args.registry_dir:
        return args.registry_dir
    from registry.load import DEMO_REGISTRY

    return os.environ.get("PHONEFARM_REGISTRY") or str(DEMO_REGISTRY)


def _cmd_registry_check(client: FarmClient, args: argparse.Namespace) -> int:
    from protocol.errors import ValidationErrors
    from registry.check import check_registry

    path = _registry_dir(args)
    try:
        report = check_registry(path)
    except ValidationErrors as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{path}: {len(exc.problems)} problem(s); screenshots not cross-checked until "
              "the registry loads")
        return EXIT_PHONE_FAILED
    for line in report.lines():
        print(line)
    registry = report.registry
    errors = len(report.conflicts) + sum(not d.warning for d in report.dead)
    verdict = "ok" if report.clean else f"{errors} problem(s)"
    print(f"{path}: {verdict}: {len(registry.apps)} apps, {len(registry.screens())} screens, "
          f"{report.frames_checked} screenshots cross-checked, version {registry.version[:16]}")
    return EXIT_OK if report.clean else EXIT_PHONE_FAILED


def explain_lines(match) -> list[str]:
    """One line per region the matcher checked: screen, region, kind, score, threshold,
    pass/fail (and what OCR read)."""
    rows = [[score.screen.label(), score.region, score.kind, f"{score.score:.3f}",
             f"{score.threshold:.3f}", "pass" if score.passed else "fail",
             "" if score.text is None else f"read {score.text!r}"]
            for score in match.scores]
    return ["  " + line for line in align_columns(rows)]


def _cmd_registry_apps(client: FarmClient, args: argparse.Namespace) -> int:
    """The coordinator's registry (GET /api/registry): one line per app."""
    try:
        registry = client.get_json("/api/registry")
    except FarmError as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    print(f"registry version {registry['version'][:16]}")
    print(format_table([[a["name"], a["package"] or "-", "x".join(map(str, a["screen_size"])),
                         ", ".join(a["states"]) or "-", ", ".join(a["interrupts"]) or "-"]
                        for a in registry["apps"]],
                       ["APP", "PACKAGE", "SIZE", "STATES", "INTERRUPTS"]))
    return EXIT_OK


def _load_registry(path: str):
    """The registry at ``path``, or None once its problems are printed (exit 2 then)."""
    from protocol.errors import ValidationErrors
    from registry.load import load_registry

    try:
        return load_registry(path)
    except ValidationErrors as exc:
        print(f"farm: registry {path} is invalid (`farm registry check {path}`):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _cmd_registry_identify(client: FarmClient, args: argparse.Namespace) -> int:
    from registry.check import describe
    from registry.match import Matcher, load_image

    frame = load_image(args.image)  # FarmError naming the file -> exit 2
    path = _registry_dir(args)
    registry = _load_registry(path)
    if registry is None:
        return EXIT_REJECTED
    if args.app is not None and args.app not in registry.apps \
            and registry.app_for_package(args.app) is None:
        print(f"farm: --app {args.app!r} is neither an app nor a package of registry {path} "
              f"(apps: {', '.join(registry.apps)})", file=sys.stderr)
        return EXIT_REJECTED
    match = Matcher(registry).identify(frame, args.app, explain=args.explain)
    print(describe(match))
    if args.explain:
        for line in explain_lines(match):
            print(line)
    return EXIT_OK


def _cmd_registry_path(client: FarmClient, args: argparse.Namespace) -> int:
    """The shortest route of registry actions from one screen of an app to a state: one line
    per hop; exit 1 naming the screens when there is none."""
    from registry.navigation import NoRoute, UnknownScreen, route

    path = _registry_dir(args)
    registry = _load_registry(path)
    if registry is None:
        return EXIT_REJECTED
    app = registry.apps.get(args.app)
    if app is None:
        print(f"farm: no app {args.app!r} in registry {path} (apps: {', '.join(registry.apps)})",
              file=sys.stderr)
        return EXIT_REJECTED
    try:
        hops = route(app, args.start, args.target, args.app)
    except UnknownScreen as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except NoRoute as exc:
        print(f"farm: {exc}", file=sys.stderr)
        return EXIT_PHONE_FAILED
    for hop in hops:
        print(hop.line(args.app))
    if not hops:
        print(f"{args.app}/{args.target}: already there")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    registry_help = ("work on a screen registry folder (check, identify, path: locally, no "
                     "endpoint) or list the coordinator's (apps)")
    p = sub.add_parser("registry", help=registry_help, description=registry_help)
    registry_sub = p.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    dir_help = "registry folder or single JSON file (env PHONEFARM_REGISTRY, default the demo registry)"

    help_text = ("validate the registry and cross-check every screen against every reference "
                 "screenshot; exit 1 on any problem")
    p = registry_sub.add_parser("check", help=help_text, description=help_text)
    p.add_argument("registry_dir", nargs="?", default=None, metavar="DIR", help=dir_help)
    p.set_defaults(func=_cmd_registry_check)

    help_text = "print which registered screen IMAGE shows"
    p = registry_sub.add_parser("identify", help=help_text, description=help_text)
    p.add_argument("image", help="screenshot file (PNG, JPEG)")
    p.add_argument("--app", default=None,
                   help="the app in the foreground (key or package): its screens and the global "
                        "ones are tried; default every app")
    p.add_argument("--registry", dest="registry_dir", default=None, metavar="DIR", help=dir_help)
    p.add_argument("--explain", action="store_true",
                   help="also print one line per region checked: screen, region, kind, score, "
                        "threshold, pass/fail")
    p.set_defaults(func=_cmd_registry_identify)

    help_text = ("the shortest route of registry actions (their linked_state) from screen FROM "
                 "of APP to state TO, the one a go_to step walks: one line per hop; exit 1 "
                 "when there is none")
    p = registry_sub.add_parser("path", help=help_text, description=help_text)
    p.add_argument("app", metavar="APP", help="registry app key (e.g. clipshare)")
    p.add_argument("start", metavar="FROM", help="screen key: a state (feed) or interrupt:KEY")
    p.add_argument("target", metavar="TO", help="state key (e.g. login)")
    p.add_argument("--registry", dest="registry_dir", default=None, metavar="DIR", help=dir_help)
    p.set_defaults(func=_cmd_registry_path)

    help_text = "the coordinator's screen registry: version, and per app its screens"
    p = registry_sub.add_parser("apps", help=help_text, description=help_text, parents=[common])
    p.set_defaults(func=_cmd_registry_apps)
