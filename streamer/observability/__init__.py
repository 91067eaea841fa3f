"""Observability: Prometheus metrics of each worker, the live dashboard, and log formatting."""
