"""Daily reports per client (spec 12.4) with recommendations (spec 12.3.5), issue 19.5.

`build` gathers a period's figures from the farm database, `render` writes them as text and
HTML, `store` keeps reports (schema v19), `service` makes them on request or every day at
``--report-at`` and hands them to the notifier. The API is actors/control/reports.py, the
CLI actors/control/cli/reports.py.
"""
