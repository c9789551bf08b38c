"""A report's summary as plain text and as one HTML document.

Owns the two renderings of an actors.coordinator.reports.build summary: `render_text`
(readable in a terminal, a chat message or an e-mail's text part) and `render_html` (one
self-contained page: inline style, screenshots as small images by URL, never embedded
bytes). Everything taken from the database (client, sequence, step, screen and phone
names, errors, URLs) is escaped in the HTML; `title` is the notice's subject line.
"""

from __future__ import annotations

from html import escape
from typing import Any


def title(summary: dict[str, Any]) -> str:
    partial = " (so far)" if summary["period"]["partial"] else ""
    return f"Daily report {summary['day']}{partial}: {summary['client']}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_text(summary: dict[str, Any], report_url: str | None = None) -> str:
    """The report as plain text, one fact a line."""
    ex, rec, human = summary["executions"], summary["recovery"], summary["needs_human"]
    lines = [title(summary), "",
             f"Period: {summary['period']['start']} to {summary['period']['end']} (UTC)",
             f"Runs: {summary['runs']}   Executions: {ex['total']} ({ex['completed']} "
             f"completed, {ex['failed']} failed, {ex['other']} other)",
             f"Success rate: {_pct(summary['success_rate'])}",
             f"Recovery: {rec['attempts']} attempts, {rec['succeeded']} succeeded, "
             f"{rec['failed']} failed (success rate {_pct(rec['success_rate'])})", ""]
    lines.append("Failures by reason:" if summary["failures"] else "Failures: none")
    for group in summary["failures"]:
        lines.append(f"  {group['reason']}: {group['count']}")
        for e in group["examples"]:
            where = f" at {e['step']}" if e.get("step") else ""
            screen = f" on {e['screen']}" if e.get("screen") else ""
            lines.append(f"    - {e['sequence']} on {e['serial']}{where}{screen}: "
                         f"{e.get('error') or 'no message'}")
            if e.get("screenshot"):
                lines.append(f"      screenshot: {e['screenshot']}")
    lines.append("")
    if not any(human.values()):
        lines.append("Phones that needed a human: none")
    else:
        lines.append("Phones that needed a human:")
        for p in human["paused"]:
            lines.append(f"  - {p['serial']}: paused ({p['reason']}) since {p['since']}; "
                         f"resume: POST {p['resume']}")
        for p in human["failed_recovery"]:
            lines.append(f"  - {p['serial']}: {p['failures']} failed recoveries (last: "
                         f"{p.get('last_error') or 'no reason'})")
        for u in human["unknown_screens"]:
            lines.append(f"  - unknown screen {u['id']} ({u.get('app') or 'app?'}) seen "
                         f"{u.get('seen')}x by {', '.join(u['serials'])}: {u['image']}")
    lines.append("")
    recs = summary["recommendations"]
    lines.append(f"Recommendations (steps needing help in more than {summary['threshold']} "
                 "executions):" if recs else
                 f"Recommendations: none (no step needed help in more than "
                 f"{summary['threshold']} executions)")
    for r in recs:
        lines.append(f"  - {r['advice']}")
    if report_url:
        lines += ["", f"This report: {report_url}"]
    return "\n".join(lines) + "\n"


_STYLE = ("body{font-family:system-ui,sans-serif;color:#222;max-width:60em;margin:1em auto;"
          "padding:0 1em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid "
          "#ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f4f4f4}"
          "img.shot{max-width:120px;max-height:240px;border:1px solid #ccc}"
          ".muted{color:#777}.bad{color:#b00}.good{color:#070}")


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _link(url: str | None, text: str) -> str:
    return f'<a href="{_e(url)}">{_e(text)}</a>' if url else _e(text)


def _shot(url: str | None, alt: str) -> str:
    if not url:
        return '<span class="muted">no screenshot</span>'
    return (f'<a href="{_e(url)}"><img class="shot" src="{_e(url)}" alt="{_e(alt)}" '
            f'loading="lazy"></a>')


