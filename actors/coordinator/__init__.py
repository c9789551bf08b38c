"""What runs once, centrally: the hub, runs, scheduling, AI recovery and discovery,
the registry store."""
