"""Schedules, the scheduler core and workflows."""
