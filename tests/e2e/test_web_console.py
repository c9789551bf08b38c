"""The web console in a real browser (Debian chromium driven by Playwright) against a real
`farm-coordinator --demo` with 6 virtual phones: the wall shows every phone's live screen,
a drag selects a range and a tap lands on exactly those phones (checked on the phones
themselves, `vphone log`), a long press and a swipe arrive as such, the text dialog types one
variant of a spintax text, and a region drawn in edit mode is saved to the registry.
Screenshots of the wall go to tests/out/ for review."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from actors.node.device.adb_server import AdbServer, free_port
from actors.node.device.driver import DeviceDriver
from tests.e2e.farm_auth import admin_token, api_json, auth_headers, sign_in_console

sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "out"
CHROMIUM = "/usr/bin/chromium"
PHONES = 6

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


def api(base: str, path: str):
    return api_json(base + path, timeout=10)


class Farm:
    """A `farm-coordinator --demo` process group and what the test needs to reach it."""

    def __init__(self, tmp: Path) -> None:
        http = free_port()
        self.base = f"http://127.0.0.1:{http}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "actors.coordinator", "--demo", "--phones", str(PHONES),
             "--http", f"127.0.0.1:{http}", "--listen", f"tcp://127.0.0.1:{free_port()}",
             "--data", str(tmp / "data"), "--log-level", "WARNING", "--base-port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True)
        line = self.proc.stdout.readline()
        match = re.search(r"demo adb server 127\.0\.0\.1:(\d+)", line)
        assert match, f"coordinator did not start: {line!r}"
        self.adb = AdbServer(port=int(match.group(1)))
        admin_token(tmp / "data", self.base)  # the API and the console's pages log in with it
        deadline = time.monotonic() + 60
        phones: list[dict] = []
        while time.monotonic() < deadline:
            try:
                phones = api(self.base, "/api/phones")["phones"]
            except OSError:
                pass
            if sum(p["state"] == "online" for p in phones) == PHONES:
                break
            time.sleep(0.2)
        assert sum(p["state"] == "online" for p in phones) == PHONES, phones
        self.serials = sorted(p["serial"] for p in phones)

    def log(self, serial: str) -> list[dict]:
        out = DeviceDriver(serial, self.adb).shell("vphone log").text
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def clear_logs(self) -> None:
        for serial in self.serials:
            DeviceDriver(serial, self.adb).shell("vphone log --clear")

    def wait_inputs(self, serials: list[str], kind: str | tuple[str, ...],
                    timeout: float = 30) -> dict[str, list[dict]]:
        """Each phone's log entries of ``kind`` (or of any of the kinds) once every one of
        ``serials`` has one."""
        kinds = (kind,) if isinstance(kind, str) else kind
        deadline = time.monotonic() + timeout
        while True:
            found = {s: [e for e in self.log(s) if e["kind"] in kinds] for s in self.serials}
            if all(found[s] for s in serials) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def wait_online(self, serials: list[str], timeout: float = 60) -> None:
        """Until the coordinator says every one of ``serials`` is online (its node is up)."""
        deadline = time.monotonic() + timeout
        while True:
            phones = {p["serial"]: p for p in api(self.base, "/api/phones")["phones"]}
            if all(phones.get(s, {}).get("state") == "online" for s in serials):
                return
            assert time.monotonic() < deadline, {s: phones.get(s) for s in serials}
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = Farm(tmp_path_factory.mktemp("console"))
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def page(farm):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in_console(page, farm.base)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(farm.base + "/")
        page.errors = errors
        yield page
        browser.close()
    assert not errors, errors


def screen_box(page, serial: str) -> dict:
    return page.locator(f'.phone[data-serial="{serial}"] .screen').first.bounding_box()


def at(box: dict, fx: float, fy: float) -> tuple[float, float]:
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def set_mode(page, mode: str) -> None:
    page.check(f"input[name=mode][value={mode}]")
    page.wait_for_function("mode => document.body.classList.contains('mode-action') === (mode === 'action')",
                           arg=mode)


def settled_screen_box(page, serial: str) -> dict:
    """The phone's screen box on the wall once the wall's layout holds still for two frames.
    Switching the mode rewrites the toolbar's hint, which may wrap onto a second line: the
    wall gets shorter at once, and its tiles are resized on a later frame (ResizeObserver),
    so a box read in between is not where the tile is when the click comes."""
    return page.evaluate("""async (serial) => {
        const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
        const screen = document.querySelector(`#wall .phone[data-serial="${serial}"] .screen`);
        let last = "";
        for (;;) {
            await frame(); await frame();
            const r = screen.getBoundingClientRect();
            const box = {x: r.x, y: r.y, width: r.width, height: r.height};
            if (JSON.stringify(box) === last) return box;
            last = JSON.stringify(box);
        }
    }""", serial)


def is_action_post(response) -> bool:
    return response.request.method == "POST" and response.url.split("?")[0].endswith("/api/actions")


def click_for_actions(page, x: float, y: float, expected: set[str],
                      timeout: float = 90) -> list:
    """Click at (x, y) and return every ``POST /api/actions`` answer the click made, once
    their results name every phone of ``expected`` (or ``timeout`` s passed). The console
    sends one request per screen size: a phone whose size the coordinator does not know
    yet (it comes with the phone's first thumbnail) takes the size its tile's live frame
    implies, which may round a pixel apart from the others', and goes in a request of its
    own (CI once saw a click's first answer name one of three phones)."""
    answers: list = []

    def collect(response) -> None:
        if is_action_post(response):
            answers.append(response)

    page.on("response", collect)
    try:
        page.mouse.click(x, y)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not expected <= {
                s for r in answers for s in r.json().get("results", {})}:
            page.wait_for_timeout(100)
    finally:
        page.remove_listener("response", collect)
    return answers


def test_wall_shows_every_phone_live(farm, page):
    page.wait_for_function(
        f"[...document.querySelectorAll('#wall .phone img')].filter(i => i.naturalWidth > 0)"
        f".length === {PHONES}", timeout=20000)
    tiles = page.locator("#wall .phone")
    assert tiles.count() == PHONES
    assert page.locator("#wall .phone .number").all_inner_texts() == [str(i) for i in range(1, PHONES + 1)]
    assert page.locator("#phone-list tbody tr").count() == PHONES
    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / "console-wall.png"))


