"""Configuration from environment variables (and an optional ``.env``), validated at start.

Every wrong value is reported at once, each naming the variable and what would be right.
The Temporal connection comes from ``temporalio.envconfig`` (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, or a TOML profile), so the same worker runs
against the embedded dev server, a self-hosted cluster or Temporal Cloud.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kairos.language.durations import DurationError, parse_duration
from kairos.language.plan import Channel
from kairos.runtime.crypto import secret_problem
from kairos.runtime.delivery import (
    DEFAULT_UNKNOWN,
    EmailProvider,
    SmsProvider,
    UnknownPolicy,
    parse_unknown_policy,
    provider_choices,
)
from kairos.runtime.environment import environment

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:/\s*(s|m|h))?$")
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}


class ConfigError(Exception):
    """One or more configuration values are wrong. ``problems`` has a sentence for each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# Workflow runs a worker keeps in memory unless KAIROS_MAX_CACHED_WORKFLOWS says otherwise.
DEFAULT_MAX_CACHED_WORKFLOWS = 10_000
# Where `make dev`'s Temporal and its UI listen unless KAIROS_DEV_PORT, KAIROS_DEV_UI_PORT say.
DEFAULT_DEV_PORT = 7233
DEFAULT_DEV_UI_PORT = 8233
# The development defaults: published in this file, so refused wherever anyone else can reach
# the process (see deployment_problems).
DEV_SECRET = "kairos-dev-secret-change-me"
DEV_MASTER_KEY = "kairos-development-master-key-never-use-in-production"


