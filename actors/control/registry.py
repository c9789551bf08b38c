"""CRUD over the farm database through the control endpoint: groups (with their rules),
clients, profiles, the phone registry and accounts.
Passwords of accounts and profiles are write-only: stored sealed by the farm database,
answered as ``password_set`` / ``profile_password_set`` (issue 17.5).

Owns these routes, their request types (strict msgspec Structs: a bad body is a 400 naming
the JSON path of the field) and their OpenAPI paths. Groups are changed through
`sequences.groups.GroupBook`, so every hierarchy and relationship rule is checked before the
book is saved (one transaction); a broken rule is a 400 with the rule's text. Deleting a
client, phone or account is soft: its status becomes ``retired``.

Each client has a group book of its own (names are unique within a client); the farm's
shared book (no client) is the super users'. A request works in one book: the ``client`` it
names (body, or ``?client=`` on the group's URL), else for a super user the shared book and
for anyone else its only client (a caller reaching several names one; for a group named in
the URL, the one client of theirs that has it). A member must be a phone of that client or
an account on one: another client's is "no such phone" as for one that does not exist.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from actors.access.users import AccessDenied, LoginFailed
from actors.control.auth import principal_of
from actors.control.http import HUB, error_response, hub_of, json_response, openapi_body, openapi_path_param
from actors.control.schemas import IntParam, RequestError, RowId, decode_request
from protocol.errors import FarmError, ValidationError
from sequences.groups import ALL_ACCOUNTS, ALL_PHONES
from protocol.names import printable, whole

log = logging.getLogger(__name__)

RETIRED = "retired"

# Names become keys (and file names): whole() patterns and printable text, see protocol.names.
Name = printable(128, 1)
Text = Annotated[str, Meta(max_length=4096)]
Status = Annotated[str, Meta(pattern=whole("[a-z_]{1,32}"), description="e.g. active, warming, retired")]
GroupName = Annotated[str, Meta(pattern=whole("[A-Za-z0-9_]{1,64}"))]
WRITE_ONLY = ("write-only: stored encrypted, never returned (answers carry password_set / "
              "profile_password_set); \"\" removes it, omitted keeps it")


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    pass


BookClient = Annotated[str, Meta(min_length=1, max_length=128, description=(
    "the client whose group book this is (default: a super user's shared book, another "
    "user's only client)"))]


class GroupCreate(_Body):
    name: GroupName
    kind: Literal["phone", "account"]
    type: Literal["custom", "smart"] | None = None
    filter: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    parent: GroupName | None = None
    description: Text = ""
    client: BookClient | None = None


class MemberAdd(_Body):
    member: printable(256, 1, "a serial, or platform.number@serial")


class RuleCreate(_Body):
    kind: Literal["exclusive", "requires", "excludes"]
    groups: Annotated[list[GroupName], Meta(min_length=2, max_length=64)]
    name: printable(64) = ""
    client: BookClient | None = None


class ClientBody(_Body):
    name: Name
    status: Status = "active"
    contact_email: Annotated[str, Meta(pattern=whole(r"[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+"),
                                       max_length=256)] | None = None
    contact_discord: printable(128) | None = None
    organization: printable(128, 1) | None = None  # a name or id; an admin's own only


class ProfileBody(_Body):
    profile_id: RowId | None = None
    client: Name | None = None
    first_name: printable(128) | None = None
    last_name: printable(128) | None = None
    birth_month: Annotated[int, Meta(ge=1, le=12)] | None = None
    birth_day: Annotated[int, Meta(ge=1, le=31)] | None = None
    birth_year: Annotated[int, Meta(ge=1900, le=2100)] | None = None
    gender: printable(32) | None = None
    profile_password: Annotated[str, Meta(max_length=256, description=WRITE_ONLY)] | None = None
    interests: Annotated[str, Meta(max_length=4096)] | None = None


class PhoneBody(_Body):
    serial: printable(128, 1)
    client: Name | None = None
    model: printable(128) | None = None
    phone_number: Annotated[str, Meta(pattern=whole(r"\+?[0-9 ()-]{3,32}"))] | None = None
    status: Status | None = None
    agent: Name | None = None


class TagAdd(_Body):
    tag: Annotated[str, Meta(pattern=whole("[A-Za-z0-9_-]{1,32}"),
                             description="custom tag: letters, digits, _ and -")]


class AccountBody(_Body):
    serial: printable(128, 1)
    platform: Annotated[str, Meta(pattern=whole("[A-Za-z0-9_]{1,32}"))]
    account_number: printable(64, 1)
    username: printable(128) | None = None
    password: Annotated[str, Meta(max_length=256, description=WRITE_ONLY)] | None = None
    profile_id: RowId | None = None
    status: Status | None = None
    bio: Annotated[str, Meta(max_length=4096)] | None = None


REQUEST_TYPES = [GroupCreate, MemberAdd, RuleCreate, ClientBody, ProfileBody, PhoneBody,
                 AccountBody, TagAdd]

GROUP_LOCK = web.AppKey("group_lock", asyncio.Lock)
ACCOUNT_ID = IntParam("account_id", description="account id")


def add_routes(app: web.Application) -> None:
    """Register every CRUD route on ``app`` (the hub is ``app[HUB]``)."""
    app[GROUP_LOCK] = asyncio.Lock()
    r = app.router
    r.add_get("/api/groups", get_groups)
    r.add_post("/api/groups", post_group)
    r.add_post("/api/groups/rules", post_group_rule)
    r.add_delete("/api/groups/{name}", delete_group)
    r.add_post("/api/groups/{name}/members", post_group_member)
    r.add_delete("/api/groups/{name}/members/{member}", delete_group_member)
    r.add_get("/api/clients", get_clients)
    r.add_post("/api/clients", post_client)
    r.add_delete("/api/clients/{name}", delete_client)
    r.add_get("/api/profiles", get_profiles)
    r.add_post("/api/profiles", post_profile)
    r.add_get("/api/phones/registry", get_phone_registry)
    r.add_post("/api/phones/registry", post_phone_registry)
    r.add_delete("/api/phones/registry/{serial}", delete_phone_registry)
    r.add_post("/api/phones/{serial}/tags", post_phone_tag)
    r.add_delete("/api/phones/{serial}/tags/{tag}", delete_phone_tag)
    r.add_get("/api/accounts", get_accounts)
    r.add_post("/api/accounts", post_account)
    r.add_delete("/api/accounts/{account_id}", delete_account)


def _db(request: web.Request):
    return hub_of(request).farm_db()


def _handled(handler):
    """Map the farm's errors onto answers: a bad body or a broken rule is 400 (with the
    field or the rule's text), not found 404, not allowed 403, not logged in 401, no farm
    database 409."""
    async def wrapper(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except RequestError as exc:
            return json_response(exc.body, 400)
        except ValidationError as exc:
            return error_response(400, str(exc), field=exc.where)
        except LookupError as exc:
            return error_response(404, str(exc.args[0]) if exc.args else "not found")
        except AccessDenied as exc:
            log.warning("refused %s %s for %s: %s", request.method, request.path,
                        principal_of(request).actor, exc)
            await _audit_refusal(request, exc)
            return error_response(403, str(exc))
        except LoginFailed as exc:
            return error_response(401, str(exc))
        except FarmError as exc:
            return error_response(409, str(exc))
    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


async def _audit_refusal(request: web.Request, exc: Exception) -> None:
    """A refused change (a role above the caller's, a client outside its reach) in the
    audit trail: who tried what, nothing else was written."""
    if request.method in ("GET", "HEAD"):
        return
    try:
        db = request.app[HUB].farm_db()
    except FarmError:
        return
    await db.audit("refused", f"{request.method} {request.path}", "update", None, None,
                   actor=principal_of(request).actor, reason=str(exc))


async def _audit(request: web.Request, db: Any, entity_type: str, entity_id: Any,
                 action: str, before: Any, after: Any) -> None:
    """Record the change in the farm DB's audit trail when this FarmDB has one, made by the
    request's caller."""
    audit = getattr(db, "audit", None)
    if audit is None:
        return
    # The trail knows create, update and delete; member changes and soft deletes are
    # updates, with the verb kept as the reason.
    reason = {"add": "member added", "remove": "member removed",
              "retire": "soft delete (status retired)"}.get(action)
    result = audit(entity_type, str(entity_id), "update" if reason else action, before, after,
                   actor=principal_of(request).actor, reason=reason)
    if inspect.isawaitable(result):
        await result


# --- groups -----------------------------------------------------------------------------


async def _rows(request: web.Request, db: Any,
                client_id: int | None = None) -> tuple[list[dict], list[dict]]:
    """Phones (the registry's rows merged with the live directory, as runs see them) and
    accounts, for resolving smart and computed groups: a client's book sees that client's
    phones and their accounts only (the shared book, every phone the caller sees)."""
    known = {row["serial"]: row for row in await db.phone_rows()}
    live = {p["serial"]: p for p in hub_of(request).phones()}
    phones = [{**known.get(s, {}), **live.get(s, {}), "client": known.get(s, {}).get("client")}
              for s in sorted(set(known) | set(live))]
    accounts = await db.account_rows()
    if client_id is None:
        return phones, accounts
    mine = {s for s, row in known.items() if row.get("client_id") == client_id}
    return ([p for p in phones if p["serial"] in mine],
            [a for a in accounts if a.get("serial") in mine])


def group_view(book: Any, name: str, phones: list[dict], accounts: list[dict],
               client: str | None = None) -> dict:
    group = book.groups[name]
    try:
        resolved: int | None = len(book.members(name, phones, accounts))
    except FarmError:
        resolved = None
    return {"name": group.name, "kind": group.kind, "type": group.type, "parent": group.parent,
            "filter": group.filter, "description": group.description,
            "members": list(group.members), "member_count": resolved, "client": client}


def rule_view(rule: Any, client: str | None = None) -> dict:
    return {"kind": rule.kind, "groups": list(rule.groups), "name": rule.name or None,
            "client": client}


def _single(rows: list[dict], what: str = "it") -> dict:
    """The one client of ``rows`` (the caller's clients); 400 ``$.client`` otherwise."""
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise ValidationError("$.client", "you reach no client")
    names = ", ".join(sorted(r["name"] for r in rows))
    raise ValidationError("$.client", f"you reach several clients ({names}): name the one "
                                      f"{what} is for")


async def only_client(db: Any) -> str:
    """The name of the caller's only client (``db`` a ScopedFarmDB); 400 ``$.client``
    when it reaches none or several."""
    return _single(await db.client_rows())["name"]


async def _book_client(request: web.Request, db: Any, named: str | None,
                       group: str | None = None) -> tuple[int | None, str | None]:
    """(client id, name) of the group book a request works in; (None, None) is the farm's
    shared book (super users only). See the module docstring."""
    if named is not None:
        row = await db.client_row(named)  # another client's reads as none (ScopedFarmDB)
        if row is None:
            raise ValidationError("$.client", f"no such client: {named!r}")
        return row["client_id"], row["name"]
    if principal_of(request).is_super:
        return None, None
    rows = await db.client_rows()
    if group is not None and len(rows) > 1:
        having = [r for r in rows if group in (await db.group_book(r["client_id"])).groups]
        if not having:
            raise LookupError(f"no such group: {group!r}")
        rows = having
    found = _single(rows, "the group")
    return found["client_id"], found["name"]


@_handled
async def get_groups(request: web.Request) -> web.Response:
    db = _db(request)
    named = request.query.get("client")
    if named is None and not principal_of(request).is_super:
        books = [(r["client_id"], r["name"]) for r in await db.client_rows()]
    else:
        books = [await _book_client(request, db, named)]
    groups, rules = [], []
    for client_id, client in books:
        book = await db.group_book(client_id)
        phones, accounts = await _rows(request, db, client_id)
        groups += [group_view(book, n, phones, accounts, client) for n in book.groups]
        rules += [rule_view(r, client) for r in book.rules]
    return json_response({"groups": groups, "rules": rules})


async def _change_book(request: web.Request, client_id: int | None,
                       change) -> tuple[Any, Any]:
    """Load client ``client_id``'s book, apply ``change(book)`` (GroupBook checks every
    rule), save it; one change at a time. Returns (book, change's result)."""
    db = _db(request)
    async with request.app[GROUP_LOCK]:
        book = await db.group_book(client_id)
        result = change(book)
        await db.save_group_book(book, client_id)
    return book, result


def _known_group(book: Any, name: str) -> None:
    if name not in book.groups:
        raise LookupError(f"no such group: {name!r}")


@_handled
async def post_group(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), GroupCreate,
                          "a JSON object with name and kind")
    group_type = body.type or ("smart" if body.filter is not None else "custom")
    db = _db(request)
    client_id, client = await _book_client(request, db, body.client)

    def create(book):
        return book.create(body.name, body.kind, type=group_type, filter=body.filter,
                           parent=body.parent, description=body.description)

    book, _ = await _change_book(request, client_id, create)
    phones, accounts = await _rows(request, db, client_id)
    view = group_view(book, body.name, phones, accounts, client)
    await _audit(request, db, "group", body.name, "create", None, view)
    return json_response(view, 201)


