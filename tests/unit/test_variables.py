"""Template text: the spintax/variable parser (nesting, escapes, every error with its offset)
and resolution of every variable category, pure and from the farm database."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from actors.control.cli import main as farm_main
from actors.store.farm_db import SECRET_MASK, FarmDB, seed_demo
from protocol.errors import ValidationError, VariableError
from sequences.spintax import Spin, Text, Var, parse, spin
from sequences.variables import MemoryCounters, MemoryMedia, VariableContext, resolve

# The database tests run on both engines; the parsing and resolving ones need none.
on_both_engines = pytest.mark.usefixtures("engine")

CLOCK = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_ctx(**overrides) -> VariableContext:
    base = dict(
        serial="emu-1",
        client={"name": "Acme", "status": "active", "contact_email": "ops@acme.test",
                "contact_discord": "acme#1"},
        profile={"first_name": "Ava", "last_name": "Lee", "birth_month": 4, "birth_day": 9,
                 "birth_year": 1999, "gender": "f", "profile_password": "prof-pw",
                 "interests": "dance"},
        accounts=[{"platform": "tiktok", "account_number": "account1", "username": "ava_t",
                   "password": "tt-pw", "bio": "hi there"},
                  {"platform": "tiktok", "account_number": "account2", "username": "ava_t2",
                   "password": None}],
        account=("tiktok", "account1"),
        hashtag_sets={"demo": ["fun", "#daily"]},
        caption_templates={"daily": "{Hi|Hello} ${profile.first_name} ${content.hashtags.demo}",
                           "outer": "[${content.caption.daily}]",
                           "loop": "x ${content.caption.loop}",
                           "broken": "ok ${profile.nope}"},
        media=MemoryMedia({"clips": ["b.mp4", "a.jpg"], "": ["default.jpg"]}),
        custom={"shop": "Acme Shop", "promo.code": "SAVE10"},
        counters=MemoryCounters(),
        clock=lambda: CLOCK,
    )
    base.update(overrides)
    return VariableContext(**base)


def run(text: str, ctx: VariableContext | None = None, seed: int = 0) -> str:
    return resolve(text, ctx or make_ctx(), random.Random(seed))


def error_of(text: str, ctx: VariableContext | None = None) -> VariableError:
    with pytest.raises(VariableError) as info:
        run(text, ctx)
    return info.value


# --- parser -----------------------------------------------------------------------------------


def test_parse_nesting_both_ways():
    nodes = parse("a {b|${x.y}|{c|d}} ${dynamic.random.choice({e|f},g)}")
    assert nodes[0] == Text("a ", 0)
    spin_node = nodes[1]
    assert isinstance(spin_node, Spin) and spin_node.offset == 2
    assert spin_node.options[0] == (Text("b", 3),)
    assert isinstance(spin_node.options[1][0], Var) and spin_node.options[1][0].path == ("x", "y")
    assert isinstance(spin_node.options[2][0], Spin)
    var = nodes[3]
    assert isinstance(var, Var) and var.path == ("dynamic", "random", "choice")
    assert isinstance(var.args[0][0], Spin) and var.args[1] == (Text("g", 49),)


def test_escapes_and_literal_characters():
    assert run(r"\{a\|b\} \$\{x\} \\ a|b (c) $5 \n") == r"{a|b} ${x} \ a|b (c) $5 \n"
    assert run(r"{a\|b|a\|b}") == "a|b"
    assert run(r"${dynamic.random.choice(a\,b)}") == "a,b"
    assert run("${ai.caption(x)}".replace("ai.caption", "custom.shop").replace("(x)", "")) \
        == "Acme Shop"


def test_arguments_keep_balanced_parentheses():
    assert run("${dynamic.random.choice((a, b))}") == "(a, b)"


@pytest.mark.parametrize("text, offset, reason", [
    ("abc ${client.name", 4, "unterminated variable"),
    ("ab {x|y", 3, "unterminated spintax"),
    ("ab {x|{y}", 3, "unterminated spintax"),
    ("a}b", 1, "closes nothing"),
    ("x ${}", 2, "empty variable name"),
    ("${a..b}", 4, "empty name part"),
    ("${a.}", 4, "empty name part"),
    ("${a b}", 3, "unexpected ' '"),
    ("${a.b(x}", 5, "unclosed '('"),
    ("${a.b(x", 5, "unclosed '('"),
    ("${a.b(x)y}", 8, "expected '}' after ')'"),
    ("${a.b(x)", 0, "unterminated variable"),
    ("ok {}", 3, "empty spintax"),
    ("{a|${b c}}", 6, "unexpected ' '"),
])
def test_parse_errors_name_the_offset(text, offset, reason):
    with pytest.raises(VariableError) as info:
        parse(text)
    error = info.value
    assert (error.offset, error.text) == (offset, text)
    assert reason in error.reason
    assert str(error).startswith(f"text {text!r}: offset {offset}: ")
    assert isinstance(error, ValidationError)


def test_spin_alone_refuses_variables():
    assert spin("{a|a}", random.Random(0)) == "a"
    with pytest.raises(VariableError, match="offset 4"):
        spin("{a} ${x.y}", random.Random(0))


def test_spintax_covers_every_option_with_a_seeded_rng():
    rng = random.Random(7)
    counts = Counter(resolve("{a|b|{c|d}}", make_ctx(), rng) for _ in range(400))
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(counts[k] > 60 for k in "ab") and all(counts[k] > 25 for k in "cd")
    # The same seed gives the same text.
    text = "Just {watched|viewed|finished} this {amazing|incredible|awesome} {video|clip}!"
    assert run(text, seed=3) == run(text, seed=3)


# --- categories ---------------------------------------------------------------------------------


def test_client_and_profile():
    assert run("${client.name} ${client.status} ${client.contact.email} "
               "${client.contact.discord}") == "Acme active ops@acme.test acme#1"
    assert run("${profile.first_name} ${profile.last_name} ${profile.birth_day}.${profile."
               "birth_month}.${profile.birth_year} ${profile.gender} ${profile.interests} "
               "${profile.profile_password}") == "Ava Lee 9.4.1999 f dance prof-pw"


def test_account_fields_shorthand_and_password_fallback():
    assert run("${account.tiktok.account1.username} ${account.tiktok.account1.bio}") \
        == "ava_t hi there"
    assert run("${account.username}/${account.password}") == "ava_t/tt-pw"
    assert run("${account.tiktok.account2.password}") == "prof-pw"
    ctx = make_ctx(accounts=[{"platform": "ig", "account_number": "account1", "password": "",
                              "profile": {"profile_password": "own-profile"}}])
    assert run("${account.ig.account1.password}", ctx) == "own-profile"


def test_content():
    assert run("${content.hashtags.demo}") == "#fun #daily"
    assert run("${content.caption.daily}", seed=1) in ("Hi Ava #fun #daily",
                                                         "Hello Ava #fun #daily")
    assert run("${content.caption.outer}").startswith("[H")
    ctx = make_ctx()
    assert run("${content.media.folder(clips)} ${content.media.folder(clips)} "
               "${content.media.folder(clips)} ${content.media.next}", ctx) \
        == "a.jpg b.mp4 a.jpg default.jpg"


def test_dynamic():
    assert run("${dynamic.date.format(%d.%m.%Y)} ${dynamic.time.format(%H:%M)}") \
        == "02.01.2026 03:04"
    assert run("${dynamic.date} ${dynamic.time}") == "2026-01-02 03:04"
    assert run("${dynamic.date.format(%Y, %j)}") == "2026, 002"
    numbers = {int(run("${dynamic.random.number(1-3)}", seed=s)) for s in range(60)}
    assert numbers == {1, 2, 3}
    assert run("${dynamic.random.number(-2--2)}") == "-2"
    choices = {run("${dynamic.random.choice(red, green ,blue)}", seed=s) for s in range(60)}
    assert choices == {"red", "green", "blue"}
    ctx = make_ctx()
    assert run("${dynamic.counter(posts,10,5)} ${dynamic.counter(posts,10,5)} "
               "${dynamic.counter(other)}", ctx) == "10 15 1"


def test_custom_and_variables_inside_arguments():
    assert run("${custom.shop} ${custom.promo.code}") == "Acme Shop SAVE10"
    assert run("${dynamic.random.choice(${custom.shop})}") == "Acme Shop"


def test_only_the_chosen_option_is_resolved():
    ctx = make_ctx()
    for seed in range(10):
        run("{a|${dynamic.counter(n)}}", ctx, seed)
    # The counter moved once per time its option was chosen, not once per resolution.
    assert 0 < ctx.counters.values["n"] < 10


class FakeAI:
    def caption(self, prompt: str) -> str:
        return f"caption<{prompt}>"

    def response(self, context: str) -> str:
        return f"reply<{context}>"

    def hashtags(self, topic: str, count: int) -> str:
        return " ".join(f"#{topic}{i}" for i in range(count))


def test_ai_through_the_provider_and_a_clear_error_without_one():
    ctx = make_ctx(ai=FakeAI())
    assert run("${ai.caption(about ${profile.first_name}, briefly)}", ctx) \
        == "caption<about Ava, briefly>"
    assert run("${ai.response(nice clip)} ${ai.hashtags(dance, 2)}", ctx) \
        == "reply<nice clip> #dance0 #dance1"
    error = error_of("Hey ${ai.caption(write something)}")
    assert error.offset == 4 and "no AI provider configured" in error.reason


@pytest.mark.parametrize("text, offset, reason", [
    ("x ${weather.today}", 2, "unknown variable category 'weather'"),
    ("${client.phone}", 0, "unknown client field 'phone'"),
    ("${profile.nick}", 0, "unknown profile field"),
    ("ab ${account.tiktok.account9.username}", 3, "has no account tiktok.account9"),
    ("${account.tiktok.account1.karma}", 0, "unknown account field 'karma'"),
    ("${account.tiktok.username}", 0, "${account.PLATFORM.ACCOUNT_NUMBER.FIELD}"),
    ("${account.tiktok.account2.bio}", 0, "not set for account tiktok.account2"),
    ("${content.hashtags.nope}", 0, "no hashtag set 'nope'"),
    ("${content.caption.nope}", 0, "no caption template 'nope'"),
    ("${content.caption.loop}", 0, "names itself (loop -> loop)"),
    ("${content.caption.broken}", 0, "in caption template 'broken': offset 3"),
    ("${content.media.folder(empty)}", 0, "has no media files"),
    ("${content.video}", 0, "unknown content variable"),
    ("${dynamic.random.number(5-1)}", 0, "empty range"),
    ("${dynamic.random.number(a-b)}", 0, "range of whole numbers"),
    ("${dynamic.random.choice}", 0, "usage"),
    ("${dynamic.counter(n,x)}", 0, "whole numbers"),
    ("${dynamic.weekday}", 0, "unknown dynamic variable"),
    ("${custom.nope}", 0, "no custom variable 'nope'"),
    ("${client.name(x)}", 0, "takes no arguments"),
    ("${ai.hashtags(dance,many)}", 0, "count must be a whole number"),
    ("{a|${custom.nope}}", 3, "no custom variable"),
])
def test_resolution_errors_name_the_variable_and_offset(text, offset, reason):
    ctx = make_ctx()
    # Spintax must take the failing option: try seeds until it does.
    for seed in range(20):
        try:
            resolve(text, ctx, random.Random(seed))
        except VariableError as error:
            assert (error.text, error.offset) == (text, offset)
            assert reason in error.reason
            assert text[offset:offset + 2] == "${"
            return
    pytest.fail(f"{text!r} resolved without an error")


def test_shorthand_without_a_current_account():
    assert "no current account" in error_of("${account.username}", make_ctx(account=None)).reason


def test_phone_without_profile_or_client():
    ctx = make_ctx(profile={}, client={})
    assert "has no profile" in error_of("${profile.first_name}", ctx).reason
    assert "belongs to no client" in error_of("${client.name}", ctx).reason


# --- from the farm database ---------------------------------------------------------------------


@on_both_engines
async def test_context_from_the_database(tmp_path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    await seed_demo(db, ["emu-1", "emu-2"])
    await db.set_custom("shop", "Farm-wide")
    await db.set_custom("shop", "Acme's own", client="Acme")  # emu-2 is Acme's
    text = ("${client.name}|${profile.first_name}|${account.username}|${account.password}|"
            "${account.clipshare.account3.username}|${custom.shop}|${custom.extra}")
    out = await db.resolve_text(text, "emu-2", "clipshare.account2",
                                custom_overrides={"extra": "X"}, secrets=True)
    assert out == "Acme|Ben|dance_daily|pass123|chef_mia|Acme's own|X"
    # Without secrets=True (every path but a run's typing) a password is masked.
    out = await db.resolve_text(text, "emu-2", "clipshare.account2",
                                custom_overrides={"extra": "X"})
    assert out == f"Acme|Ben|dance_daily|{SECRET_MASK}|chef_mia|Acme's own|X"
    caption = await db.resolve_text("${content.caption.daily}", "emu-1", rng=random.Random(1))
    assert "Ava" in caption and caption.endswith("#phonefarm #clipshare #daily")
    with pytest.raises(ValidationError, match="has no account clipshare.account9"):
        await db.variable_context("emu-1", "clipshare.account9")
    with pytest.raises(ValidationError, match="not in the farm database"):
        await db.variable_context("emu-9")
    # On the event loop's own thread a database-backed counter refuses instead of deadlocking.
    ctx = await db.variable_context("emu-1")
    with pytest.raises(VariableError, match="worker thread"):
        resolve("${dynamic.counter(n)}", ctx, random.Random())
    await db.close()


@on_both_engines
async def test_counter_and_media_persist_across_opens(tmp_path):
    path = tmp_path / "farm.sqlite3"
    media = tmp_path / "media"
    media.mkdir()
    for name in ("one.jpg", "two.jpg"):
        (media / name).write_text("x")
    seen = []
    for _ in range(3):
        db = await FarmDB.open(path)
        await seed_demo(db, ["emu-1"])
        seen.append(await db.resolve_text("${dynamic.counter(posts)} ${content.media.next}",
                                          "emu-1"))
        await db.close()
    assert [s.split()[0] for s in seen] == ["1", "2", "3"]
    assert [s.split()[1].rsplit("/", 1)[1] for s in seen] == ["one.jpg", "two.jpg", "one.jpg"]


@on_both_engines
async def test_caption_templates_are_checked_when_stored(tmp_path):
    db = await FarmDB.open(tmp_path / "farm.sqlite3")
    with pytest.raises(VariableError, match="offset 3"):
        await db.set_caption_template("bad", "ok {a|b")
    await db.close()


# --- farm vars preview ---------------------------------------------------------------------------


@pytest.fixture
def demo_db(tmp_path, engine):
    import asyncio

    if engine == "postgresql":
        pytest.skip("farm vars preview reads the data folder's SQLite file (--db is its path)")

    async def make():
        db = await FarmDB.open(tmp_path / "farm.sqlite3")
        await seed_demo(db, ["emu-1"])
        await db.close()
    asyncio.run(make())
    return tmp_path / "farm.sqlite3"


def test_farm_vars_preview(demo_db, capsys):
    assert farm_main(["vars", "preview", "${account.username} #${dynamic.counter(n)}",
                      "--phone", "emu-1", "--account", "clipshare.account2",
                      "--db", str(demo_db)]) == 0
    assert capsys.readouterr().out == "dance_daily #1\n"
    args = ["vars", "preview", "{a|b|c}", "--phone", "emu-1", "--db", str(demo_db), "--seed", "4"]
    farm_main(args)
    first = capsys.readouterr().out
    farm_main(args)
    assert capsys.readouterr().out == first


def test_farm_vars_preview_error_has_a_caret(demo_db, capsys):
    code = farm_main(["vars", "preview", "Hi ${profile.nick}!", "--phone", "emu-1",
                      "--db", str(demo_db)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert "offset 3" in err[0] and "unknown profile field 'nick'" in err[0]
    assert err[1:] == ["  Hi ${profile.nick}!", "     ^"]
    assert farm_main(["vars", "preview", "x", "--phone", "emu-1",
                      "--db", str(demo_db.parent / "missing.sqlite3")]) == 2


def test_scope_functions_inside_variables() -> None:
    """${random.account from …}, ${count.accounts in …}, ${filter.phones where …} (spec 15.2.3)."""
    import random as _random

    from sequences.variables import VariableContext, resolve

    phones = [{"serial": "p1", "tags": ["phone1"], "profile": {"gender": "female"}},
              {"serial": "p2", "tags": ["phone2"], "profile": {"gender": "male"}}]
    accounts = [{"platform": "clipshare", "account_number": "account1", "serial": "p1"},
                {"platform": "clipshare", "account_number": "account2", "serial": "p1"},
                {"platform": "clipshare", "account_number": "account1", "serial": "p2"}]
    ctx = VariableContext(phones=phones, farm_accounts=accounts)
    rng = _random.Random(3)
    assert resolve("${count.accounts in account:clipshare.all@all} accounts", ctx, rng) == "3 accounts"
    assert resolve("{men|males}: ${filter.phones where profile.gender=male}", ctx,
                   _random.Random(0)) in ("men: p2", "males: p2")
    picked = resolve("${random.account from account:clipshare.all@phone1}", ctx, rng)
    assert picked in ("clipshare.account1@p1", "clipshare.account2@p1")
    text = "go ${count.accounts in account:tiktok.all@all}"
    with pytest.raises(VariableError) as err:
        resolve(text, ctx, rng)
    assert err.value.offset == text.index("tiktok")
