"""Kubernetes I/O (the API client) and pure builders of what kwf creates there."""
