"""What a provider's sender and the web front door's webhooks agree on, so that neither imports
the other: feedback about a send comes back to the door that can match it to the send."""

from __future__ import annotations

SENDGRID_KEY_ARG = "kairos_key"
"""The custom_arg carrying the message key, so event webhooks can be matched to the send."""

TWILIO_STATUS_PATH = "/webhooks/twilio/status"
"""Where the web front door takes Twilio's status callbacks (kairos.web.twilio)."""
