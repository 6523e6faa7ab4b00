"""A K3s-like cluster in network namespaces, with the 504 faults on demand (see docs/lab.md)."""
