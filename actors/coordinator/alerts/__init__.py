"""Alerts and notifications (issue 19.3).

`rules` (the rule and channel model, config/alerts.toml, validation), `store` (schema v18's
tables), `engine` (evaluating rules on hub events and a tick), `notify` (`Notice`,
`Notifier`: the console's list and the outbox with retry), `channels` (webhook, Slack,
Discord and e-mail delivery), `service` (all of it for one coordinator, scoped per caller).
"""
