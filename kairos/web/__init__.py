"""The HTTP front door: unsubscribe pages, provider webhooks, events over HTTP, health.

Import from the modules (``kairos.web.app.create_app``, ``kairos.web.server.build_app``).
"""
