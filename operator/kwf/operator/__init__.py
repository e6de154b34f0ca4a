"""The kwf operator: kopf for the runs, own watches for their children, one reconcile per run."""