async def _url_book(request: web.Request, name: str) -> tuple[int | None, str | None]:
    """The book of the group named in the URL (``?client=`` names the client)."""
    return await _book_client(request, _db(request), request.query.get("client"), group=name)


@_handled
async def delete_group(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    client_id, client = await _url_book(request, name)
    before: dict = {}

    def delete(book):
        _known_group(book, name)
        group = book.groups[name]
        before.update(name=name, kind=group.kind, type=group.type, members=list(group.members),
                      client=client)
        book.delete(name)

    await _change_book(request, client_id, delete)
    await _audit(request, _db(request), "group", name, "delete", before, None)
    return json_response({"deleted": name})


async def _change_members(request: web.Request, name: str, action: str, change,
                          client_id: int | None, client: str | None) -> web.Response:
    """Apply ``change(book)`` to group ``name``'s members, audit the members before and
    after under ``action``, and answer with the group's view."""

    def apply(book):
        _known_group(book, name)
        before = list(book.groups[name].members)
        change(book)
        return before

    book, before = await _change_book(request, client_id, apply)
    db = _db(request)
    whose = {"client": client} if client is not None else {}
    await _audit(request, db, "group", name, action, {"members": before, **whose},
                 {"members": book.groups[name].members, **whose})
    phones, accounts = await _rows(request, db, client_id)
    return json_response(group_view(book, name, phones, accounts, client))


@_handled
async def post_group_member(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = decode_request(await request.read(), MemberAdd, "a JSON object with member")
    client_id, client = await _url_book(request, name)
    phones, accounts = await _rows(request, _db(request), client_id)

    def add(book):
        book.add_member(name, body.member)  # its form and the group's rules first
        _check_exists(book, name, body.member, phones, accounts)

    return await _change_members(request, name, "add", add, client_id, client)


def _check_exists(book: Any, name: str, member: str, phones: list[dict],
                  accounts: list[dict]) -> None:
    """A new member must be a phone (the registry's or a live one) or an account the farm
    has: a typo would sit in the group matching nothing, and every scope over it too."""
    kind = book.groups[name].kind
    if member not in book.members(ALL_PHONES if kind == "phone" else ALL_ACCOUNTS,
                                  phones, accounts):
        listed = "GET /api/phones" if kind == "phone" else "GET /api/accounts"
        raise RequestError("$.member", f"no such {kind}: {member!r} ({listed} lists them)",
                           field="$.member")


@_handled
async def delete_group_member(request: web.Request) -> web.Response:
    name, member = request.match_info["name"], request.match_info["member"]
    client_id, client = await _url_book(request, name)
    return await _change_members(request, name, "remove",
                                 lambda book: book.remove_member(name, member),
                                 client_id, client)


@_handled
async def post_group_rule(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), RuleCreate, "a JSON object with kind and groups")
    if body.kind == "exclusive" and not body.name:
        raise RequestError("$.name", "an exclusive rule needs the set's name", field="$.name")
    if body.kind != "exclusive" and len(body.groups) != 2:
        raise RequestError("$.groups", f"a {body.kind} rule relates exactly two groups",
                           field="$.groups")
    client_id, client = await _book_client(request, _db(request), body.client,
                                           group=body.groups[0])

    def add(book):
        for name in body.groups:
            _known_group(book, name)
        if body.kind == "exclusive":
            return book.exclusivity_set(body.name, body.groups)
        if body.kind == "requires":
            return book.requires(*body.groups)
        return book.excludes(*body.groups)

    _, rule = await _change_book(request, client_id, add)
    view = rule_view(rule, client)
    await _audit(request, _db(request), "group_rule", ",".join(rule.groups), "create", None, view)
    return json_response(view, 201)


# --- clients, profiles, phones, accounts --------------------------------------------------


async def _organization(request: web.Request, ref: str) -> dict | None:
    """The organization ``ref`` straight from the farm database: organizations are not
    client rows, and the caller's right to one is checked by the route."""
    return await request.app[HUB].farm_db().organization_row(ref)


async def _set_organization(request: web.Request, client: str, organization_id: int) -> None:
    await request.app[HUB].farm_db().set_client_organization(client, organization_id)


@_handled
async def get_clients(request: web.Request) -> web.Response:
    return json_response({"clients": await _db(request).client_rows()})


@_handled
async def post_client(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), ClientBody, "a JSON object with name")
    db = _db(request)
    principal = principal_of(request)
    organization_id = None
    if body.organization is not None:
        # Checked before anything is written: an admin places clients in its own
        # organization only (and learns nothing about the others).
        org = await _organization(request, body.organization)
        if not principal.is_super and (principal.role != "admin" or org is None or
                                       org["organization_id"] != principal.organization_id):
            raise AccessDenied(f"organization {body.organization!r} is not yours")
        if org is None:
            raise ValidationError("$.organization",
                                  f"no such organization: {body.organization!r}")
        organization_id = org["organization_id"]
    before = await db.client_row(body.name)
    await db.upsert_client(body.name, status=body.status, contact_email=body.contact_email,
                           contact_discord=body.contact_discord)
    if organization_id is not None:
        await _set_organization(request, body.name, organization_id)
    after = await db.client_row(body.name)
    await _audit(request, db, "client", after["client_id"], "update" if before else "create", before, after)
    return json_response(after, 200 if before else 201)


