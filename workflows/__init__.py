"""Workflows: the journey interpreter and the customer entity."""
