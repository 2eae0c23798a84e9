"""Settings only the web front door needs, read from the environment and validated at start.

They complement :class:`kairos.runtime.config.Settings` (public URL, secret, Twilio auth token,
...): ``KAIROS_API_KEYS`` for ``/v1/track`` and ``/v1/identify``, ``SENDGRID_WEBHOOK_PUBLIC_KEY`` to
verify SendGrid's signed event webhook, ``KAIROS_CODEC_TOKENS`` and ``KAIROS_CODEC_ORIGINS`` for
the Temporal UI's codec server (``/codec``), and ``KAIROS_WEB_PORT``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from kairos.runtime.config import DEFAULT_DEV_UI_PORT, ConfigError
from kairos.runtime.environment import environment

DEFAULT_PORT = 8000
MIN_API_KEY_LENGTH = 16
_PEM_ARMOUR = re.compile(r"-----(BEGIN|END) PUBLIC KEY-----")


def dev_ui_origins(ui_port: int) -> tuple[str, ...]:
    """The origins a browser gives the Temporal UI of ``make dev`` on ``ui_port``."""
    return (f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}")


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP service needs beyond :class:`kairos.runtime.config.Settings`.

    Attributes:
        api_keys: Keys accepted on ``/v1/track`` and ``/v1/identify``; none means those
            endpoints refuse every call.
        sendgrid_public_key: SendGrid's signed-event-webhook verification key (base64 DER, as
            SendGrid shows it); empty means the SendGrid webhook refuses every call.
        port: Where ``kairos serve`` listens unless ``--port`` says otherwise.
        codec_tokens: Bearer tokens accepted by the codec server; none means it answers only
            callers on this machine (loopback), as in ``make dev``.
        codec_origins: Browser origins (the Temporal UI's) allowed to call the codec server.
    """

    api_keys: tuple[str, ...] = ()
    sendgrid_public_key: str = ""
    port: int = DEFAULT_PORT
    codec_tokens: tuple[str, ...] = ()
    codec_origins: tuple[str, ...] = dev_ui_origins(DEFAULT_DEV_UI_PORT)


def load_web_config(env: Mapping[str, str] | None = None, *, home: Path | None = None) -> WebConfig:
    """Read and validate the web settings; raises ConfigError listing every wrong value.

    Like :func:`kairos.runtime.config.load_settings`, ``env`` defaults to the process environment
    merged over an optional ``.env`` file in the project home (the environment wins).
    """
    values = environment(env, home=home)
    problems: list[str] = []
    config = WebConfig(
        api_keys=_keys("KAIROS_API_KEYS", values.get("KAIROS_API_KEYS", ""), problems),
        sendgrid_public_key=_public_key(values.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""), problems),
        port=_port(values.get("KAIROS_WEB_PORT", ""), problems),
        codec_tokens=_keys("KAIROS_CODEC_TOKENS", values.get("KAIROS_CODEC_TOKENS", ""), problems),
        codec_origins=_origins(values, problems),
    )
    if problems:
        raise ConfigError(problems)
    return config


def _keys(name: str, raw: str, problems: list[str]) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_API_KEY_LENGTH or any(c.isspace() for c in key):
            problems.append(
                f"{name}: key {number} is not usable: keys are at least "
                f"{MIN_API_KEY_LENGTH} characters without spaces (generate one with "
                "`openssl rand -hex 24`); separate several keys with commas"
            )
    return keys


def _public_key(raw: str, problems: list[str]) -> str:
    # Accept the key as SendGrid shows it (one base64 line) or pasted as a PEM block.
    key = "".join(_PEM_ARMOUR.sub("", raw).split())
    if not key:
        return ""
    try:
        usable = isinstance(EventWebhook(key).public_key, ec.EllipticCurvePublicKey)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        usable = False
    if not usable:
        problems.append(
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA public key: copy the verification key "
            "from SendGrid (Settings > Mail Settings > Signed Event Webhook)"
        )
        return ""
    return key


def _port(raw: str, problems: list[str]) -> int:
    text = raw.strip()
    if not text:
        return DEFAULT_PORT
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    problems.append(f"KAIROS_WEB_PORT={raw!r}: expected a port number such as {DEFAULT_PORT}")
    return DEFAULT_PORT


def _origins(values: Mapping[str, str], problems: list[str]) -> tuple[str, ...]:
    raw = values.get("KAIROS_CODEC_ORIGINS", "").strip()
    if not raw:
        ui_port = values.get("KAIROS_DEV_UI_PORT", "").strip()
        return dev_ui_origins(int(ui_port) if ui_port.isdigit() else DEFAULT_DEV_UI_PORT)
    origins = tuple(origin.strip().rstrip("/") for origin in raw.split(",") if origin.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            problems.append(
                f"KAIROS_CODEC_ORIGINS: {origin!r} is not an origin: give the Temporal UI's "
                "scheme, host and port, such as https://temporal.example.com"
            )
    return origins