def test_drag_selects_a_range_and_a_tap_lands_on_exactly_those(farm, page):
    set_mode(page, "select")
    chosen = farm.serials[1:4]
    first, last = screen_box(page, chosen[0]), screen_box(page, chosen[-1])
    page.mouse.move(*at(first, 0.5, 0.5))
    page.mouse.down()
    page.mouse.move(*at(last, 0.5, 0.5), steps=8)
    page.mouse.up()
    selected = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    assert selected == chosen
    assert page.inner_text("#selection-count") == f"{len(chosen)} selected"
    page.screenshot(path=str(OUT / "console-wall-selected.png"))
    farm.clear_logs()
    set_mode(page, "action")
    # Each click goes to exactly the selected phones; what the console sent is read from its
    # request and each phone's log once the answer says the action was done, not guessed
    # from a log that a loaded machine may fill only after a fixed wait. Two things a loaded
    # CI machine does are no fault of the console, and such a click is tried again:
    # - the coordinator hears no heartbeat from the demo node for 3 s and takes it for down:
    #   its phones are offline until it is back, an action meanwhile answers "gone" and
    #   reaches no phone (every phone logged nothing);
    # - a press held 500 ms is a long tap by design. Playwright sends the press and the
    #   release as two messages to the browser, which may get them more than 500 ms apart
    #   (the console sends a long tap), and the scrcpy agent's down and up may reach a loaded
    #   phone as far apart (the console sends a tap, the phone sees a long press).
    tries = []
    for attempt in range(5):
        farm.wait_online(chosen)
        page.wait_for_function("""chosen => chosen.every((s) => {
            const tile = document.querySelector(`#wall .phone[data-serial="${s}"]`);
            return tile.classList.contains("selected") && !tile.classList.contains("offline");
        })""", arg=chosen, timeout=60_000)
        box = settled_screen_box(page, chosen[1])
        answers = click_for_actions(page, *at(box, 0.5, 0.62), expected=set(chosen))
        assert answers, "the click sent no action"
        assert all(r.status == 200 for r in answers), [(r.status, r.text()) for r in answers]
        actions = [json.loads(r.request.post_data)["action"] for r in answers]
        results = {s: v for r in answers for s, v in r.json()["results"].items()}
        assert set(results) == set(chosen), (actions, results)  # exactly the selected phones
        assert len({a["type"] for a in actions}) == 1, actions  # one gesture, one kind
        action = actions[0]
        assert action["type"] in ("tap", "long_tap"), (action, tries)
        assert all(r["status"] in ("ok", "gone") for r in results.values()), (action, results, tries)
        done = [s for s in chosen if results[s]["status"] == "ok"]
        inputs = farm.wait_inputs(done, ("tap", "long_press"))
        kinds = {s: [e["kind"] for e in farm.log(s)] for s in farm.serials}
        assert all(inputs[s] for s in done), (action, kinds)
        if len(done) == len(chosen) and action["type"] == "tap" and not any(
                "long_press" in kinds[s] for s in chosen):
            break
        tries.append((action["type"], {s: r["status"] for s, r in results.items()}, kinds))
        farm.clear_logs()
    else:
        pytest.fail(f"no click arrived as a tap on every selected phone: {tries}")
    taps = farm.wait_inputs(chosen, "tap")
    assert {s for s, entries in taps.items() if entries} == set(chosen)
    size = next(p for p in api(farm.base, "/api/phones")["phones"] if p["serial"] == chosen[0])["screen_size"]
    for serial in chosen:
        (tap,) = taps[serial]
        assert abs(tap["x"] - size[0] * 0.5) <= size[0] * 0.02
        assert abs(tap["y"] - size[1] * 0.62) <= size[1] * 0.02


def test_a_release_the_busy_page_handles_late_is_still_a_tap(farm, page):
    """A gesture lasts from the press to the release as the input happened (the events'
    timeStamp), not as the page got to them: here both events are made at once and the
    page is kept busy 700 ms between handling them (as sixty live screens may)."""
    set_mode(page, "action")
    chosen = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    assert len(chosen) == 3
    farm.clear_logs()
    box = screen_box(page, chosen[0])
    x, y = at(box, 0.4, 0.55)
    page.evaluate("""([x, y]) => {
        const screen = document.elementFromPoint(x, y);
        const init = {bubbles: true, cancelable: true, clientX: x, clientY: y, button: 0,
                      buttons: 1, pointerId: 1, isPrimary: true, pointerType: "mouse"};
        const down = new PointerEvent("pointerdown", init);
        const up = new PointerEvent("pointerup", {...init, buttons: 0});
        try { screen.dispatchEvent(down); } catch (e) {}  // pointer capture of a made event
        const until = performance.now() + 700;
        while (performance.now() < until) {}
        screen.dispatchEvent(up);
    }""", [x, y])
    taps = farm.wait_inputs(chosen, "tap")
    assert {s for s, entries in taps.items() if entries} == set(chosen), [
        (s, [e["kind"] for e in farm.log(s)]) for s in chosen]


