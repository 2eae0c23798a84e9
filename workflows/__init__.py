"""Workflows: the journey interpreter, and the event schedule of simulations and tests."""
