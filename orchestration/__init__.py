"""Dagster code location of joulestream: the monthly close (`dagster dev -m orchestration`)."""

from orchestration.definitions import defs

__all__ = ["defs"]