def test_long_press_and_swipe_arrive_as_such(farm, page):
    set_mode(page, "action")
    chosen = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    assert len(chosen) == 3
    farm.clear_logs()
    box = screen_box(page, chosen[0])
    page.mouse.move(*at(box, 0.3, 0.7))
    page.mouse.down()
    page.wait_for_timeout(800)
    page.mouse.up()
    presses = farm.wait_inputs(chosen, "long_press")
    assert {s for s, e in presses.items() if e} == set(chosen)
    assert all(presses[s][0]["duration_ms"] >= 500 for s in chosen)
    page.mouse.move(*at(box, 0.5, 0.75))
    page.mouse.down()
    page.mouse.move(*at(box, 0.5, 0.45), steps=10)
    page.mouse.up()
    swipes = farm.wait_inputs(chosen, "swipe")
    assert {s for s, e in swipes.items() if e} == set(chosen)
    for serial in chosen:
        swipe = swipes[serial][0]
        assert swipe["y1"] > swipe["y2"] and abs(swipe["x1"] - swipe["x2"]) < 30


def test_curved_drag_arrives_as_a_swipe_through_its_middle_points(farm, page):
    """A drag along a half circle reaches exactly the selected phones as one swipe (touch
    events through the scrcpy agent, `input motionevent` on the shell path) whose path bends
    out to the far side of the arc, in each phone's pixels."""
    set_mode(page, "action")
    chosen = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    assert len(chosen) == 3
    farm.clear_logs()
    box = screen_box(page, chosen[0])
    n = 24
    arc = [(0.5 + 0.3 * math.sin(math.pi * i / (n - 1)), 0.8 - 0.5 * i / (n - 1)) for i in range(n)]
    page.mouse.move(*at(box, *arc[0]))
    page.mouse.down()
    for point in arc[1:]:
        page.wait_for_timeout(20)  # a hand's pace: the console keeps one point per frame
        page.mouse.move(*at(box, *point))
    page.mouse.up()
    swipes = farm.wait_inputs(chosen, "swipe")
    assert {s for s, e in swipes.items() if e} == set(chosen)
    phones = {p["serial"]: p for p in api(farm.base, "/api/phones")["phones"]}
    for serial in chosen:
        (swipe,) = swipes[serial]
        w, h = phones[serial]["screen_size"]
        assert swipe["via"] == ("agent" if phones[serial]["io"] == "agent" else "motionevent"), swipe
        path = swipe["path"]
        assert 4 <= len(path) <= 64
        assert abs(path[0][0] - 0.5 * w) <= w * 0.02 and abs(path[0][1] - 0.8 * h) <= h * 0.02
        assert abs(path[-1][0] - 0.5 * w) <= w * 0.02 and abs(path[-1][1] - 0.3 * h) <= h * 0.02
        # Through the middle: the arc's far side (x = 0.8 w, halfway up), not a straight line.
        middle = min(path[1:-1], key=lambda p: abs(p[1] - 0.55 * h))
        assert abs(middle[0] - 0.8 * w) <= w * 0.04, path
        assert [p[1] for p in path] == sorted((p[1] for p in path), reverse=True)


def test_custom_tags_from_the_panel_reach_the_api_and_the_scopes(farm, page):
    chosen = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    page.fill("#tag-name", "batch-a")
    page.click("#tag-add")
    page.wait_for_function("document.querySelectorAll('#wall .tag-badge').length === 3")
    tagged = {p["serial"] for p in api(farm.base, "/api/phones")["phones"] if "batch-a" in p["tags"]}
    assert tagged == set(chosen)
    page.select_option("#filter-tag", "batch-a")
    assert page.locator("#phone-list tbody tr").count() == 3
    page.select_option("#filter-tag", "")
    body = json.dumps({"scope": "phone:batch-a", "action": {"type": "screenshot"}}).encode()
    out = json.loads(urllib.request.urlopen(urllib.request.Request(
        farm.base + "/api/actions", data=body,
        headers=auth_headers(farm.base, {"Content-Type": "application/json"})),
        timeout=60).read())
    assert set(out["results"]) == set(chosen)


