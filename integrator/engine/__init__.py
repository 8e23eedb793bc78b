"""The engine: routes, their workers, the supervisor, shutdown and reload."""