@dataclass(frozen=True)
class FrequencyCap:
    """At most ``limit`` marketing messages per ``window_seconds`` on one channel."""

    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Settings:
    """Everything a Kairos process needs to know about its surroundings."""

    home: Path
    task_queue: str = "kairos"
    temporal: Mapping[str, Any] = field(default_factory=dict)
    email_provider: str = "outbox"
    sms_provider: str = "outbox"
    outbox_dir: Path = Path(".kairos/outbox")
    from_email: str = "hello@kairos.local"
    public_url: str = "http://localhost:8000"
    secret: str = DEV_SECRET
    # The secret before the last rotation: unsubscribe links signed with it are honoured until
    # secret_previous_until (links live 60 days).
    secret_previous: str = ""
    secret_previous_until: datetime | None = None
    # The key-encryption key of the customers' data keys, and earlier ones that still unwrap.
    master_key: str = DEV_MASTER_KEY
    master_key_previous: tuple[str, ...] = ()
    quiet_hours: tuple[str, str] | None = ("21:00", "08:00")
    caps: Mapping[str, FrequencyCap] = field(default_factory=dict)
    sendgrid_api_key: str = ""
    sendgrid_base_url: str = ""
    sendgrid_asm_group_id: int | None = None
    sendgrid_sandbox: bool = False
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from_number: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_status_callback_url: str = ""
    twilio_base_url: str = ""
    max_cached_workflows: int = DEFAULT_MAX_CACHED_WORKFLOWS
    # Empty: the project's embedded PostgreSQL under .kairos/postgres (development, tests).
    database_url: str = ""
    # What a channel does when a provider call's outcome is unknown and no feedback comes.
    unknown: Mapping[Channel, UnknownPolicy] = field(default_factory=lambda: dict(DEFAULT_UNKNOWN))
    # Messages per second each channel's send task queue hands out, across all workers
    # (Temporal enforces it); a channel not here has no limit.
    rates: Mapping[Channel, float] = field(default_factory=dict)
    # host:port where the worker serves Prometheus metrics; empty for none (KAIROS_METRICS=off);
    # None when not set: none, except under `make dev`.
    metrics: str | None = None
    # Modules imported by the worker so their custom actions register (KAIROS_ACTIONS).
    actions: tuple[str, ...] = ()
    log_level: str = "INFO"
    # The directory of checked projects (kairos.language.project_cache), KAIROS_CACHE_DIR;
    # None: every command checks the project.
    project_cache: Path | None = None
    # `make dev`'s Temporal and Temporal UI ports.
    dev_port: int = DEFAULT_DEV_PORT
    dev_ui_port: int = DEFAULT_DEV_UI_PORT

    @property
    def journeys_dir(self) -> Path:
        return self.home / "journeys"

    @property
    def templates_dir(self) -> Path:
        return self.home / "templates"

    def unsubscribe_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets an unsubscribe link may be signed with at ``now``: the current one, and
        the previous one during its grace period."""
        if self.secret_previous and self.secret_previous_until and now < self.secret_previous_until:
            return (self.secret, self.secret_previous)
        return (self.secret,)


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine only: localhost or loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def deployment_problems(settings: Settings, *, bind_host: str | None = None) -> list[str]:
    """Why this process must not run as configured: a development default secret in a process
    that others can reach (its public URL is not localhost, or it listens beyond loopback)."""
    reasons = []
    public_host = urlsplit(settings.public_url).hostname or ""
    if not is_local_host(public_host):
        reasons.append(f"KAIROS_PUBLIC_URL is {settings.public_url}")
    if bind_host is not None and not is_local_host(bind_host):
        reasons.append(f"it listens on {bind_host or 'every address'}")
    if not reasons:
        return []
    where = " and ".join(reasons)
    problems = []
    if settings.secret == DEV_SECRET:
        problems.append(
            f"KAIROS_SECRET is the development default, and {where}: anyone could forge "
            "unsubscribe links. Set KAIROS_SECRET to at least 32 random bytes "
            "(openssl rand -hex 32)"
        )
    if settings.master_key == DEV_MASTER_KEY:
        problems.append(
            f"KAIROS_MASTER_KEY is the development default, and {where}: anyone could decrypt "
            "what Kairos stores in Temporal. Set KAIROS_MASTER_KEY to at least 32 random bytes "
            "(openssl rand -hex 32); docs/operations.md says how to rotate it"
        )
    return problems


def _bool(name: str, raw: str, problems: list[str]) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    problems.append(f"{name}={raw!r}: expected true or false")
    return False


def _cap(name: str, raw: str, problems: list[str]) -> FrequencyCap | None:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(.+)", raw)
    if raw.strip().lower() in ("", "none", "off"):
        return None
    if match:
        try:
            return FrequencyCap(int(match.group(1)), parse_duration(match.group(2)))
        except DurationError:
            pass
    problems.append(f"{name}={raw!r}: expected COUNT/WINDOW such as 3/7d, or 'off'")
    return None


def _unknown(name: str, raw: str, default: UnknownPolicy, problems: list[str]) -> UnknownPolicy:
    if not raw.strip():
        return default
    try:
        return parse_unknown_policy(raw)
    except ValueError as err:
        problems.append(f"{name}={err}")
        return default


def _rate(name: str, raw: str, problems: list[str]) -> float | None:
    text = raw.strip().lower()
    if text in ("", "off", "none"):
        return None
    match = _RATE.match(text)
    if match and float(match.group(1)) > 0:
        return float(match.group(1)) / _RATE_UNITS[match.group(2) or "s"]
    problems.append(
        f"{name}={raw!r}: expected messages per second such as 10, a rate such as 600/m, or 'off'"
    )
    return None


def _metrics(raw: str, problems: list[str]) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if text.lower() in ("off", "none"):
        return ""
    host, _, port = text.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return text
    problems.append(f"KAIROS_METRICS={raw!r}: expected host:port such as 0.0.0.0:9464, or 'off'")
    return ""


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    dotenv: bool = True,
    temporal: bool = True,
) -> Settings:
    """Read and validate settings. Raises ConfigError listing every wrong value.

    ``env`` defaults to the process environment, merged under an optional ``.env`` file in the
    project home (the environment wins). ``temporal=False`` leaves the Temporal connection
    unread (``Settings.temporal`` empty): for commands that never connect, such as ``kairos
    validate``, which then need not import the Temporal SDK.
    """
    base_home = (
        home
        or Path(os.environ.get("KAIROS_HOME", ".") if env is None else env.get("KAIROS_HOME", "."))
    ).resolve()
    values = environment(env, home=base_home, dotenv=dotenv)
    get = values.get
    problems: list[str] = []

    connect = _temporal_connect_config(values, problems) if temporal else {}

    outbox = Path(get("KAIROS_OUTBOX", ".kairos/outbox"))
    if not outbox.is_absolute():
        outbox = base_home / outbox

    project_cache = _project_cache(get("KAIROS_CACHE_DIR", ""), get, base_home)

    quiet: tuple[str, str] | None = ("21:00", "08:00")
    raw_quiet = get("KAIROS_QUIET_HOURS", "21:00-08:00").strip()
    if raw_quiet.lower() in ("", "off", "none"):
        quiet = None
    else:
        parts = [p.strip() for p in raw_quiet.split("-")]
        if len(parts) == 2 and all(_HHMM.match(p) for p in parts):
            quiet = (parts[0], parts[1])
        else:
            problems.append(
                f"KAIROS_QUIET_HOURS={raw_quiet!r}: expected START-END in 24h local time "
                "such as 21:00-08:00, or 'off'"
            )

    caps: dict[str, FrequencyCap] = {}
    for channel, default in (("email", "3/7d"), ("sms", "2/7d")):
        name = f"KAIROS_CAP_{channel.upper()}"
        cap = _cap(name, get(name, default), problems)
        if cap is not None:
            caps[channel] = cap

    sendgrid_key = get("SENDGRID_API_KEY", "")
    twilio_sid = get("TWILIO_ACCOUNT_SID", "")
    twilio_token = get("TWILIO_AUTH_TOKEN", "")
    email_provider = get("KAIROS_EMAIL_PROVIDER", "auto").strip().lower()
    sms_provider = get("KAIROS_SMS_PROVIDER", "auto").strip().lower()
    if email_provider == "auto":
        email_provider = "sendgrid" if sendgrid_key else "outbox"
    if sms_provider == "auto":
        sms_provider = "twilio" if twilio_sid and twilio_token else "outbox"
    if email_provider not in list(EmailProvider):
        choices = provider_choices(EmailProvider)
        problems.append(f"KAIROS_EMAIL_PROVIDER={email_provider!r}: expected {choices}")
    if sms_provider not in list(SmsProvider):
        choices = provider_choices(SmsProvider)
        problems.append(f"KAIROS_SMS_PROVIDER={sms_provider!r}: expected {choices}")
    if email_provider == "sendgrid" and not sendgrid_key:
        problems.append("KAIROS_EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")
    if sms_provider == "twilio":
        if not (twilio_sid and twilio_token):
            problems.append(
                "KAIROS_SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        if not (get("TWILIO_FROM_NUMBER") or get("TWILIO_MESSAGING_SERVICE_SID")):
            problems.append(
                "Twilio needs a sender: set TWILIO_FROM_NUMBER (E.164, such as +15005550006) "
                "or TWILIO_MESSAGING_SERVICE_SID (MG...)"
            )

    asm: int | None = None
    raw_asm = get("SENDGRID_ASM_GROUP_ID", "").strip()
    if raw_asm:
        if raw_asm.isdigit():
            asm = int(raw_asm)
        else:
            problems.append(f"SENDGRID_ASM_GROUP_ID={raw_asm!r}: expected a number such as 12345")

    from_email = get("KAIROS_FROM_EMAIL", "hello@kairos.local")
    if "@" not in from_email:
        problems.append(
            f"KAIROS_FROM_EMAIL={from_email!r}: expected an address such as hi@shop.example"
        )
    if get("KAIROS_FROM_NAME"):
        problems.append(
            "KAIROS_FROM_NAME is not read: the sender name is the business's name, set once as "
            "`brand:` in journeys/customer.yaml"
        )
    public_url = get("KAIROS_PUBLIC_URL", "http://localhost:8000").rstrip("/")
    if not public_url.startswith(("http://", "https://")):
        problems.append(f"KAIROS_PUBLIC_URL={public_url!r}: expected an http(s) URL")
    task_queue = get("KAIROS_TASK_QUEUE", "kairos").strip()
    if not task_queue:
        problems.append("KAIROS_TASK_QUEUE is empty: name a task queue such as kairos")

    cache = DEFAULT_MAX_CACHED_WORKFLOWS
    raw_cache = get("KAIROS_MAX_CACHED_WORKFLOWS", "").strip()
    if raw_cache:
        if raw_cache.isdigit() and int(raw_cache) > 0:
            cache = int(raw_cache)
        else:
            problems.append(
                f"KAIROS_MAX_CACHED_WORKFLOWS={raw_cache!r}: expected a positive number of "
                "workflow runs such as 10000"
            )

    secret, previous, until = _secrets(values, problems)
    master_key = get("KAIROS_MASTER_KEY", DEV_MASTER_KEY)
    if master_key != DEV_MASTER_KEY:
        _check_secret("KAIROS_MASTER_KEY", master_key, problems)
    masters = tuple(
        k.strip() for k in get("KAIROS_MASTER_KEY_PREVIOUS", "").split(",") if k.strip()
    )
    for number, old in enumerate(masters, start=1):
        _check_secret(f"KAIROS_MASTER_KEY_PREVIOUS (key {number})", old, problems)

    database_url = get("KAIROS_DATABASE_URL", "").strip()
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        problems.append(
            "KAIROS_DATABASE_URL: expected a PostgreSQL URL such as "
            "postgresql://kairos:secret@db.internal:5432/kairos (or unset, for the embedded one)"
        )

    unknown = {
        channel: _unknown(
            f"KAIROS_UNKNOWN_{channel.value.upper()}",
            get(f"KAIROS_UNKNOWN_{channel.value.upper()}", ""),
            DEFAULT_UNKNOWN[channel],
            problems,
        )
        for channel in Channel
    }

    rates: dict[Channel, float] = {}
    for channel in Channel:
        name = f"KAIROS_RATE_{channel.value.upper()}"
        rate = _rate(name, get(name, ""), problems)
        if rate is not None:
            rates[channel] = rate

    settings = Settings(
        home=base_home,
        task_queue=task_queue,
        temporal=connect,
        email_provider=email_provider,
        sms_provider=sms_provider,
        outbox_dir=outbox,
        from_email=from_email,
        public_url=public_url,
        secret=secret,
        secret_previous=previous,
        secret_previous_until=until,
        master_key=master_key,
        master_key_previous=masters,
        quiet_hours=quiet,
        caps=caps,
        sendgrid_api_key=sendgrid_key,
        sendgrid_base_url=get("SENDGRID_BASE_URL", ""),
        sendgrid_asm_group_id=asm,
        sendgrid_sandbox=_bool("SENDGRID_SANDBOX", get("SENDGRID_SANDBOX", ""), problems),
        twilio_account_sid=twilio_sid,
        twilio_auth_token=twilio_token,
        twilio_from_number=get("TWILIO_FROM_NUMBER", ""),
        twilio_messaging_service_sid=get("TWILIO_MESSAGING_SERVICE_SID", ""),
        twilio_status_callback_url=get("TWILIO_STATUS_CALLBACK_URL", ""),
        twilio_base_url=get("TWILIO_BASE_URL", ""),
        max_cached_workflows=cache,
        database_url=database_url,
        unknown=unknown,
        rates=rates,
        metrics=_metrics(get("KAIROS_METRICS", ""), problems),
        actions=tuple(p.strip() for p in get("KAIROS_ACTIONS", "").split(",") if p.strip()),
        project_cache=project_cache,
        log_level=_log_level(get("KAIROS_LOG_LEVEL", "INFO"), problems),
        dev_port=_port("KAIROS_DEV_PORT", get("KAIROS_DEV_PORT", ""), DEFAULT_DEV_PORT, problems),
        dev_ui_port=_port(
            "KAIROS_DEV_UI_PORT", get("KAIROS_DEV_UI_PORT", ""), DEFAULT_DEV_UI_PORT, problems
        ),
    )
    if problems:
        raise ConfigError(problems)
    return settings


def _project_cache(raw: str, get: Callable[[str, str], str], home: Path) -> Path | None:
    """KAIROS_CACHE_DIR: a directory (relative to the project home), or 'off'; unset, the
    user's cache directory: $XDG_CACHE_HOME/kairos, else $HOME/.cache/kairos."""
    value = raw.strip()
    if value.lower() == "off":
        return None
    if value:
        return home / Path(value).expanduser()
    xdg = get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "kairos"
    user_home = get("HOME", "").strip()
    # No HOME in the environment the settings are read from: no user, so no cache.
    return Path(user_home) / ".cache" / "kairos" if user_home else None


