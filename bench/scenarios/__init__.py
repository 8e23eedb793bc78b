"""One module per scenario; each has ``run(settings) -> Scenario``."""
