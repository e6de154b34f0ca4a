"""kwf: workflows on Kubernetes, one pod per step, shared state in status."""

__version__ = "0.1.0"
