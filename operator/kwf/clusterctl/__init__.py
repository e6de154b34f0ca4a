"""``kwf``'s cluster commands: submit runs, follow them, steer them, and read
and write their shared state through the Kubernetes API."""

from kwf.clusterctl.commands import register

__all__ = ["register"]
