"""Runs on this machine without a cluster: ``kwf run`` and ``kwf lint``.

- :func:`kwf.local.run.run_local`: a Job or Workflow file run to its end.
- :class:`kwf.local.executor.LocalExecutor`: the Executor behind it.
- :func:`kwf.local.lint.lint_paths`: offline checks, one problem per line.
"""
