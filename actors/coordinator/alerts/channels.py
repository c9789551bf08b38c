"""Delivering one notice to one channel: the body each channel type takes, and the send.

Owns the wire shapes: ``webhook`` (the generic JSON body below), ``slack`` (a Slack
incoming-webhook body: ``text`` plus ``blocks``), ``discord`` (a Discord webhook body:
``content`` plus ``embeds``) and ``email`` (a multipart text + HTML message over SMTP with
aiosmtplib; STARTTLS or implicit TLS, the server's certificate checked, against
``ca_file`` when given; the password read from its file). `deliver` raises
`DeliveryFailed` with a one-line reason; the outbox (actors.coordinator.alerts.notify)
retries.

The generic webhook body::

    {"id": 12, "kind": "alert", "client": "Acme" | null, "title": "...", "text": "...",
     "html": "..." | null, "links": {"execution": "https://..."}, "key": "...",
     "created_at": "2026-12-07T01:00:00Z"}
"""

from __future__ import annotations

import html as html_lib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiohttp
import aiosmtplib

from actors.coordinator.alerts.rules import Channel

SLACK_TEXT_MAX = 3000
DISCORD_CONTENT_MAX = 2000
DISCORD_DESCRIPTION_MAX = 4096


class DeliveryFailed(Exception):
    """A channel refused or could not take a notice (the reason, one line)."""


def webhook_body(notice: dict) -> dict:
    return {k: notice.get(k) for k in ("id", "kind", "client", "title", "text", "html",
                                        "links", "key", "created_at")}


def slack_body(notice: dict) -> dict:
    links = notice.get("links") or {}
    link_text = "  ".join(f"<{url}|{label}>" for label, url in links.items())
    text = f"*{notice['title']}*\n{notice['text']}" + (f"\n{link_text}" if link_text else "")
    blocks: list[dict] = [{"type": "section", "text": {
        "type": "mrkdwn", "text": _cut(f"*{notice['title']}*\n{notice['text']}", SLACK_TEXT_MAX)}}]
    if links:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": _cut(link_text, SLACK_TEXT_MAX)}]})
    return {"text": _cut(text, SLACK_TEXT_MAX), "blocks": blocks}


def discord_body(notice: dict) -> dict:
    links = notice.get("links") or {}
    embed: dict[str, Any] = {"title": _cut(notice["title"], 256),
                             "description": _cut(notice["text"], DISCORD_DESCRIPTION_MAX),
                             "fields": [{"name": _cut(label, 256), "value": _cut(url, 1024)}
                                        for label, url in list(links.items())[:25]]}
    if links:
        embed["url"] = next(iter(links.values()))
    return {"content": _cut(f"**{notice['title']}**", DISCORD_CONTENT_MAX), "embeds": [embed]}


def email_message(channel: Channel, notice: dict) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = " ".join(f"[phonefarm] {notice['title']}".split())[:200]
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="phonefarm")
    links = notice.get("links") or {}
    text = notice["text"] + "".join(f"\n{label}: {url}" for label, url in links.items())
    message.set_content(text)
    message.add_alternative(notice.get("html") or default_html(notice), subtype="html")
    return message


def default_html(notice: dict) -> str:
    """The HTML of a notice that brings none: its title, text and links."""
    esc = html_lib.escape
    links = "".join(f'<li><a href="{esc(url)}">{esc(label)}</a></li>'
                    for label, url in (notice.get("links") or {}).items())
    body = esc(notice["text"]).replace("\n", "<br>")
    return (f"<html><body><h3>{esc(notice['title'])}</h3><p>{body}</p>"
            + (f"<ul>{links}</ul>" if links else "") + "</body></html>")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


BODIES = {"webhook": webhook_body, "slack": slack_body, "discord": discord_body}


async def deliver(channel: Channel, notice: dict, session: aiohttp.ClientSession) -> None:
    """Send ``notice`` to ``channel``; DeliveryFailed with the reason when it did not take it."""
    if channel.type == "email":
        await _send_email(channel, notice)
        return
    body = BODIES[channel.type](notice)
    try:
        async with session.post(channel.url, json=body,
                                timeout=aiohttp.ClientTimeout(total=channel.timeout_s)) as resp:
            if resp.status >= 300:
                answer = (await resp.text())[:200]
                raise DeliveryFailed(f"HTTP {resp.status} {' '.join(answer.split())}".strip())
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}".strip(": ")) from None


async def _send_email(channel: Channel, notice: dict) -> None:
    host, _, port = (channel.smtp or "").rpartition(":")
    try:
        password = channel.password()
    except OSError as exc:
        raise DeliveryFailed(f"password_file unreadable: {exc.strerror or exc}") from None
    try:
        await aiosmtplib.send(email_message(channel, notice), hostname=host, port=int(port),
                              username=channel.user, password=password,
                              start_tls=channel.starttls, use_tls=channel.tls,
                              cert_bundle=channel.ca_file, timeout=channel.timeout_s)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise DeliveryFailed(f"SMTP {type(exc).__name__}: {exc}") from None