def test_text_dialog_types_a_spintax_variant(farm, page):
    set_mode(page, "action")
    chosen = page.eval_on_selector_all("#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    farm.clear_logs()
    page.mouse.click(*at(screen_box(page, chosen[0]), 0.5, 0.5), button="right")
    dialog = page.locator("#text-dialog")
    dialog.locator("textarea").fill("{alpha|beta} gamma ${profile.last_name}")
    page.wait_for_function("document.querySelector('#text-dialog .preview').textContent.includes('gamma')")
    assert dialog.locator(".categories button").count() >= 5
    dialog.locator("button[value=type]").click()
    texts = farm.wait_inputs(chosen, "text")
    assert {s for s, e in texts.items() if e} == set(chosen)
    for serial in chosen:
        assert re.fullmatch(r"(alpha|beta) gamma Demo\d+", texts[serial][0]["text"]), texts[serial]


def test_recording_saves_the_taps_as_a_sequence(farm, page):
    set_mode(page, "select")
    lead = farm.serials[4]
    page.mouse.click(*at(screen_box(page, lead), 0.5, 0.5))
    page.fill("#rec-name", "console_rec")
    page.click("#rec-start")
    page.wait_for_function("document.querySelector('#rec-state').textContent.startsWith('recording')")
    set_mode(page, "action")
    before = page.evaluate("window.__console.actions.length")
    page.mouse.click(*at(screen_box(page, lead), 0.5, 0.66))
    page.wait_for_function(f"window.__console.actions.length > {before}")
    page.click("#rec-stop")
    page.wait_for_function("document.querySelector('#rec-state').textContent.startsWith('saved')")
    path = re.match(r"saved (.+) \(\d+ steps\)", page.inner_text("#rec-state")).group(1)
    steps = json.loads(Path(path).read_text())["steps"]
    taps = [s for s in steps if s["type"] == "tap"]
    assert len(taps) == 1 and abs(taps[0]["y"] - 2400 * 0.66) < 50, steps


def test_region_drawn_in_edit_mode_is_saved_to_the_registry(farm, page):
    """Edit mode: draw, move, resize and delete boxes, name them, link an action to a state,
    save; the registry holds what was drawn (in the app's screen_size space)."""
    try:
        api(farm.base, "/api/registry")
    except urllib.error.HTTPError as exc:
        pytest.xfail(f"the registry store routes are not on this coordinator yet (GET "
                     f"/api/registry: HTTP {exc.code})")
    set_mode(page, "select")
    serial = farm.serials[0]
    page.mouse.click(*at(screen_box(page, serial), 0.5, 0.5))
    page.click("#edit-screen")
    canvas = page.locator("#editor-canvas")
    canvas.wait_for()
    page.select_option("#page-editor [name=app]", "launcher")
    page.fill("#page-editor [name=screen]", "console_probe")
    page.fill("#page-editor [name=description]", "drawn by the browser test")
    box = canvas.bounding_box()

    def drag(fx1: float, fy1: float, fx2: float, fy2: float) -> None:
        page.mouse.move(box["x"] + box["width"] * fx1, box["y"] + box["height"] * fy1)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * fx2, box["y"] + box["height"] * fy2, steps=5)
        page.mouse.up()

    names = page.locator("#editor-boxes input[aria-label='box name']")
    drag(0.1, 0.02, 0.5, 0.06)                 # draw a region
    names.nth(0).fill("status_bar")
    drag(0.3, 0.04, 0.3, 0.14)                 # move it 10% down
    drag(0.5, 0.16, 0.6, 0.18)                 # resize by its bottom-right corner
    drag(0.1, 0.3, 0.3, 0.35)                  # a second region ...
    assert names.count() == 2
    page.locator("#editor-boxes tr").nth(2).locator("button").click()  # ... deleted
    page.check("#page-editor input[name=tool][value=action]")
    drag(0.6, 0.5, 0.8, 0.55)                  # an action box leading to the home state
    names.nth(1).fill("open_home")
    page.locator("#editor-boxes tr").nth(2).locator("select").nth(1).select_option("home")
    page.locator("#editor-boxes tr").nth(2).locator("input[type=checkbox]").uncheck()  # go_to
    page.click("#editor-save")
    page.wait_for_function("document.querySelector('#editor-result').textContent.length > 0")
    result = page.inner_text("#editor-result")
    page.screenshot(path=str(OUT / "console-editor.png"))
    assert result.startswith("saved"), result
    saved = api(farm.base, "/api/registry/apps/launcher")["states"]["console_probe"]
    (region,) = saved["validation_regions"]
    assert region["name"] == "status_bar"
    near = lambda got, want: all(abs(g - w) < 30 for g, w in zip(got, want))  # noqa: E731
    assert near(region["coordinates"], (108, 288, 648, 432)), region
    (action,) = saved["actions"]
    assert action["name"] == "open_home" and action["linked_state"] == "home"
    assert action["navigation"] is False
    assert near(action["coordinates"], (648, 1200, 864, 1320)), action
    # The probe matches the home screen too: drop it, or home becomes ambiguous (unknown).
    urllib.request.urlopen(urllib.request.Request(
        farm.base + "/api/registry/apps/launcher/screens/console_probe?reason=test+cleanup",
        method="DELETE", headers=auth_headers(farm.base)), timeout=30).read()


def test_unknown_screen_proposal_is_predrawn_and_approved(farm, page):
    """The unknown-screens queue shows the discovery proposal pre-drawn in edit mode and
    approving it (renamed) writes the screen into the registry."""
    for path in ("/api/registry", "/api/discovery"):
        try:
            api(farm.base, path)
        except urllib.error.HTTPError as exc:
            pytest.xfail(f"the registry/discovery routes are not on this coordinator yet "
                         f"(GET {path}: HTTP {exc.code})")
    serial = farm.serials[5]

    def post(path: str, body: dict) -> dict:
        return api_json(farm.base + path, body)

    # Log in (the library sequence) so the phone shows ClipShare's feed.
    run_id = post("/api/runs", {"sequence": "clipshare/login", "scope": f"phone:{serial}"})["run_id"]
    # 60 s: the login takes a few seconds, but CI saw it pass 30 s on a loaded 2-core machine.
    deadline = time.monotonic() + 60
    while api(farm.base, f"/api/runs/{run_id}")["status"] == "running":
        assert time.monotonic() < deadline, f"login did not finish: {api(farm.base, f'/api/runs/{run_id}')}"
        time.sleep(0.3)
    assert api(farm.base, f"/api/runs/{run_id}")["status"] == "completed"
    # Make the feed's video-options dialog unknown (once the node has that registry), then
    # open it with a long press.
    req = urllib.request.Request(
        farm.base + "/api/registry/apps/clipshare/screens/video_options?reason=browser+test",
        method="DELETE", headers=auth_headers(farm.base))
    version = json.loads(urllib.request.urlopen(req, timeout=30).read())["version"]
    deadline = time.monotonic() + 30
    while any(n.get("registry_version") != version for n in api(farm.base, "/api/nodes")["nodes"]):
        assert time.monotonic() < deadline, ("registry not pushed", api(farm.base, "/api/nodes"))
        time.sleep(0.2)
    # A loaded machine may take the demo node for down for a moment (3 s without a
    # heartbeat): the press then answers "gone" and reaches no phone, and is sent again.
    answers = []
    for attempt in range(5):
        farm.wait_online([serial])
        results = post("/api/actions", {"scope": f"phone:{serial}", "action": {
            "type": "long_tap", "x": 540, "y": 1000, "duration_ms": 900}})["results"]
        answers.append(results[serial]["status"])
        assert answers[-1] in ("ok", "gone"), results
        if answers[-1] == "ok":
            break
    else:
        pytest.fail(f"the long press reached no phone: {answers}")

    def dialog_entry() -> str | None:
        """The queued entry of the dialog on our phone, once a proposal exists for it."""
        entries = [e["id"] for e in api(farm.base, "/api/unknown-screens")["unknown_screens"]
                   if serial in e.get("serials", [e.get("serial")])
                   and e.get("previous_screen") == "clipshare/feed"]
        open_ = {p["unknown_screen"] for p in api(farm.base, "/api/discovery")["proposals"]
                 if p["status"] not in ("approved", "discarded")}
        return next((e for e in entries if e in open_), None)

    deadline = time.monotonic() + 90
    while (entry := dialog_entry()) is None:
        assert time.monotonic() < deadline, (
            "no discovery proposal for the unknown dialog", api(farm.base, "/api/unknown-screens"),
            api(farm.base, "/api/discovery"), farm.log(serial)[-5:])
        time.sleep(0.3)
    proposal = next(p for p in api(farm.base, "/api/discovery")["proposals"]
                    if p["unknown_screen"] == entry)
    page.goto(farm.base + "/#unknown")
    card = page.locator(f'.unknown-card[data-id="{entry}"]')
    card.locator("img[src]").wait_for()
    card.locator("button >> text=Review").click()
    page.wait_for_selector("#page-editor h3:has-text('Proposal')")
    page.wait_for_function("document.querySelectorAll('#editor-boxes tr').length > 1")
    page.select_option("#page-editor [name=app]", "clipshare")  # the reviewer decides
    page.fill("#page-editor [name=screen]", "video_menu")
    page.click("#editor-save")
    page.wait_for_function("document.querySelector('#editor-result').textContent.length > 0")
    result = page.inner_text("#editor-result")
    page.screenshot(path=str(OUT / "console-unknown-approved.png"))
    assert result.startswith("saved clipshare/video_menu"), result
    app = api(farm.base, "/api/registry/apps/clipshare")
    saved = {**app["states"], **app["interrupts"]}["video_menu"]
    # What was approved is what the proposal pre-drew (through the page's coordinate scaling).
    proposed = {r["name"]: r["coordinates"] for r in proposal["regions"]}
    approved = {r["name"]: r["coordinates"] for r in saved["validation_regions"]}
    assert approved.keys() == proposed.keys() and proposed
    for name, box in proposed.items():
        assert all(abs(a - b) <= 2 for a, b in zip(approved[name], box)), (name, box, approved)


