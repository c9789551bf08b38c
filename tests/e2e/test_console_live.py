"""The live wall in a real browser (Debian chromium, Playwright) against `farm-coordinator
--demo` (virtual phones on the agent path): the wall watches its phones over /api/live and a
tile's image follows the phone's screen after a tap, with no page reload and no thumbnail
request for it; the single view watches its phone at the full rate."""

from __future__ import annotations

import time

import pytest

from actors.node.device.driver import DeviceDriver
from tests.e2e.test_web_console import CHROMIUM, post_json

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).exists(),
                                reason="needs /usr/bin/chromium")

# The tile's picture as the browser shows it: a digest of its pixels.
PIXELS = """(serial) => {
  const img = document.querySelector(`#wall .phone[data-serial="${serial}"] img`);
  if (!img || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += d[i] + 2 * d[i + 1] + 3 * d[i + 2];
  return [c.width, sum];
}"""


# The console page over its own demo, as the console tests have it.
from tests.e2e.test_web_console import farm, page  # noqa: E402,F401


def settle(page, timeout: float = 20.0) -> None:
    """Wait until no live frame came for 1.5 s (the screen is static: none are sent)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        count = page.evaluate("window.__console.liveFrames")
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 1.5:
            return
        time.sleep(0.1)
    raise AssertionError("live frames kept coming for a static screen")


def test_wall_image_follows_a_tap_without_reload(farm, page):
    serial = farm.serials[0]
    post_json(farm.base, "/api/actions", {"scope": f"phone:{serial}",
                                          "action": {"type": "key", "key": "HOME"}})
    try:  # the phones' agents may still be starting on a loaded machine: a bound, not a speed
        page.wait_for_function("window.__console.liveFrames > 0", timeout=60000)
    except sync_api.TimeoutError:
        raise AssertionError("no live frame in 60 s: " + page.evaluate(
            "JSON.stringify({errors: window.__console.liveErrors, loads: window.__console.loads})"))
    page.evaluate("window.__notReloaded = true")
    settle(page)
    before = page.evaluate(PIXELS, serial)
    assert before is not None
    loads = page.evaluate(f"window.__console.thumbLoads['{serial}'] || 0")
    icon = next(n for n in DeviceDriver(serial, farm.adb).ui_dump() if n.text == "ClipShare")
    x0, y0, x1, y1 = icon.bounds
    out = post_json(farm.base, "/api/actions", {
        "scope": f"phone:{serial}", "action": {"type": "tap", "x": (x0 + x1) // 2,
                                                 "y": (y0 + y1) // 2}})
    assert out["results"][serial]["status"] == "ok", out
    page.wait_for_function(f"""() => {{
        const now = ({PIXELS})("{serial}");
        return now && now[1] !== {before[1]};
    }}""", timeout=15000)
    assert page.evaluate("window.__notReloaded") is True
    # The tile shows frames at the width it is drawn (rounded up), not the 270 px thumbnails,
    # and they came over the live socket, not as thumbnail requests.
    shown = page.evaluate(f"""document.querySelector('#wall .phone[data-serial="{serial}"] img')
                              .clientWidth * devicePixelRatio""")
    width = page.evaluate(PIXELS, serial)[0]
    assert shown <= width < shown + 20 + 1
    assert page.evaluate(f"window.__console.thumbLoads['{serial}'] || 0") == loads
    assert page.evaluate("window.__console.liveErrors") == []
