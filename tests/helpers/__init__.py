"""Helpers shared by the tests (imported as tests.helpers.<module>); fixtures live in tests/conftest.py."""
