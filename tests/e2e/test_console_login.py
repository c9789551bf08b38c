"""Logging in to the web console in a real browser (Debian chromium driven by Playwright)
against a real `farm-coordinator --demo`: a wrong password is refused on the login page, the
right one shows the caller's phones and name; a one-time login link works once and leaves
the address bar; logging out shows the login page again and the old token is dead; a token
revoked meanwhile brings the login page back with the reason; a pasted access token works
and is not revoked by logging out; back-off after wrong passwords; a viewer's refused action
shows the server's reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.demo_farm import DemoFarm, call

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
PHONES = 4

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = DemoFarm(tmp_path_factory.mktemp("login"), PHONES)
    yield farm
    farm.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh tab with nothing in its sessionStorage (each test logs in itself)."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def login_shown(page) -> None:
    page.locator("#login form").wait_for(state="visible", timeout=15000)


def error_text(page) -> str:
    return page.locator("#login .error").inner_text()


def log_in(page, user: str, password: str) -> None:
    page.fill("#login [name=user]", user)
    page.fill("#login [name=password]", password)
    page.click("#login button.primary")


def wall_shows(page, serials: list[str]) -> None:
    page.locator("#login").wait_for(state="hidden", timeout=15000)
    page.wait_for_function(f"document.querySelectorAll('#wall .phone').length === {len(serials)}",
                           timeout=20000)
    shown = page.eval_on_selector_all("#wall .phone", "ts => ts.map(t => t.dataset.serial)")
    assert sorted(shown) == serials


def stored_token(page) -> str | None:
    return page.evaluate("sessionStorage.getItem('phonefarm.token')")


def test_wrong_password_then_the_right_one(farm, page):
    page.goto(farm.base + "/")
    login_shown(page)
    assert error_text(page) == ""
    log_in(page, "acme", "not-the-password")
    page.wait_for_function("document.querySelector('#login .error').textContent !== ''")
    assert error_text(page) == "wrong user name or password"
    assert page.locator("#login").is_visible() and stored_token(page) is None
    assert page.locator("#wall .phone").count() == 0

    log_in(page, "acme", farm.passwords["acme"])
    wall_shows(page, farm.acme_phones)  # Acme's phones only
    assert page.inner_text("#whoami") == "acme (client: Acme)"
    assert page.locator("#logout").is_visible()
    status, me = call(farm.base, "GET", "/api/me", stored_token(page))
    assert status == 200 and me["name"] == "acme"


def test_login_link_works_once_and_leaves_the_address_bar(farm, browser, page):
    page.goto(f"{farm.base}/#login={farm.link}")
    wall_shows(page, sorted(p["serial"] for p in call(farm.base, "GET", "/api/phones",
                                                      farm.admin_token)[1]["phones"]))
    assert page.inner_text("#whoami") == "admin (super)"
    assert "login" not in page.url and page.evaluate("location.hash") == ""
    assert call(farm.base, "GET", "/api/me", stored_token(page))[0] == 200
    # The history entry itself was rewritten: back, then forward, finds no link.
    page.go_back()
    page.go_forward()
    assert "login" not in page.url
    wall_shows(page, sorted(p["serial"] for p in call(farm.base, "GET", "/api/phones",
                                                      farm.admin_token)[1]["phones"]))

    again = browser.new_context().new_page()
    try:
        again.goto(f"{farm.base}/#login={farm.link}")
        login_shown(again)
        again.wait_for_function("document.querySelector('#login .error').textContent !== ''")
        assert error_text(again).startswith("login link: ")
        assert "revoked" in error_text(again) or "used" in error_text(again)
        assert "login" not in again.url
        assert stored_token(again) is None
    finally:
        again.context.close()


def test_log_out_shows_the_login_page_and_kills_the_token(farm, page):
    page.goto(farm.base + "/")
    login_shown(page)
    log_in(page, "acme", farm.passwords["acme"])
    wall_shows(page, farm.acme_phones)
    token = stored_token(page)
    page.click("#logout")
    login_shown(page)
    assert error_text(page) == "Logged out."
    assert stored_token(page) is None
    assert page.locator("#whoami").inner_text() == ""
    status, answer = call(farm.base, "GET", "/api/me", token)
    assert status == 401 and "revoked" in answer["error"]


def test_a_revoked_token_brings_the_login_page_back_with_the_reason(farm, page):
    page.goto(farm.base + "/")
    login_shown(page)
    log_in(page, "acme", farm.passwords["acme"])
    wall_shows(page, farm.acme_phones)
    # The session ends elsewhere (another tab logs out): the page's next request learns it.
    # A background poll (the alerts bell) may learn it first and put the login page over the
    # nav, so the page is switched by its address rather than by a click the overlay would take.
    assert call(farm.base, "POST", "/api/logout", stored_token(page))[0] == 200
    page.evaluate("location.hash = 'executions'")
    login_shown(page)
    assert error_text(page) == "this access token was revoked"
    log_in(page, "acme", farm.passwords["acme"])
    page.locator("#login").wait_for(state="hidden", timeout=15000)
    # The refused request was made again: the executions page is there.
    page.locator("#page-executions table th").first.wait_for(timeout=15000)
    assert call(farm.base, "GET", "/api/me", stored_token(page))[0] == 200


def test_a_pasted_access_token_works_and_logging_out_keeps_it(farm, page):
    page.goto(farm.base + "/")
    login_shown(page)
    page.click("#login .switch")
    page.fill("#login [name=token]", "pf_not-a-token")
    page.click("#login button.primary")
    page.wait_for_function("document.querySelector('#login .error').textContent !== ''")
    assert error_text(page) == "unknown access token" and stored_token(page) is None
    page.fill("#login [name=token]", farm.admin_token)
    page.click("#login button.primary")
    page.locator("#login").wait_for(state="hidden", timeout=15000)
    assert page.inner_text("#whoami") == "admin (super)"
    page.click("#logout")
    login_shown(page)
    # A script's token: this page forgot it, the server did not revoke it.
    assert call(farm.base, "GET", "/api/me", farm.admin_token)[0] == 200


def test_wrong_passwords_in_a_row_make_the_user_wait(farm, page):
    page.goto(farm.base + "/")
    login_shown(page)
    texts = []
    for _ in range(12):  # 5 free, then a pause doubling from 1 s: a 429 comes well before
        page.evaluate("document.querySelector('#login .error').textContent = ''")
        log_in(page, "nobody", "guess")
        page.wait_for_function("document.querySelector('#login .error').textContent !== ''")
        texts.append(error_text(page))
        if "too many" in texts[-1]:
            break
        page.wait_for_function("!document.querySelector('#login button.primary').disabled")
    assert texts[-1].startswith("too many wrong passwords for this user: try again in"), texts
    assert texts[0] == "wrong user name or password"


def test_a_viewer_sees_the_servers_reason_for_a_refused_action(farm, page):
    status, answer = call(farm.base, "POST", "/api/login", body={
        "user": "acme-viewer", "password": farm.passwords["acme-viewer"]})
    assert status == 200
    status, refused = call(farm.base, "POST", "/api/actions", answer["token"], {
        "scope": f"phone:{farm.acme_phones[0]}", "action": {"type": "key", "key": "BACK"}})
    if status != 403:
        pytest.skip(f"the coordinator does not refuse a viewer's action yet (HTTP {status})")
    page.goto(farm.base + "/")
    login_shown(page)
    log_in(page, "acme-viewer", farm.passwords["acme-viewer"])
    wall_shows(page, farm.acme_phones)
    assert page.inner_text("#whoami") == "acme-viewer (viewer: Acme)"
    page.click("#select-all")
    page.click('.keys button[data-key="BACK"]')
    page.wait_for_function("(text) => document.getElementById('toast').textContent.includes(text)",
                           arg=refused["error"], timeout=10000)
    assert page.inner_text("#toast") == f"key BACK: {refused['error']}"
