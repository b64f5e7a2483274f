"""Several inspection stations on one device: a supervisor runs each as its own agent process
(docs/stations.md)."""