def _log_level(raw: str, problems: list[str]) -> str:
    level = raw.strip().upper()
    if level not in logging.getLevelNamesMapping():
        problems.append(f"KAIROS_LOG_LEVEL={raw!r}: expected DEBUG, INFO, WARNING or ERROR")
        return "INFO"
    return level


def _port(name: str, raw: str, default: int, problems: list[str]) -> int:
    raw = raw.strip()
    if not raw:
        return default
    if raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    problems.append(f"{name}={raw!r}: expected a TCP port such as {default}")
    return default


def _check_secret(name: str, value: str, problems: list[str]) -> None:
    problem = secret_problem(name, value)
    if problem:
        problems.append(problem)


def _secrets(values: Mapping[str, str], problems: list[str]) -> tuple[str, str, datetime | None]:
    """KAIROS_SECRET, and the previous one with the end of its grace period."""
    secret = values.get("KAIROS_SECRET", DEV_SECRET)
    if secret != DEV_SECRET:
        _check_secret("KAIROS_SECRET", secret, problems)
    previous = values.get("KAIROS_SECRET_PREVIOUS", "").strip()
    raw_until = values.get("KAIROS_SECRET_PREVIOUS_UNTIL", "").strip()
    if not previous:
        return secret, "", None
    _check_secret("KAIROS_SECRET_PREVIOUS", previous, problems)
    until: datetime | None = None
    try:
        day = date.fromisoformat(raw_until)
        until = datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        problems.append(
            f"KAIROS_SECRET_PREVIOUS_UNTIL={raw_until!r}: give the date (YYYY-MM-DD) until which "
            "links signed with the previous secret are honoured, at most 60 days after the "
            "rotation (unsubscribe links live 60 days)"
        )
    return secret, previous, until


def _temporal_connect_config(values: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    from temporalio.envconfig import ClientConfigProfile

    try:
        profile = ClientConfigProfile.load(override_env_vars=dict(values))
        config = dict(profile.to_client_connect_config())
    except Exception as exc:  # envconfig reports bad TLS files, bad TOML, ... as plain errors
        problems.append(f"Temporal connection (TEMPORAL_* variables or config file): {exc}")
        return {}
    config.setdefault("target_host", "localhost:7233")
    config.setdefault("namespace", "default")
    return config