def test_token_is_asked_once_and_sent_with_every_request_and_the_stream(page):
    """With an access token the console asks for it once and sends it as a bearer header,
    frames and the status stream included (the stream is read with fetch: EventSource
    cannot send headers). The endpoint here is a real aiohttp app over the unit tests' fake
    hub, in a thread."""
    import asyncio
    import threading

    from aiohttp import web

    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from actors.control.app import make_app
    from fake_hub import FakeHub

    hub, port, loop = FakeHub(), free_port(), asyncio.new_event_loop()
    runner = web.AppRunner(make_app(hub, token="s3cret"))
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    context = page.context.browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        console = context.new_page()
        console.goto(f"http://127.0.0.1:{port}/")
        console.wait_for_selector("#login form", state="visible")
        console.click("#login .switch")  # an access token instead of a user's password
        console.fill("#login [name=token]", "s3cret")
        console.click("#login button.primary")
        phones = len(hub.phones())
        console.wait_for_function(f"window.__console.framesLoaded >= {phones}", timeout=15000)
        console.wait_for_selector("#stream-state.on")
        before = console.evaluate("window.__console.framesLoaded")
        serial = hub.phones()[0]["serial"]
        loop.call_soon_threadsafe(lambda: hub.publish("thumbnail", serial=serial, node="rack1",
                                                      url=f"/api/phones/{serial}/screen?w=270"))
        console.wait_for_function(f"window.__console.framesLoaded > {before}", timeout=10000)
        assert console.locator("#login").is_hidden()
    finally:
        context.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_hidden_phones_load_no_frames(farm, page):
    """Scrolled out of view (fit width: one row of five on screen), a phone's new screens
    are not fetched; the visible ones are."""
    page.goto(farm.base + "/#wall")
    page.set_viewport_size({"width": 1900, "height": 600})  # 300 px wide phones: row 2 below
    page.select_option("#wall-fit", "width")
    hidden = farm.serials[5]
    page.wait_for_function(
        f"""(() => {{ const r = document.querySelector('.phone[data-serial="{hidden}"]')
                      .getBoundingClientRect(); return r.top >= innerHeight; }})()""")
    page.wait_for_timeout(500)  # frames already asked for land
    before = page.evaluate("({...window.__console.loads})")
    # A key that changes every screen (the live wall sends a frame only when the screen changes).
    body = json.dumps({"scope": "phone:all", "action": {"type": "key", "key": "APP_SWITCH"}}).encode()
    urllib.request.urlopen(urllib.request.Request(
        farm.base + "/api/actions", data=body,
        headers=auth_headers(farm.base, {"Content-Type": "application/json"})),
        timeout=60).read()
    visible = farm.serials[:5]
    page.wait_for_function(
        f"{json.dumps(visible)}.every(s => (window.__console.loads[s] || 0) > "
        f"({json.dumps(before)}[s] || 0))", timeout=15000)
    page.wait_for_timeout(1000)
    after = page.evaluate("({...window.__console.loads})")
    assert after.get(hidden, 0) == before.get(hidden, 0)
    page.select_option("#wall-fit", "window")
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_hidden_tab_loads_no_frames_until_shown_again(farm, page):
    """A tab in the background (document.hidden, as the browser reports it) fetches no frames
    at all, even when every phone's screen changes; shown again, the wall catches up."""
    page.goto(farm.base + "/#wall")
    page.wait_for_function(
        f"[...document.querySelectorAll('#wall .phone img')].filter(i => i.naturalWidth > 0)"
        f".length === {PHONES}", timeout=20000)
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
        Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    page.wait_for_timeout(500)  # frames already asked for land
    before = page.evaluate("window.__console.framesLoaded")
    body = json.dumps({"scope": "phone:all", "action": {"type": "key", "key": "HOME"}}).encode()
    urllib.request.urlopen(urllib.request.Request(
        farm.base + "/api/actions", data=body,
        headers=auth_headers(farm.base, {"Content-Type": "application/json"})),
        timeout=60).read()
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__console.framesLoaded") == before
    page.evaluate("""() => {
        delete document.hidden; delete document.visibilityState;  // the prototype's again
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    assert page.evaluate("document.hidden") is False
    page.wait_for_function(f"window.__console.framesLoaded >= {before} + {PHONES}", timeout=15000)


def post_json(base: str, path: str, body: dict | None = None) -> dict:
    return api_json(base + path, body or {})


def test_executions_page_follows_runs_started_elsewhere(farm, page):
    """With the executions page open, a run started through the API shows up and reaches its
    final status without a press on Refresh (run events on the stream reload the list)."""
    page.goto(farm.base + "/#executions")
    page.wait_for_selector("#page-executions table")
    serial = farm.serials[3]
    post_json(farm.base, "/api/runs", {"scope": f"phone:{serial}", "sequence": {
        "name": "console_live", "steps": [{"type": "tap", "x": 540, "y": 2300}]}})
    page.wait_for_function(
        "[...document.querySelectorAll('#page-executions tr.clickable')].some(r =>"
        " r.textContent.includes('console_live') && r.textContent.includes('completed'))",
        timeout=30000)


def test_executions_page_lists_filters_and_opens_a_run_with_its_failure_screenshot(farm, page):
    """Two runs through the API, one passing and one failing on its first step: the page lists
    both, the status, phone and sequence filters narrow the list, and opening the failed one
    shows its steps and the failure screenshot (the image loads)."""
    ok_phone, bad_phone = farm.serials[0], farm.serials[1]
    ok = post_json(farm.base, "/api/runs", {"scope": f"phone:{ok_phone}", "sequence": {
        "name": "console_ok", "steps": [{"type": "tap", "x": 540, "y": 2300}]}})
    bad = post_json(farm.base, "/api/runs", {"scope": f"phone:{bad_phone}", "sequence": {
        "name": "console_fail", "retry": {"immediate": 0, "short": 0},
        "steps": [{"type": "expect_screen", "screen": "clipshare/settings"}]}})
    deadline = time.monotonic() + 60
    for run in (ok, bad):
        while api(farm.base, f"/api/runs/{run['run_id']}")["status"] in ("pending", "running"):
            assert time.monotonic() < deadline, api(farm.base, f"/api/runs/{run['run_id']}")
            time.sleep(0.2)
    assert api(farm.base, f"/api/runs/{bad['run_id']}")["status"] == "failed"
    bad_id = bad["executions"][bad_phone]["execution_id"]
    page.goto(farm.base + "/#executions")
    root = page.locator("#page-executions")
    rows = root.locator("tr.clickable")

    def shown() -> list[tuple[str, str, str]]:
        """(sequence, phone, status) of each listed row."""
        return [tuple(r.locator("td").nth(i).inner_text() for i in (1, 2, 4))
                for r in rows.all()]

    # The page may already be the executions page (same address: no reload), following the
    # runs through stream-driven reloads at most once a second: wait for the run's end.
    page.wait_for_function("[...document.querySelectorAll('#page-executions tr.clickable')]"
                           ".some(r => r.textContent.includes('console_fail')"
                           " && r.textContent.includes('failed'))", timeout=30000)
    assert ("inline/console_ok", ok_phone, "completed") in shown()
    assert ("inline/console_fail", bad_phone, "failed") in shown()
    root.locator("select").select_option("failed")
    assert shown() and all(s == "failed" for _, _, s in shown())
    assert ("inline/console_ok", ok_phone, "completed") not in shown()
    root.locator("select").select_option("")
    root.locator("input[placeholder='phone serial']").fill(ok_phone)
    assert shown() and all(p == ok_phone for _, p, _ in shown())
    root.locator("input[placeholder='phone serial']").fill("")
    root.locator("input[placeholder='sequence']").fill("console_fail")
    assert shown() == [("inline/console_fail", bad_phone, "failed")]
    rows.first.click()
    detail = page.locator("#execution-detail")
    detail.locator("h3").wait_for()
    assert bad_id in detail.locator("h3").inner_text()
    steps = detail.locator("tr").all()[1:]
    assert [tuple(s.locator("td").nth(i).inner_text() for i in (0, 1, 2)) for s in steps] == [
        ("steps[0]", "expect_screen", "failed")]
    page.wait_for_function("(() => { const i = document.querySelector('#execution-detail img.shot');"
                           " return i && i.complete && i.naturalWidth > 0; })()", timeout=15000)
    page.screenshot(path=str(OUT / "console-execution-failed.png"))
    root.locator("input[placeholder='sequence']").fill("")


def test_groups_page_creates_a_group_and_adds_a_member(farm, page):
    page.goto(farm.base + "/#groups")
    root = page.locator("#page-groups")
    root.locator("input[placeholder=name]").fill("console_team")
    root.locator("button.primary").click()
    row = root.locator("tr", has=page.locator("td", has_text=re.compile("^console_team$")))
    row.wait_for()
    row.locator("input").fill(farm.serials[2])
    row.locator("button", has_text="add").click()
    row.locator(f"span.tag:has-text('{farm.serials[2]}')").wait_for()
    assert row.locator("td").nth(2).inner_text() == "custom"
    groups = api(farm.base, "/api/groups")["groups"]
    (group,) = [g for g in groups if g["name"] == "console_team"]
    assert group["members"] == [farm.serials[2]] and group["kind"] == "phone"
    # Every group the API knows (the demo's seeded ones too) is a row with its member count.
    listed = {r.locator("td").nth(0).inner_text(): r.locator("td").nth(4).inner_text()
              for r in root.locator("tr:has(td:nth-child(5))").all()}
    assert len(groups) > 1
    for g in groups:
        assert listed[g["name"]].startswith(f"{g['member_count']}:"), (g, listed)


def test_schedules_page_creates_window_and_recurring_schedules_and_controls_them(farm, page):
    """From the form: a window schedule against a scope and a recurring (cron) one against
    the group made above; both reach GET /api/schedules with their type and target, and the
    row's pause, resume and cancel change their status."""
    if not any(g["name"] == "console_team" for g in api(farm.base, "/api/groups")["groups"]):
        # Run alone (-k): the groups test above did not make it.
        post_json(farm.base, "/api/groups", {"name": "console_team", "kind": "phone"})
    page.goto(farm.base + "/#schedules")
    root = page.locator("#page-schedules")
    before = {s["id"] for s in api(farm.base, "/api/schedules")["schedules"]}
    form = {
        "sequence": root.locator("input[placeholder^='sequence']"),
        "target": root.locator("input[placeholder^='scope or group']"),
        "type": root.locator(".form-row select"),
        "start": root.locator("input[type=datetime-local]").nth(0),
        "end": root.locator("input[type=datetime-local]").nth(1),
        "count": root.locator("input[type=number]"),
        "cron": root.locator("input[placeholder^='cron']"),
    }

    def add(**fields) -> dict:
        for name, value in fields.items():
            if name == "type":
                form[name].select_option(value)
            else:
                form[name].fill(value)
        known = {s["id"] for s in api(farm.base, "/api/schedules")["schedules"]}
        root.locator("button.primary").click()
        deadline = time.monotonic() + 10
        while not (new := [s for s in api(farm.base, "/api/schedules")["schedules"]
                           if s["id"] not in known]):
            assert time.monotonic() < deadline, page.inner_text("#toast")
            time.sleep(0.1)
        (schedule,) = new
        root.locator(f"tr:has(td:text-is('{schedule['id']}'))").wait_for()
        return schedule

    scope = f"phone:{farm.serials[3]}"
    window = add(sequence="clipshare/login", target=scope, type="window",
                 start="2031-01-01T09:00", end="2031-01-01T10:00", count="2")
    assert (window["type"], window["target"], window["count"]) == ("window", scope, 2)
    assert window["window_start"].startswith("2031-01-01") and window["status"] == "pending"
    cron = add(sequence="clipshare/login", target="group:console_team", type="recurring",
               cron="0 9 * * *")
    assert (cron["type"], cron["target"], cron["cron"]) == ("recurring", "group:console_team",
                                                            "0 9 * * *")
    assert {window["id"], cron["id"]}.isdisjoint(before)

    def control(schedule_id: str, action: str, want: str) -> None:
        row = root.locator(f"tr:has(td:text-is('{schedule_id}'))")
        row.locator("button", has_text=action).click()
        page.wait_for_function(
            f"[...document.querySelectorAll('#page-schedules tr')].some(r => "
            f"r.cells[0] && r.cells[0].textContent === {json.dumps(schedule_id)} && "
            f"r.cells[4].textContent === {json.dumps(want)})")
        (now,) = [s for s in api(farm.base, "/api/schedules")["schedules"] if s["id"] == schedule_id]
        assert now["status"] == want
        # Only the controls that apply: a finished schedule takes none.
        enabled = [b.inner_text() for b in row.locator("button:enabled").all()]
        assert enabled == {"paused": ["resume", "cancel"], "pending": ["pause", "cancel"],
                           "cancelled": []}[want]

    for schedule in (window, cron):
        control(schedule["id"], "pause", "paused")
        control(schedule["id"], "resume", "pending")
        control(schedule["id"], "cancel", "cancelled")
    # Bad input: the toast names the field and nothing is added.
    known = len(api(farm.base, "/api/schedules")["schedules"])
    form["cron"].fill("every day")
    root.locator("button.primary").click()
    page.wait_for_function("(t => t.startsWith('schedule:') && t.includes('cron'))"
                           "(document.getElementById('toast').textContent)")
    assert len(api(farm.base, "/api/schedules")["schedules"]) == known
    page.screenshot(path=str(OUT / "console-schedules.png"))


def test_schedule_window_is_read_in_the_browsers_time_zone(farm, page):
    """The form's window times are the operator's local time: from a browser in New York
    (UTC-5 in January) 09:00-10:00 reaches the API as 14:00-15:00 UTC."""
    context = page.context.browser.new_context(timezone_id="America/New_York")
    sign_in_console(context, farm.base)
    try:
        console = context.new_page()
        console.goto(farm.base + "/#schedules")
        root = console.locator("#page-schedules")
        root.locator("button.primary").wait_for()
        known = {s["id"] for s in api(farm.base, "/api/schedules")["schedules"]}
        root.locator("input[placeholder^='sequence']").fill("clipshare/login")
        root.locator("input[placeholder^='scope or group']").fill(f"phone:{farm.serials[3]}")
        root.locator(".form-row select").select_option("window")
        root.locator("input[type=datetime-local]").nth(0).fill("2031-01-01T09:00")
        root.locator("input[type=datetime-local]").nth(1).fill("2031-01-01T10:00")
        root.locator("button.primary").click()
        deadline = time.monotonic() + 10
        while not (new := [s for s in api(farm.base, "/api/schedules")["schedules"]
                           if s["id"] not in known]):
            assert time.monotonic() < deadline, console.inner_text("#toast")
            time.sleep(0.1)
        (schedule,) = new
        assert re.match(r"2031-01-01T14:00:00(\.0+)?(Z|\+00:00)$", schedule["window_start"]), schedule
        assert re.match(r"2031-01-01T15:00:00(\.0+)?(Z|\+00:00)$", schedule["window_end"]), schedule
        post_json(farm.base, f"/api/schedules/{schedule['id']}/cancel")
    finally:
        context.close()


def test_selection_ctrl_click_all_none_by_tag_and_single_view(farm, page):
    """Ctrl+click toggles one phone in and out of the selection; All, None and By tag select
    what they say (the blue outline class and the panel's count agree); the view toggle
    shows one large phone of the selection, and back."""
    page.goto(farm.base + "/#wall")
    set_mode(page, "select")
    selected = lambda: page.eval_on_selector_all(  # noqa: E731
        "#wall .phone.selected", "els => els.map(e => e.dataset.serial)")
    tile = lambda s: page.locator(f'#wall .phone[data-serial="{s}"]')  # noqa: E731
    page.click("#select-none")
    assert selected() == []
    tile(farm.serials[0]).click()
    assert selected() == [farm.serials[0]]
    tile(farm.serials[2]).click(modifiers=["Control"])
    assert selected() == [farm.serials[0], farm.serials[2]]
    tile(farm.serials[0]).click(modifiers=["Control"])
    assert selected() == [farm.serials[2]]
    page.locator(f'#phone-list tr[data-serial="{farm.serials[4]}"]').click(modifiers=["Control"])
    assert selected() == [farm.serials[2], farm.serials[4]]
    assert page.inner_text("#selection-count") == "2 selected"
    page.click("#select-all")
    assert selected() == farm.serials
    assert page.inner_text("#selection-count") == f"{PHONES} selected"
    page.click("#select-none")
    assert selected() == [] and page.inner_text("#selection-count") == "0 selected"
    if not any("batch-a" in p["tags"] for p in api(farm.base, "/api/phones")["phones"]):
        # Run alone (-k): the custom-tags test above did not tag any phone.
        for serial in farm.serials[1::2]:
            post_json(farm.base, f"/api/phones/{serial}/tags", {"tag": "batch-a"})
    tagged = sorted(p["serial"] for p in api(farm.base, "/api/phones")["phones"]
                    if "batch-a" in p["tags"])
    page.select_option("#filter-tag", "batch-a")
    page.click("#select-tag")
    page.select_option("#filter-tag", "")
    assert selected() == tagged
    wall_width = tile(tagged[0]).bounding_box()["width"]
    page.click("#view-toggle")
    single = page.locator("#single .phone")
    single.wait_for()
    assert page.locator("#single .phone").count() == 1
    assert single.get_attribute("data-serial") == tagged[0]
    assert page.locator("#wall").is_hidden()
    page.wait_for_function("(() => { const i = document.querySelector('#single .phone img');"
                           " return i && i.naturalWidth > 0; })()", timeout=15000)
    assert single.bounding_box()["width"] > 1.5 * wall_width
    page.screenshot(path=str(OUT / "console-single.png"))
    page.click("#view-toggle")
    assert page.locator("#single").is_hidden() and page.locator("#wall .phone").count() == PHONES


def poke_and_wait_screen(farm, serial: str, done, what: str, timeout: float = 60.0) -> str:
    """Press a harmless key on ``serial`` (its node captures and names the next frame) until
    its last screen satisfies ``done``; that screen."""
    deadline = time.monotonic() + timeout
    while True:
        urllib.request.urlopen(urllib.request.Request(
            farm.base + "/api/actions", method="POST",
            data=json.dumps({"scope": f"phone:{serial}", "action": {"type": "key", "key": "VOLUME_UP"}}).encode(),
            headers={**auth_headers(farm.base), "Content-Type": "application/json"}),
            timeout=60).read()
        time.sleep(1.0)
        phone = next(p for p in api(farm.base, "/api/phones")["phones"] if p["serial"] == serial)
        if done(phone.get("last_screen")):
            return phone["last_screen"]
        assert time.monotonic() < deadline, f"{serial}: {what}; last screen {phone.get('last_screen')}"


def test_a_screen_edit_is_a_version_and_a_revert_brings_the_matcher_back(farm, page):
    """Issue 23.4: edit mode lists the screen's versions with author and reason; an edit
    saved with a reason is version n+1 (here an OCR text the screen does not show, so the
    node stops naming the phone's frames by it), the diff view shows the change, and reverting
    to n from the history panel pushes n to the node, whose matcher names the next frame by
    it again."""
    serial = farm.serials[1]
    screen = poke_and_wait_screen(farm, serial, lambda s: bool(s) and "/" in s
                                  and ":" not in s, "a named state")
    page.evaluate("location.hash = '#wall'")
    set_mode(page, "select")
    page.mouse.click(*at(screen_box(page, serial), 0.5, 0.5))
    page.click("#edit-screen")
    page.locator("#editor-canvas").wait_for()
    versions = "#history-versions tr[data-version]"
    page.wait_for_selector(versions)
    n = int(page.locator(versions).first.get_attribute("data-version"))
    region = page.locator("#editor-boxes tr").nth(1)  # the first region
    region.locator("input[type=checkbox]").check()
    region.locator("input[placeholder='expected text']").fill("NO SUCH TEXT 23")
    page.fill("#page-editor [name=reason]", "probe: a text this screen lacks")
    page.click("#editor-save")
    page.wait_for_selector(f"#history-versions tr[data-version='{n + 1}']")
    row = page.inner_text(f"#history-versions tr[data-version='{n + 1}']")
    assert "probe: a text this screen lacks" in row and "admin" in row
    poke_and_wait_screen(farm, serial, lambda s: s != screen, f"{screen} no longer named")

    page.click(f"#history-versions tr[data-version='{n + 1}'] button.history-diff")
    page.wait_for_selector("#history-diff h4")
    diff = page.inner_text("#history-diff")
    assert f"v{n} → v{n + 1}" in diff and "NO SUCH TEXT 23" in diff
    page.fill("#history-panel [name=revert-reason]", "the probe is over")
    page.click(f"#history-versions tr[data-version='{n}'] button.history-revert")
    page.wait_for_selector(f"#history-versions tr[data-version='{n + 2}']")
    page.screenshot(path=str(OUT / "console-history.png"))
    app, name = screen.split("/")
    heads = api(farm.base, f"/api/definitions/screen/{app}/{name}/versions")["versions"]
    assert heads[0]["version"] == n + 2 and heads[0]["reason"] == (
        f"revert to version {n}: the probe is over")
    assert heads[0]["content_hash"] == next(h for h in heads if h["version"] == n)["content_hash"]
    poke_and_wait_screen(farm, serial, lambda s: s == screen, f"{screen} named again")