@_handled
async def delete_client(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    db = _db(request)
    before = await db.client_row(name)
    if before is None:
        raise LookupError(f"no such client: {name!r}")
    await db.upsert_client(name, status=RETIRED, contact_email=before["contact_email"],
                           contact_discord=before["contact_discord"])
    after = await db.client_row(name)
    await _audit(request, db, "client", after["client_id"], "retire", before, after)
    return json_response(after)


@_handled
async def get_profiles(request: web.Request) -> web.Response:
    return json_response({"profiles": await _db(request).profile_rows()})


@_handled
async def post_profile(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), ProfileBody, "a JSON object of profile fields")
    db = _db(request)
    fields = {k: v for k, v in msgspec.structs.asdict(body).items()
              if v is not None and k not in ("profile_id", "client")}
    if body.client is not None and await db.client_row(body.client) is None:
        raise ValidationError("$.client", f"no such client: {body.client!r}")
    before = None
    if body.profile_id is not None:
        before = await db.profile_row(body.profile_id)
        if before is None:
            raise LookupError(f"no such profile: {body.profile_id}")
    profile_id = await db.upsert_profile(body.profile_id, client=body.client, **fields)
    after = await db.profile_row(profile_id)
    await _audit(request, db, "profile", profile_id, "update" if before else "create", before, after)
    return json_response(after, 200 if before else 201)


