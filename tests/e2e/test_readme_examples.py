"""README.md's examples, run as a new user runs them: every command of every fenced ``sh``
block, in order, against one `farm-coordinator --demo`, must exit 0.

Skipped: the two set-up commands at the top (they install and start the demo; this test is
the demo) and any example ending in ``# illustrative: <why>`` (it cannot run unattended).
The commands run with bash in the venv's PATH (the README says the venv is active) in a
folder that looks like the repository's (its entries linked in, ``farm-data`` being the
demo's data folder). What this test changes is only where the demo is: its control endpoint
is on a free port (``PHONEFARM_URL``, and in place of http://127.0.0.1:8470 in the curl
examples) and its adb server on a private one (``ANDROID_ADB_SERVER_PORT``, as the README
tells the reader); ``OPENAI_API_KEY`` is a made-up key (the README reads the reader's from
it); ``XDG_CONFIG_HOME`` is an empty folder of the test's (a new user has no stored `farm
login`: `farm` finds the demo's token in ``./farm-data/admin.token`` by itself). The phones' serials are the ones the README names, 127.0.0.1:40001..40006, so the demo
runs on its default ports and the test is skipped, saying so, when those are taken.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.node.device.adb_server import free_port
from tests.e2e.farm_auth import admin_token, api_json
from virtual.cli import DEFAULT_BASE_PORT

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PHONES = 6  # the demo's default, the README's "6 virtual phones"
SERIALS = [f"127.0.0.1:{DEFAULT_BASE_PORT + i}" for i in range(PHONES)]
README_URL = "http://127.0.0.1:8470"  # the demo's address, as the README writes it
SETUP_HEADING = "Set up"  # the heading starts so: "Set up (fresh Debian, as root)"
SETUP_COMMANDS = 2
COMMAND_TIMEOUT_S = 300.0  # a `farm run ... --wait` on every phone, on a busy machine
ILLUSTRATIVE = re.compile(r"\s#\s*illustrative:\s*(?P<why>.*)$")
FAKE_KEY = "sk-readme-example-not-a-real-key"


@dataclass(frozen=True)
class Example:
    """One command line of a fenced sh block: where it is and why it is not run, if so."""

    line: int
    command: str
    heading: str
    skip: str | None = None


def parse_examples(text: str) -> list[Example]:
    """Every command of the fenced ```sh blocks of ``text``, in order. Comment-only lines are
    left out, a trailing backslash joins the next line; an example under the set-up heading
    or ending in ``# illustrative: why`` carries the reason it is skipped."""
    examples: list[Example] = []
    heading, fenced, start, pending = "", False, 0, ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not fenced:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif stripped == "```sh":
                fenced = True
            continue
        if stripped.startswith("```"):
            fenced = False
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        command, pending = pending + stripped, ""
        match = ILLUSTRATIVE.search(command)
        skip = None
        if heading.startswith(SETUP_HEADING):
            skip = "set-up: installs and starts the demo, which this test runs itself"
        elif match:
            skip = f"illustrative: {match.group('why').strip()}"
        examples.append(Example(start, command, heading, skip))
    return examples


EXAMPLES = parse_examples(README.read_text())


def test_the_readme_has_its_setup_commands_and_says_why_it_skips_any_other() -> None:
    setup = [e for e in EXAMPLES if e.heading.startswith(SETUP_HEADING)]
    assert len(setup) == SETUP_COMMANDS, [e.command for e in setup]
    assert "farm-coordinator --demo" in setup[0].command
    for example in EXAMPLES:
        if example.skip and not example.heading.startswith(SETUP_HEADING):
            assert example.skip.removeprefix("illustrative:").strip(), (
                f"README.md:{example.line}: '# illustrative:' needs a reason")
    assert sum(e.skip is None for e in EXAMPLES) >= 20  # the parser found the examples


def test_the_parser_joins_lines_skips_comments_and_honours_illustrative() -> None:
    text = ("# Set up\n```sh\ninstall\n```\n## Use\n```sh\nfarm a \\\n  --b   # note\n"
            "   # a comment line\nfarm watch  # illustrative: never ends\n```\n"
            "```python\nnot_sh()\n```\n")
    assert parse_examples(text) == [
        Example(3, "install", "Set up",
                "set-up: installs and starts the demo, which this test runs itself"),
        Example(7, "farm a --b   # note", "Use"),
        Example(10, "farm watch  # illustrative: never ends", "Use", "illustrative: never ends"),
    ]


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def _phones(url: str) -> list[dict]:
    try:
        return api_json(url + "/api/phones", timeout=5)["phones"]
    except OSError:
        return []


