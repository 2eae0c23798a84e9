"""Helpers for the web front door's tests: serving, signing webhooks, and driving Chromium."""