@_handled
async def get_phone_registry(request: web.Request) -> web.Response:
    return json_response({"phones": await _db(request).phone_rows()})


async def _phone_row(db: Any, serial: str) -> dict | None:
    return next((r for r in await db.phone_rows() if r["serial"] == serial), None)


@_handled
async def post_phone_registry(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), PhoneBody, "a JSON object with serial")
    db = _db(request)
    if body.client is not None and await db.client_row(body.client) is None:
        raise ValidationError("$.client", f"no such client: {body.client!r}")
    before = await _phone_row(db, body.serial)
    await db.upsert_phone(body.serial, client=body.client, model=body.model,
                          phone_number=body.phone_number, status=body.status, agent=body.agent)
    after = await _phone_row(db, body.serial)
    await _audit(request, db, "phone", after["phone_id"], "update" if before else "create", before, after)
    return json_response(after, 200 if before else 201)


@_handled
async def delete_phone_registry(request: web.Request) -> web.Response:
    serial = request.match_info["serial"]
    db = _db(request)
    before = await _phone_row(db, serial)
    if before is None:
        raise LookupError(f"no such phone in the registry: {serial!r}")
    await db.upsert_phone(serial, status=RETIRED)
    after = await _phone_row(db, serial)
    await _audit(request, db, "phone", after["phone_id"], "retire", before, after)
    return json_response(after)


