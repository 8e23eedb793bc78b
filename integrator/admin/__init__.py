"""The admin listener: health, readiness, Prometheus metrics, the admin API and the status page.

It is separate from the webhook listener and loopback-only by default: what it
shows and what it can do (pause a route, replay the DLQ, reload) is for the
operator, not for the Internet. Nothing is imported here so that the config can
use :mod:`integrator.admin.security` without pulling in the HTTP server.
"""
