"""Alerts: rules over the daemon's health, sent through any sink (see docs/operations.md)."""

from integrator.alerts.conditions import Conditions, Finding
from integrator.alerts.manager import Alert, AlertManager, start_alerts

__all__ = ["Alert", "AlertManager", "Conditions", "Finding", "start_alerts"]