async def _tag(request: web.Request, tag: str, add: bool) -> web.Response:
    """Add or remove a custom tag (spec 4.3; the hub keeps them, GET /api/phones shows
    them); audited when the hub has a farm database."""
    from protocol.errors import PhoneNotFound

    serial = request.match_info["serial"]
    hub = hub_of(request)
    before = next((p.get("tags", []) for p in hub.phones() if p["serial"] == serial), None)
    try:
        after = hub.tag_phone(serial, tag, add)
    except PhoneNotFound as exc:
        raise LookupError(str(exc)) from None
    try:
        db = hub.farm_db()
    except FarmError:
        db = None
    if db is not None:
        await _audit(request, db, "phone_tags", serial, "update", {"tags": before}, {"tags": after})
    return json_response({"serial": serial, "tags": after})


@_handled
async def post_phone_tag(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), TagAdd, "a JSON object with tag")
    return await _tag(request, body.tag, add=True)


@_handled
async def delete_phone_tag(request: web.Request) -> web.Response:
    return await _tag(request, request.match_info["tag"], add=False)


@_handled
async def get_accounts(request: web.Request) -> web.Response:
    from actors.control.accounts import with_health  # it imports this module

    serial = request.query.get("serial")
    # The registry's view: retired accounts too, with their status (as clients and phones),
    # and each one's health, follower series and last posts (issue 21.3).
    rows = await _db(request).account_rows(serial, include_retired=True)
    return json_response({"accounts": await with_health(request, rows)})


