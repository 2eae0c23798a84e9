"""The HTTP front door: unsubscribe pages, provider webhooks, events over HTTP, health.

Import from the modules (``kairos.web.app.create_app``, ``kairos.web.phonebook.PhoneWorkflow``):
this package is deliberately import-free because the worker's workflow sandbox re-imports the
package of every workflow it runs, and the phonebook workflow should not drag Starlette in.
"""
