"""The AI client, per-client keys, ${ai.*} variables, recovery from unknown screens and
screen discovery."""
