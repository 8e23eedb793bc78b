import time
from tests.test_alerts import *  # noqa

async def test_dbg(run_route, receiver):
    sinks = WatchedSinks()
    toml = flaky_route(extra=', breaker = { failure_threshold = 2, cooldown = "50ms" }')
    toml += alerts_toml(receiver, '[[alerts.rules]]\nwhen = "breaker_open"\nrepeat = "1h"')
    t0 = time.time()
    async with run_route(toml, sinks) as d:
        print("started", time.time() - t0)
        await d.wait_for(lambda: receiver.alerts, 5, "the breaker alert")
        print("alert", time.time() - t0)
        stats = d.services.stats["orders"].sinks["flaky"]
        for i in range(30):
            await settle(0.1)
            print(round(time.time() - t0, 2), stats.failed)
            if stats.failed >= 15:
                break
    print("stopped", time.time() - t0)
