"""Fakes of external services used by the test-suite (Discord, ...)."""
