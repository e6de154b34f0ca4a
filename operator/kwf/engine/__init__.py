"""The pure core of kwf: the DAG, plan(), retries, state merges, templates and CEL."""
