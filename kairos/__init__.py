"""Kairos: customer-lifecycle journeys in YAML, run durably on Temporal."""

__version__ = "0.1.0"
