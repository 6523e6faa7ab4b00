"""netpath-exporter: probes every network path a Kubernetes request takes and names the likely cause."""

__version__ = "0.1.0"
