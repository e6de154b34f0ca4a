"""The pure core of kwf: the DAG, plan(), retries, state merges, templates and CEL."""

from kwf.engine.graph import problems, topological_order
from kwf.engine.health import Reason, health_conditions
from kwf.engine.plan import plan
from kwf.engine.workflow import effective_spec

__all__ = ["Reason", "effective_spec", "health_conditions", "plan", "problems", "topological_order"]
