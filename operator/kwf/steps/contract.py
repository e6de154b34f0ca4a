"""The step contract's names: its environment variables, its error, its default limits."""

from __future__ import annotations

from kwf.engine.types import Limits

DEFAULT_LIMITS = Limits()

#: Files and identity a step gets (the step contract).
ENV_PARAMS = "KWF_PARAMS"
ENV_STATE = "KWF_STATE"
ENV_RESULT = "KWF_RESULT"
ENV_JOB = "KWF_JOB"
ENV_STEP = "KWF_STEP"
ENV_ATTEMPT = "KWF_ATTEMPT"
ENV_NAMESPACE = "KWF_NAMESPACE"
#: The rendered step spec (JSON), read by the pod entrypoint only.
ENV_SPEC = "KWF_SPEC"
#: An llm step's API key, filled from ``apiKeySecretRef`` through a secretKeyRef.
ENV_LLM_API_KEY = "KWF_LLM_API_KEY"


class StepError(Exception):
    """The step itself failed: it spends the step's retry budget.

    The message is shown to users (status, events, `kwf get`), so it says what
    went wrong in the step's terms and never carries a credential.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
