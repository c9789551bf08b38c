"""An app's screen graph and the shortest routes through it (spec 3.2 ``linked_state``).

Owns what the registry's actions say about getting around an app: every action with a
``linked_state`` is an edge from its screen to that state, all of weight 1. A sequence's
``go_to`` step (``actors.node.playback``) walks ``route``'s hops one at a time, re-planning
from wherever each action really led; ``farm registry path`` prints a route and
``farm registry check`` lists the states ``unreachable`` names.

Only actions with ``navigation`` true are taken on a route: the others (posting, logging in
with whatever the form holds, switching the account) do more than move. An action leading
back to its own screen (the feed's next video) is no edge. Interrupts are places a route can
start from (one left on the screen whose actions lead somewhere) but never lead to: nothing
but the app itself brings them up. There is no implicit edge (no BACK key): the registry
says nothing about where BACK leads, so a screen without an action out is a dead end.

Screens are named here as in labels without the app: ``feed``, ``interrupt:rate_us``.
Pure: no I/O, nothing but the registry model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from protocol.errors import FarmError
from registry.model import App, ScreenAction

INTERRUPT = "interrupt:"


class NavigationError(FarmError):
    """A route that cannot be planned; the message names the screens involved."""


class UnknownScreen(NavigationError):
    """A screen name the app does not have."""


class NoRoute(NavigationError):
    """No chain of navigation actions leads from one screen to the other."""

    def __init__(self, message: str, start: str, target: str) -> None:
        super().__init__(message)
        self.start, self.target = start, target


@dataclass(frozen=True)
class Hop:
    """One action of a route: on screen ``source`` take ``action``, which leads to ``target``."""

    source: str
    action: ScreenAction
    target: str

    def line(self, app_key: str) -> str:
        """``clipshare/feed --go_to_profile--> clipshare/profile``."""
        return f"{app_key}/{self.source} --{self.action.name}--> {app_key}/{self.target}"


def screen_names(app: App) -> list[str]:
    """Every screen of ``app`` as this module names it: states, then ``interrupt:`` ones."""
    return [*app.states, *(INTERRUPT + key for key in app.interrupts)]


def _actions(app: App, screen: str) -> list[ScreenAction]:
    if screen.startswith(INTERRUPT):
        found = app.interrupts.get(screen.removeprefix(INTERRUPT))
    else:
        found = app.states.get(screen)
    return found.actions if found is not None else []


def hops_from(app: App, screen: str, *, every_action: bool = False) -> list[Hop]:
    """The edges out of ``screen`` in the registry's order (``every_action``: with the actions
    go_to does not take too)."""
    return [Hop(screen, a, a.linked_state) for a in _actions(app, screen)
            if a.linked_state is not None and a.linked_state != screen
            and a.linked_state in app.states and (a.navigation or every_action)]


def _check_known(app: App, app_key: str, **screens: str) -> None:
    known = screen_names(app)
    for role, screen in screens.items():
        if screen not in known:
            raise UnknownScreen(f"{role} screen {app_key}/{screen}: app {app_key!r} has no such "
                                f"screen (screens: {', '.join(known) or 'none'})")
    if screens.get("target", "").startswith(INTERRUPT):
        raise UnknownScreen(f"target screen {app_key}/{screens['target']} is an interrupt: "
                            "no action leads to one, it shows up on its own")


def _search(app: App, start: str, every_action: bool) -> dict[str, Hop | None]:
    """Breadth first from ``start``: each reached screen -> the hop that first reached it.
    Screens and actions are visited in the registry's order, so equal routes tie the same
    way every time."""
    came_by: dict[str, Hop | None] = {start: None}
    queue = deque([start])
    while queue:
        screen = queue.popleft()
        for hop in hops_from(app, screen, every_action=every_action):
            if hop.target not in came_by:
                came_by[hop.target] = hop
                queue.append(hop.target)
    return came_by


def _walk_back(came_by: dict[str, Hop | None], target: str) -> list[Hop]:
    hops: list[Hop] = []
    hop = came_by[target]
    while hop is not None:
        hops.append(hop)
        hop = came_by[hop.source]
    return hops[::-1]


def route(app: App, start: str, target: str, app_key: str = "app") -> list[Hop]:
    """The shortest chain of navigation actions from ``start`` to the state ``target`` (empty
    when they are the same). ``UnknownScreen`` names a screen the app lacks (or a target that
    is an interrupt); ``NoRoute`` says what is reachable instead. ``app_key`` only names the
    app in messages."""
    _check_known(app, app_key, start=start, target=target)
    came_by = _search(app, start, every_action=False)
    if target in came_by:
        return _walk_back(came_by, target)
    reached = [f"{app_key}/{s}" for s in came_by if s != start]
    message = (f"no route from {app_key}/{start} to {app_key}/{target}: no chain of "
               f"navigation actions leads there (from {app_key}/{start} go_to reaches: "
               f"{', '.join(reached) or 'nothing'})")
    every = _search(app, start, every_action=True)
    if target in every:
        through = [h for h in _walk_back(every, target) if not h.action.navigation]
        message += ("; only through actions go_to never takes (navigation: false): "
                    + ", ".join(h.line(app_key) for h in through))
    raise NoRoute(message, start, target)


def unreachable(app: App, *, navigation_only: bool = False) -> list[str]:
    """The states no action of another screen leads to, in the registry's order
    (``navigation_only``: no action go_to takes). Reaching them takes something the registry
    does not describe: launching the app, a key, the user."""
    reached = {hop.target for screen in screen_names(app)
               for hop in hops_from(app, screen, every_action=not navigation_only)}
    return [state for state in app.states if state not in reached]
