"""Content in a real browser (Debian chromium, Playwright) against `farm-coordinator --demo`
(issue 21.4 and 21.5): text typed through the text dialog while recording is saved as the
template the operator wrote, not the variant one phone typed, and playing the recording
back on another phone types a variant of its own; the Content page adds a caption template,
shows a refused one's reason at its offset, and lists what it saved."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e.test_web_console import CHROMIUM, api, at, post_json, screen_box, set_mode

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")

# One demo farm and page for this module, as the console tests have them.
from tests.e2e.test_web_console import farm, page  # noqa: E402,F401

TEMPLATE = "{Loving|Enjoying} this ${content.caption.rec_daily}"
VARIANT = re.compile(r"(Loving|Enjoying) this (sunny|bright) day")


def _put(base: str, path: str, body: dict) -> dict:
    from tests.e2e.farm_auth import api_json

    return api_json(base + path, body, method="PUT")


def test_recording_keeps_the_text_dialogs_template(farm, page):
    _put(farm.base, "/api/content/captions/rec_daily", {"template": "{sunny|bright} day"})
    lead, other = farm.serials[5], farm.serials[4]
    for serial in (lead, other):
        post_json(farm.base, "/api/actions", {"scope": f"phone:{serial}",
                                              "action": {"type": "key", "key": "HOME"}})
    page.goto(farm.base + "/#wall")
    set_mode(page, "select")
    page.mouse.click(*at(screen_box(page, lead), 0.5, 0.5))
    page.fill("#rec-name", "content_rec")
    page.click("#rec-start")
    page.wait_for_function("document.querySelector('#rec-state').textContent.startsWith('recording')")
    set_mode(page, "action")
    farm.clear_logs()
    page.mouse.click(*at(screen_box(page, lead), 0.5, 0.5), button="right")
    dialog = page.locator("#text-dialog")
    dialog.locator("textarea").fill(TEMPLATE)
    page.wait_for_function("document.querySelector('#text-dialog .preview').textContent.includes(' day')")
    dialog.locator("button[value=type]").click()
    typed = farm.wait_inputs([lead], "text")[lead]
    assert typed and VARIANT.fullmatch(typed[0]["text"]), typed
    page.click("#rec-stop")
    page.wait_for_function("document.querySelector('#rec-state').textContent.startsWith('saved')")
    path = re.match(r"saved (.+) \(\d+ steps\)", page.inner_text("#rec-state")).group(1)
    steps = json.loads(Path(path).read_text())["steps"]
    assert [s["text"] for s in steps if s["type"] == "type"] == [TEMPLATE], steps

    # Played back on another phone: the template is resolved there, to a variant.
    run = post_json(farm.base, "/api/runs", {"scope": f"phone:{other}",
                                             "sequence": "recorded/content_rec"})
    deadline = time.monotonic() + 60
    while (status := api(farm.base, f"/api/runs/{run['run_id']}")["status"]) in (
            "pending", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status == "completed", api(farm.base, f"/api/runs/{run['run_id']}")
    played = farm.wait_inputs([other], "text")[other]
    assert played and VARIANT.fullmatch(played[-1]["text"]), played


def test_content_page_saves_a_caption_and_shows_a_refused_ones_offset(farm, page):
    page.goto(farm.base + "/#content")
    form = page.locator("#page-content form[data-kind=captions]")
    form.wait_for()
    form.locator("[name=name]").fill("page_caption")
    form.locator("[name=value]").fill("Hi ${content.hashtags.missing}")
    form.locator("button[type=submit]").click()
    page.wait_for_function("document.querySelector('#page-content form[data-kind=captions] .error')"
                           ".textContent.includes('at character 3')")
    assert "missing" in form.locator(".error").inner_text()
    form.locator("[name=value]").fill("{Hello|Hi} from the page")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("#content-captions tr[data-name=page_caption]")
    saved = {c["name"]: c["template"] for c in api(farm.base, "/api/content/captions")["captions"]}
    assert saved["page_caption"] == "{Hello|Hi} from the page"
