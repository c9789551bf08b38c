"""registry.navigation: the screen graph of linked_state actions, shortest routes, and the
states no action reaches. Plain cases on small apps and the demo registry, and a property
against an independent all-pairs distance table on random graphs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.load import DEMO_REGISTRY, load_registry
from registry.model import App, Screen, ScreenAction
from registry.navigation import NoRoute, UnknownScreen, route, unreachable

BOX = (0, 0, 10, 10)


def act(name: str, to: str | None, navigation: bool = True) -> ScreenAction:
    return ScreenAction(name=name, coordinates=BOX, linked_state=to, navigation=navigation)


def app_of(states: dict[str, list[ScreenAction]],
           interrupts: dict[str, list[ScreenAction]] | None = None) -> App:
    return App(states={k: Screen(name=k, actions=a) for k, a in states.items()},
               interrupts={k: Screen(name=k, actions=a) for k, a in (interrupts or {}).items()})


def lines(hops, app_key="x") -> list[str]:
    return [h.line(app_key) for h in hops]


SHOP = app_of({
    "home": [act("open_cart", "cart"), act("open_menu", "menu"), act("refresh", "home")],
    "menu": [act("settings", "settings"), act("close", "home")],
    "cart": [act("checkout", "paid", navigation=False), act("back", "home")],
    "settings": [act("home", "home")],
    "paid": [act("done", "home")],
    "splash": [act("start", "home")],
}, {"promo": [act("see_cart", "cart"), act("dismiss", None)]})


def test_shortest_route_one_line_per_hop():
    assert lines(route(SHOP, "cart", "settings", "shop"), "shop") == [
        "shop/cart --back--> shop/home", "shop/home --open_menu--> shop/menu",
        "shop/menu --settings--> shop/settings"]


def test_start_is_target_is_an_empty_route():
    assert route(SHOP, "menu", "menu") == []


def test_a_route_can_start_on_an_interrupt_with_a_linked_action():
    assert lines(route(SHOP, "interrupt:promo", "home", "x")) == [
        "x/interrupt:promo --see_cart--> x/cart", "x/cart --back--> x/home"]


def test_navigation_false_actions_are_never_taken_and_the_error_says_where_they_lead():
    with pytest.raises(NoRoute) as err:
        route(SHOP, "home", "paid", "shop")
    message = str(err.value)
    assert "no route from shop/home to shop/paid" in message
    assert "shop/cart" in message and "shop/settings" in message  # what it does reach
    assert "shop/cart --checkout--> shop/paid" in message  # and the way it refuses
    assert (err.value.start, err.value.target) == ("home", "paid")


def test_no_route_at_all_names_both_screens_and_that_nothing_is_reachable():
    with pytest.raises(NoRoute, match=r"no route from x/settings to x/splash.*reaches: x/home"):
        route(SHOP, "settings", "splash", "x")
    dead_end = app_of({"a": [], "b": [act("to_a", "a")]})
    with pytest.raises(NoRoute, match="reaches: nothing"):
        route(dead_end, "a", "b")


@pytest.mark.parametrize("start, target, named", [
    ("hom", "cart", "start screen x/hom"),
    ("home", "kart", "target screen x/kart"),
    ("interrupt:nope", "cart", "start screen x/interrupt:nope"),
])
def test_unknown_screens_are_errors_naming_them(start, target, named):
    with pytest.raises(UnknownScreen, match=named) as err:
        route(SHOP, start, target, "x")
    assert "screens: home, menu" in str(err.value)


def test_an_interrupt_is_no_target():
    with pytest.raises(UnknownScreen, match="x/interrupt:promo is an interrupt"):
        route(SHOP, "home", "interrupt:promo", "x")


def test_unreachable_states():
    # splash: nothing leads there; paid: only an action go_to does not take; the
    # self-link home --refresh--> home does not count.
    assert unreachable(SHOP) == ["splash"]
    assert unreachable(SHOP, navigation_only=True) == ["paid", "splash"]
    assert unreachable(app_of({"only": [act("again", "only")]})) == ["only"]


@pytest.fixture(scope="module")
def demo():
    return load_registry(DEMO_REGISTRY)


def test_demo_clipshare_routes(demo):
    clipshare = demo.apps["clipshare"]
    assert lines(route(clipshare, "profile", "login", "clipshare"), "clipshare") == [
        "clipshare/profile --switch_account--> clipshare/account_switcher",
        "clipshare/account_switcher --add_account--> clipshare/login"]
    assert lines(route(clipshare, "settings", "upload", "clipshare"), "clipshare") == [
        "clipshare/settings --back--> clipshare/profile",
        "clipshare/profile --go_to_upload--> clipshare/upload"]
    # Leaving the upload screen never posts: Cancel, not Post.
    assert [h.action.name for h in route(clipshare, "upload", "profile")] == [
        "cancel", "go_to_profile"]
    # Logged out, the only way on is the login form's Log in: go_to does not submit it.
    with pytest.raises(NoRoute, match="clipshare/login --log_in--> clipshare/feed"):
        route(clipshare, "login", "feed", "clipshare")


def test_demo_unreachable(demo):
    assert unreachable(demo.apps["clipshare"]) == []
    assert unreachable(demo.apps["clipshare"], navigation_only=True) == []
    # The recents screen comes from the APP_SWITCH key, which no registry action is.
    assert unreachable(demo.apps["launcher"]) == ["recents"]


# --- property: routes are shortest, valid, and exist exactly when a path does -------------------

NAMES = [f"s{i}" for i in range(7)]


@st.composite
def graphs(draw):
    n = draw(st.integers(1, len(NAMES)))
    names = NAMES[:n]
    states = {}
    for name in names:
        out = draw(st.lists(st.tuples(st.sampled_from(names + [None]), st.booleans()),
                            max_size=4))
        states[name] = [act(f"{name}_{i}", to, nav) for i, (to, nav) in enumerate(out)]
    return app_of(states), names


def distances(app: App, names: list[str]) -> dict[tuple[str, str], float]:
    """Floyd-Warshall over the navigation actions: an independent notion of shortest."""
    inf = float("inf")
    d = {(a, b): 0 if a == b else inf for a in names for b in names}
    for a in names:
        for action in app.states[a].actions:
            if action.linked_state is not None and action.navigation and action.linked_state != a:
                d[a, action.linked_state] = 1
    for k in names:
        for i in names:
            for j in names:
                d[i, j] = min(d[i, j], d[i, k] + d[k, j])
    return d


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_routes_are_shortest_chains_of_navigation_actions(graph):
    app, names = graph
    d = distances(app, names)
    for start in names:
        for target in names:
            if d[start, target] == float("inf"):
                with pytest.raises(NoRoute):
                    route(app, start, target)
                continue
            hops = route(app, start, target)
            assert len(hops) == d[start, target]
            at = start
            for hop in hops:
                assert hop.source == at and hop.action in app.states[at].actions
                assert hop.action.navigation and hop.action.linked_state == hop.target
                at = hop.target
            assert at == target
            assert route(app, start, target) == hops  # the same tie every time
    never_linked = [s for s in names if all(a.linked_state != s for o in names if o != s
                                            for a in app.states[o].actions)]
    assert unreachable(app) == never_linked
