"""Which routes a caller's role may use at all, decided once per request before any
handler runs. A route missing from `ROUTES` is for super users only, so a new endpoint is
closed to tenants until someone decides how it is scoped."""

from __future__ import annotations

from actors.access.principal import Principal

# SCOPED: every logged-in user; the handler shows and changes only the caller's clients'
#   rows (actors.access.scoped); viewers read only.
# OWN: the caller's own session, tokens and password: every logged-in user, viewers too.
# SHARED: the farm's shared screen registry: everyone reads, super users change.
# SUPER: super users only (farm-wide operations not yet scoped per client).
SCOPED, OWN, SHARED, SUPER = "scoped", "own", "shared", "super"
# METRICS: the farm-wide Prometheus metrics: a token with the metrics scope, or a super user.
METRICS = "metrics"
METRICS_ROUTE = "/metrics"
READS = frozenset({"GET", "HEAD", "OPTIONS"})

ROUTES: dict[str, str] = {
    "/api/phones": SCOPED, "/api/nodes": SCOPED, "/api/phones/{serial}/screen": SCOPED,
    "/api/actions": SCOPED, "/api/record/start": SCOPED, "/api/record/stop": SCOPED,
    "/api/runs": SCOPED, "/api/runs/{run_id}": SCOPED, "/api/executions": SCOPED,
    "/api/executions/{execution_id}": SCOPED,
    "/api/executions/{execution_id}/steps/{path}/screenshot": SCOPED,
    "/api/unknown-screens": SCOPED, "/api/unknown-screens/{id}/image": SCOPED,
    "/api/stream": SCOPED, "/api/live": SCOPED,
    "/api/clients": SCOPED, "/api/clients/{name}": SCOPED, "/api/profiles": SCOPED,
    "/api/phones/{serial}/tags": SCOPED, "/api/phones/{serial}/tags/{tag}": SCOPED,
    "/api/phones/{serial}/client": SCOPED, "/api/phones/{serial}/resume": SCOPED,
    "/api/accounts": SCOPED, "/api/accounts/{account_id}": SCOPED,
    "/api/variables": SCOPED, "/api/variables/preview": SCOPED,
    "/api/variables/resolve": SCOPED, "/api/recovery/attempts": SCOPED,
    "/api/ai-keys": SCOPED, "/api/ai-keys/{key_id}": SCOPED, "/api/audit": SCOPED,
    "/api/users": SCOPED, "/api/users/{name}/disable": SCOPED,
    "/api/users/{name}/enable": SCOPED, "/api/organizations": SCOPED,
    "/api/logout": OWN, "/api/me": OWN, "/api/tokens": OWN, "/api/tokens/{token_id}": OWN,
    "/api/users/{name}/password": OWN,
    # A tenant's own schedules, workflow runs, groups and definitions (the shared library
    # of definitions is read by all, changed by super users: actors.access.scoped).
    "/api/schedules": SCOPED, "/api/schedules/{schedule_id}/pause": SCOPED,
    "/api/schedules/{schedule_id}/resume": SCOPED, "/api/schedules/{schedule_id}/cancel": SCOPED,
    "/api/schedules/{schedule_id}/events": SCOPED,
    "/api/workflows/{name}/run": SCOPED, "/api/workflow-executions": SCOPED,
    "/api/workflow-executions/{id}": SCOPED,
    "/api/groups": SCOPED, "/api/groups/rules": SCOPED, "/api/groups/{name}": SCOPED,
    "/api/groups/{name}/members": SCOPED, "/api/groups/{name}/members/{member}": SCOPED,
    "/api/sequences": SCOPED, "/api/sequences/{name}": SCOPED, "/api/workflows": SCOPED,
    "/api/workflows/{name}": SCOPED, "/api/registry": SHARED,
    # Definitions' history (issue 23): a tenant's clients' and the shared ones'; the farm's
    # sequences and screens are reverted by super users only (actors.coordinator.definitions).
    "/api/definitions": SCOPED, "/api/definitions/{kind}/{name}/versions": SCOPED,
    "/api/definitions/{kind}/{name}/versions/{n}": SCOPED,
    "/api/definitions/{kind}/{name}/diff": SCOPED, "/api/definitions/{kind}/{name}/revert": SCOPED,
    # Templates (issue 23.3): organization admins copy between their clients.
    "/api/templates": SCOPED, "/api/templates/copy": SCOPED, "/api/templates/update": SCOPED,
    "/api/templates/{kind}/{name}": SCOPED,
    "/api/registry/apps/{app}": SHARED, "/api/registry/apps/{app}/files/{path}": SHARED,
    "/api/registry/apps/{app}/screens/{screen}": SHARED,
    # A tenant's clients' reports (issue 19.5); making one: super users and the client's admins.
    "/api/reports": SCOPED, "/api/reports/{id}": SCOPED, "/api/reports/{id}.html": SCOPED,
    # The farm's history (issue 19.2): a tenant's clients' rollups and failures only.
    "/api/stats": SCOPED, "/api/stats/top-failures": SCOPED,
    # Alerts and notifications (issue 19.3): a tenant's clients' rules, alerts and
    # notices (farm-wide kinds and the channels stay super users'; actors.coordinator.alerts
    # .service). A viewer marks its own notifications read.
    "/api/alerts": SCOPED, "/api/alerts/{alert_id}/ack": SCOPED, "/api/alerts/rules": SCOPED,
    "/api/alerts/rules/{name}": SCOPED, "/api/alerts/rules/{name}/silence": SCOPED,
    "/api/notifications": SCOPED, "/api/notifications/read": OWN,
    # Apps on the phones (issue 20): a tenant installs on and reads its clients' phones
    # and pins for its clients (actors.control.apps); the reconcile stays super users'.
    "/api/apps/install": SCOPED, "/api/apps/uninstall": SCOPED, "/api/apps/installs": SCOPED,
    "/api/apps/installs/{install_id}": SCOPED, "/api/apps/inventory": SCOPED,
    "/api/apps/pins": SCOPED, "/api/apps/pins/{pin_id}": SCOPED,
    # The APK library (issue 20.1) is the farm's: every logged-in user reads it, super users
    # add and remove versions (actors.control.apks).
    "/api/apks": SHARED, "/api/apks/{id}": SHARED,
    # Links in bio and conversations (issue 21.6): a tenant's clients' accounts' only
    # (actors.control.links, conversations). The public /l/{code} is outside /api: no
    # token, like the console's page (actors.control.auth), so no rule here.
    "/api/links": SCOPED, "/api/links/{id}": SCOPED, "/api/link-clicks": SCOPED,
    "/api/conversations": SCOPED, "/api/conversations/{id}/messages": SCOPED,
    # Content management (issue 21.4): a tenant's clients' captions, hashtag sets, custom
    # variables and media; the farm's shared ones read by all, changed by super users
    # (actors.control.content).
    "/api/content/captions": SCOPED, "/api/content/captions/{name}": SCOPED,
    "/api/content/hashtags": SCOPED, "/api/content/hashtags/{name}": SCOPED,
    "/api/content/vars": SCOPED, "/api/content/vars/{name}": SCOPED,
    "/api/content/media": SCOPED, "/api/content/media/{id}": SCOPED,
    # Posts and daily analytics (issue 21.2): a tenant reads its clients' accounts' posts
    # and client rows (actors.control.posts, analytics); POST /api/analytics/rollup is
    # left out: super users only.
    "/api/posts": SCOPED, "/api/posts/{post_id}/metrics": SCOPED,
    "/api/analytics/daily": SCOPED,
    # Prometheus metrics of the whole farm: a metrics-scoped token or a super user.
    "/metrics": METRICS,
}
# Method-specific exceptions: the phone registry is read by tenants, changed by super users.
METHOD_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/api/phones/registry"): SCOPED, ("HEAD", "/api/phones/registry"): SCOPED,
}


def refusal(principal: Principal, method: str, route: str | None) -> str | None:
    """Why ``principal`` may not call ``method route`` (a route template), or None."""
    if principal.scope == METRICS:
        # A metrics token (schema v16) is what a Prometheus server holds: it reads the
        # metrics and nothing else, whoever issued it.
        if route == METRICS_ROUTE and method in READS:
            return None
        return f"a metrics token may only GET {METRICS_ROUTE}"
    if principal.scope is not None:
        return f"a token of unknown scope {principal.scope!r} may call nothing"
    if principal.is_super:
        return None
    if route == METRICS_ROUTE:
        return f"GET {METRICS_ROUTE} needs a token with the metrics scope"
    rule = METHOD_ROUTES.get((method, route or "")) or ROUTES.get(route or "", SUPER)
    reading = method in READS
    if rule == OWN:
        return None
    if rule == SUPER or (rule == SHARED and not reading):
        return f"only a super user may {method} {route}"
    if not reading and not principal.can_write():
        return f"a {principal.role} user may not change anything"
    return None