async def _account_row(db: Any, account_id: int) -> dict | None:
    return next((a for a in await db.account_rows(include_retired=True)
                 if a["account_id"] == account_id), None)


@_handled
async def post_account(request: web.Request) -> web.Response:
    body = decode_request(await request.read(), AccountBody,
                          "a JSON object with serial, platform and account_number")
    db = _db(request)
    if await _phone_row(db, body.serial) is None:
        raise ValidationError("$.serial", f"phone {body.serial!r} is not in the registry "
                                          f"(POST /api/phones/registry first)")
    if body.profile_id is not None and await db.profile_row(body.profile_id) is None:
        raise ValidationError("$.profile_id", f"no such profile: {body.profile_id}")
    before = next((a for a in await db.account_rows(body.serial, include_retired=True)
                   if a["platform"] == body.platform
                   and a["account_number"] == body.account_number), None)
    account_id = await db.upsert_account(
        body.serial, body.platform, body.account_number, username=body.username,
        password=body.password, profile_id=body.profile_id, status=body.status, bio=body.bio)
    after = await _account_row(db, account_id)
    await _audit(request, db, "account", account_id, "update" if before else "create",
                 _secretless(before), _secretless(after))
    return json_response(after, 200 if before else 201)


@_handled
async def delete_account(request: web.Request) -> web.Response:
    account_id = ACCOUNT_ID.parse(request)
    db = _db(request)
    before = await _account_row(db, account_id)
    if before is None:
        raise LookupError(f"no such account: {account_id}")
    await db.upsert_account(before["serial"], before["platform"], before["account_number"],
                            status=RETIRED)
    after = await _account_row(db, account_id)
    await _audit(request, db, "account", str(account_id), "retire", _secretless(before),
                 _secretless(after))
    return json_response(after)


def _secretless(row: dict | None) -> dict | None:
    return None if row is None else {k: v for k, v in row.items()
                                     if k not in ("password", "profile")}


# --- OpenAPI --------------------------------------------------------------------------------