def _wait_for_phones(url: str, timeout: float) -> list[dict]:
    """The phones once all PHONES are online (what there is at ``timeout``)."""
    deadline = time.monotonic() + timeout
    phones = _phones(url)
    while sum(p["state"] == "online" for p in phones) < PHONES and time.monotonic() < deadline:
        time.sleep(0.5)
        phones = _phones(url)
    return phones


@dataclass
class Demo:
    url: str
    workdir: Path
    env: dict[str, str]
    log: Path

    def run(self, command: str) -> subprocess.CompletedProcess:
        """``command`` with bash (pipefail: a failing farm before a pipe counts) in the
        demo's repository-like folder."""
        return subprocess.run(["bash", "-o", "pipefail", "-c",
                               command.replace(README_URL, self.url)],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    taken = [p for p in range(DEFAULT_BASE_PORT, DEFAULT_BASE_PORT + PHONES) if _port_taken(p)]
    if taken:
        pytest.skip(f"the README names the demo's serials {SERIALS[0]}..{SERIALS[-1]}, but "
                    f"port(s) {taken} are taken (another demo or test is running?)")
    workdir = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name != "farm-data":  # the demo's data folder is this test's own
            (workdir / entry.name).symlink_to(entry)
    url = f"http://127.0.0.1:{free_port()}"
    log = workdir / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHONEFARM_", "ANDROID_"))}
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(PHONES),
             "--http", url.removeprefix("http://"), "--listen",
             f"tcp://127.0.0.1:{free_port()}", "--data", str(workdir / "farm-data")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = _first_line(proc, timeout=120)
        adb = re.search(r"demo adb server 127\.0\.0\.1:(\d+)", line)
        assert adb, f"the demo did not start: {line!r}\n{log.read_text()[-3000:]}"
        admin_token(workdir / "farm-data", url)  # for this test's own API calls
        phones = _wait_for_phones(url, timeout=120)
        serials = sorted(p["serial"] for p in phones)
        if serials != SERIALS:
            pytest.skip(f"the demo's phones are {serials}, not the README's {SERIALS} (their "
                        f"ports were taken in the meantime: another demo or test?)")
        assert all(p["state"] == "online" for p in phones), phones
        bin_dir = str(Path(sys.executable).parent)
        yield Demo(url, workdir, {
            **env, "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "VIRTUAL_ENV": str(Path(bin_dir).parent), "PHONEFARM_URL": url,
            "ANDROID_ADB_SERVER_PORT": adb.group(1), "OPENAI_API_KEY": FAKE_KEY,
            "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("readme-config"))}, log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{e.line}" for e in EXAMPLES])
def test_readme_example_runs(demo: Demo, example: Example) -> None:
    if example.skip:
        pytest.skip(example.skip)
    done = demo.run(example.command)
    assert done.returncode == 0, (
        f"README.md:{example.line}: `{example.command}` exited {done.returncode}\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}")


# What a schedule example starts when it fires, started now (an immediate schedule of the
# same sequence and scope) from wherever the examples left the phones: `farm schedule add`
# exiting 0 says nothing about whether its sequence can run when the time comes.
SCHEDULE = re.compile(r"^farm schedule add (?P<sequence>[\w/]+) (?P<scope>'[^']+'|\S+)")
SCHEDULED = [m for e in EXAMPLES if not e.skip and (m := SCHEDULE.match(e.command))]
ENDED = {"completed", "cancelled", "failed"}


def _api(url: str, path: str, body: dict | None = None) -> dict:
    return api_json(url + path, body, timeout=30)


# (The cron example's clipshare/login, on phones the examples leave on the profile, failed so
# until the library's sequences began with a go_to.)
@pytest.mark.parametrize("sequence, scope", [(m["sequence"], m["scope"].strip("'"))
                                             for m in SCHEDULED],
                         ids=[m["sequence"] for m in SCHEDULED])
def test_what_a_readme_schedule_starts_runs_now(demo: Demo, sequence: str, scope: str) -> None:
    _wait_for_phones(demo.url, timeout=60)  # the README's last example unplugs a phone for 3 s
    schedule = _api(demo.url, "/api/schedules",
                    {"type": "immediate", "sequence": sequence, "target": scope})
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    while schedule["status"] not in ENDED or set(schedule["jobs"]) & {"queued", "running"}:
        assert time.monotonic() < deadline, f"schedule still {schedule['status']}: {schedule}"
        time.sleep(1.0)
        schedule = next(s for s in _api(demo.url, "/api/schedules")["schedules"]
                        if s["id"] == schedule["id"])
    if set(schedule["jobs"]) != {"completed"}:
        events = _api(demo.url, f"/api/schedules/{schedule['id']}/events")
        raise AssertionError(f"{sequence} on {scope}: {schedule}\n{events['events'][-10:]}")
