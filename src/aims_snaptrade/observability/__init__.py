"""Observability: what a running client tells its operators.

- :mod:`~aims_snaptrade.observability.telemetry`: OpenTelemetry spans and metrics for every call;
- :mod:`~aims_snaptrade.observability.metric_table`: the one table of instruments and alerts;
- :mod:`~aims_snaptrade.observability.alert_rules`: Prometheus rules built from that table;
- :mod:`~aims_snaptrade.observability.health`: the in-process ``HealthMonitor`` (liveness, readiness).

Nothing is imported here, so importing one part does not load the others (or OpenTelemetry).
"""
