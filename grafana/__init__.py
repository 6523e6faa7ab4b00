"""Grafana dashboards for netpath-exporter: the generator, the query helpers the tests and the preview share."""