def openapi_paths(error) -> dict[str, Any]:
    """This module's OpenAPI paths; ``error(description)`` is the document's error response."""
    obj = {"description": "JSON object", "content": {"application/json": {
        "schema": {"type": "object"}}}}

    bad = error("bad body (`field` is the JSON path) or a broken group rule")
    unauthorized = error("missing or wrong bearer token (only when a token is configured)")
    no_db = error("the coordinator has no farm database")
    missing = error("no such entity")

    def op(op_id: str, summary: str, *, request: str | None = None, params=(),
           created: bool = False, found: bool = False) -> dict:
        responses: dict[str, Any] = {"201" if created else "200": obj, "401": unauthorized,
                                     "409": no_db}
        if created:
            responses["200"] = {"description": "updated an existing entity", **{
                k: v for k, v in obj.items() if k != "description"}}
        if request or params:
            responses["400"] = bad
        if found:
            responses["404"] = missing
        out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
        if request:
            out["requestBody"] = openapi_body(request)
        if params:
            out["parameters"] = list(params)
        return out

    name = openapi_path_param("name", "group name")
    book = {"name": "client", "in": "query", "required": False, "schema": {"type": "string"},
            "description": "the client whose group book (default: a super user's shared "
                           "book, another user's only client, or the one of theirs with "
                           "the group)"}
    return {
        "/api/groups": {
            "get": op("listGroups", "Every group (stored members, resolved member count) and "
                      "rule of a group book (a user's: each of its clients')", params=[book]),
            "post": op("createGroup", "Create a group (custom, or smart with a filter)",
                       request="GroupCreate", created=True)},
        "/api/groups/rules": {"post": op(
            "addGroupRule", "Add an exclusive, requires or excludes rule (checked against the "
            "current members)", request="RuleCreate", created=True, found=True)},
        "/api/groups/{name}": {"delete": op(
            "deleteGroup", "Delete a group (refused for system groups, parents, ruled groups)",
            params=[name, book], found=True)},
        "/api/groups/{name}/members": {"post": op(
            "addGroupMember", "Add a member (hierarchy and rules checked)", request="MemberAdd",
            params=[name, book], found=True)},
        "/api/groups/{name}/members/{member}": {"delete": op(
            "removeGroupMember", "Remove a member", found=True,
            params=[name, openapi_path_param("member", "serial or platform.number@serial, URL-encoded"),
                    book])},
        "/api/clients": {
            "get": op("listClients", "Every client"),
            "post": op("upsertClient", "Create or update a client (by name)",
                       request="ClientBody", created=True)},
        "/api/clients/{name}": {"delete": op(
            "retireClient", "Soft delete: status becomes retired", params=[openapi_path_param("name")],
            found=True)},
        "/api/profiles": {
            "get": op("listProfiles", "Every profile"),
            "post": op("upsertProfile", "Create a profile, or update one by profile_id",
                       request="ProfileBody", created=True, found=True)},
        "/api/phones/registry": {
            "get": op("listRegisteredPhones", "The farm database's phones (client, model, "
                      "status, agent, profile); /api/phones is the live directory"),
            "post": op("upsertRegisteredPhone", "Create or update a phone (by serial)",
                       request="PhoneBody", created=True)},
        "/api/phones/registry/{serial}": {"delete": op(
            "retireRegisteredPhone", "Soft delete: status becomes retired",
            params=[openapi_path_param("serial", "device serial, URL-encoded")], found=True)},
        "/api/phones/{serial}/tags": {"post": op(
            "addPhoneTag", "Add a custom tag to a live phone (shown in /api/phones, usable "
            "in phone:TAG scopes)", request="TagAdd", found=True,
            params=[openapi_path_param("serial", "device serial, URL-encoded")])},
        "/api/phones/{serial}/tags/{tag}": {"delete": op(
            "removePhoneTag", "Remove a custom tag from a phone", found=True,
            params=[openapi_path_param("serial", "device serial, URL-encoded"), openapi_path_param("tag")])},
        "/api/accounts": {
            "get": {**op("listAccounts", "Every account (or one phone's with ?serial=), "
                         "with its health (ok, watch, at_risk and why), followers series "
                         "and last posts; ?health=at_risk,watch keeps those states"),
                    "parameters": [{"name": "serial", "in": "query", "required": False,
                                    "schema": {"type": "string"}},
                                   {"name": "health", "in": "query", "required": False,
                                    "schema": {"type": "string"}}]},
            "post": op("upsertAccount", "Create or update an account (platform, number, phone)",
                       request="AccountBody", created=True)},
        "/api/accounts/{account_id}": {"delete": op(
            "retireAccount", "Soft delete: status becomes retired",
            params=[ACCOUNT_ID.openapi()], found=True)},
    }
