"""The HTTP front door: unsubscribe pages, provider webhooks, events over HTTP, health, and the
Temporal UI's codec server.

Import from the modules (``kairos.web.app.create_app``, ``kairos.web.server.build_app``).
"""
