"""The rrcunet test suite, a regular package so that ``from tests.conftest import ...`` finds these
files and not a ``tests`` package that some wheels install at the top level (rt-utils does)."""
