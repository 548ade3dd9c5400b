from tests.e2e.conftest import anonymous, http  # noqa: F401  (the session's clients, shared with e2e)