def render_html(summary: dict[str, Any], report_url: str | None = None) -> str:
    """The report as one HTML document (everything from the database escaped)."""
    ex, rec, human = summary["executions"], summary["recovery"], summary["needs_human"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(title(summary))}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{_e(title(summary))}</h1>",
           f'<p class="muted">{_e(summary["period"]["start"])} to '
           f'{_e(summary["period"]["end"])} (UTC), made {_e(summary["generated_at"])}</p>',
           "<table><tr><th>Runs</th><th>Executions</th><th>Completed</th><th>Failed</th>"
           "<th>Other</th><th>Success rate</th><th>Recovery attempts</th>"
           "<th>Recovered</th></tr>",
           f"<tr><td>{_e(summary['runs'])}</td><td>{_e(ex['total'])}</td>"
           f"<td class=\"good\">{_e(ex['completed'])}</td><td class=\"bad\">{_e(ex['failed'])}"
           f"</td><td>{_e(ex['other'])}</td><td>{_e(_pct(summary['success_rate']))}</td>"
           f"<td>{_e(rec['attempts'])}</td><td>{_e(rec['succeeded'])} "
           f"({_e(_pct(rec['success_rate']))})</td></tr></table>",
           "<h2>Failures by reason</h2>"]
    if not summary["failures"]:
        out.append("<p>None.</p>")
    for group in summary["failures"]:
        out.append(f"<h3>{_e(group['reason'])}: {_e(group['count'])}</h3><table><tr>"
                   "<th>Sequence</th><th>Phone</th><th>Step</th><th>Screen</th><th>Error</th>"
                   "<th>Screenshot</th></tr>")
        for e in group["examples"]:
            out.append(f"<tr><td>{_e(e['sequence'])}</td><td>{_e(e['serial'])}</td>"
                       f"<td>{_e(e.get('step'))}</td><td>{_e(e.get('screen'))}</td>"
                       f"<td>{_e(e.get('error'))}</td>"
                       f"<td>{_shot(e.get('screenshot'), str(e.get('step') or ''))}</td></tr>")
        out.append("</table>")
    out.append("<h2>Phones that needed a human</h2>")
    if not any(human.values()):
        out.append("<p>None.</p>")
    else:
        out.append("<ul>")
        for p in human["paused"]:
            out.append(f"<li>{_e(p['serial'])}: paused ({_e(p['reason'])}) since "
                       f"{_e(p['since'])}; resume with <code>POST {_e(p['resume'])}</code></li>")
        for p in human["failed_recovery"]:
            out.append(f"<li>{_e(p['serial'])}: {_e(p['failures'])} failed recoveries "
                       f"(last: {_e(p.get('last_error') or 'no reason')})</li>")
        for u in human["unknown_screens"]:
            out.append(f"<li>unknown screen {_link(u['image'], u['id'])} "
                       f"({_e(u.get('app') or 'app?')}) seen {_e(u.get('seen'))}x by "
                       f"{_e(', '.join(u['serials']))}<br>{_shot(u['image'], u['id'])}</li>")
        out.append("</ul>")
    out.append(f"<h2>Recommendations</h2><p class=\"muted\">Steps that failed or needed "
               f"recovery in more than {_e(summary['threshold'])} executions.</p>")
    if not summary["recommendations"]:
        out.append("<p>None.</p>")
    else:
        out.append("<table><tr><th>Sequence</th><th>Step</th><th>Times</th>"
                   "<th>Screens met</th><th>Fixed most by</th><th>Advice</th></tr>")
        for r in summary["recommendations"]:
            screens = "<br>".join(
                f"{_e(s['screen']) if s['registered'] else _link(s.get('image'), 'unknown ' + s['screen'])}"
                f" ({_e(s['count'])}x)" for s in r["screens"]) or '<span class="muted">none</span>'
            fix = r["fix"]
            fixed = (f"{_e(fix['path'])} ({_e(fix['count'])} of {_e(fix['of'])})" if fix
                     else '<span class="muted">nothing yet</span>')
            out.append(f"<tr><td>{_e(r['sequence'])}</td><td>{_e(r['step'])}</td>"
                       f"<td>{_e(r['times'])}</td><td>{screens}</td><td>{fixed}</td>"
                       f"<td>{_e(r['advice'])}</td></tr>")
        out.append("</table>")
    if report_url:
        out.append(f'<p class="muted">This report: {_link(report_url, report_url)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"
