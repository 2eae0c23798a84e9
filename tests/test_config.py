"""Worker settings: defaults, values from the environment, and every wrong value at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kairos.language.plan import Channel
from kairos.runtime.config import (
    ConfigError,
    FrequencyCap,
    Settings,
    deployment_problems,
    load_settings,
)
from kairos.runtime.delivery import UnknownPolicy


def _load(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"KAIROS_HOME": str(tmp_path), **env}, dotenv=False)


def test_defaults_suit_a_development_machine(tmp_path: Path) -> None:
    settings = _load(tmp_path)

    assert (settings.email_provider, settings.sms_provider) == ("outbox", "outbox")
    assert settings.quiet_hours == ("21:00", "08:00")
    assert settings.caps == {
        "email": FrequencyCap(3, 7 * 86400),
        "sms": FrequencyCap(2, 7 * 86400),
    }
    assert settings.outbox_dir == tmp_path.resolve() / ".kairos/outbox"
    assert settings.max_cached_workflows == 10_000


def test_workflow_cache_quiet_hours_and_caps_from_the_environment(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        KAIROS_MAX_CACHED_WORKFLOWS="2500",
        KAIROS_QUIET_HOURS="off",
        KAIROS_CAP_SMS="off",
        KAIROS_CAP_EMAIL="5 / 1d",
    )

    assert settings.max_cached_workflows == 2500
    assert settings.quiet_hours is None
    assert settings.caps == {"email": FrequencyCap(5, 86400)}


def test_every_wrong_value_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(
            tmp_path,
            KAIROS_MAX_CACHED_WORKFLOWS="lots",
            KAIROS_QUIET_HOURS="late",
            KAIROS_CAP_EMAIL="three a week",
            KAIROS_FROM_EMAIL="nobody",
        )

    assert raised.value.problems == [
        "KAIROS_QUIET_HOURS='late': expected START-END in 24h local time such as 21:00-08:00, "
        "or 'off'",
        "KAIROS_CAP_EMAIL='three a week': expected COUNT/WINDOW such as 3/7d, or 'off'",
        "KAIROS_FROM_EMAIL='nobody': expected an address such as hi@shop.example",
        "KAIROS_MAX_CACHED_WORKFLOWS='lots': expected a positive number of workflow runs such "
        "as 10000",
    ]


@pytest.mark.parametrize("raw", ["0", "-5", "1e4"])
def test_a_workflow_cache_must_hold_at_least_one_run(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match="KAIROS_MAX_CACHED_WORKFLOWS"):
        _load(tmp_path, KAIROS_MAX_CACHED_WORKFLOWS=raw)


def test_the_sender_name_is_the_brand_in_the_project_not_a_variable(tmp_path: Path) -> None:
    # One place: customer.yaml's `brand:`. A variable that would quietly say otherwise is refused.
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, KAIROS_FROM_NAME="Kairos")
    assert raised.value.problems == [
        "KAIROS_FROM_NAME is not read: the sender name is the business's name, set once as "
        "`brand:` in journeys/customer.yaml"
    ]


STRONG = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAIROS_SECRET", ""),
        ("KAIROS_SECRET", "x"),
        ("KAIROS_SECRET", "a" * 64),  # long, but one character
        ("KAIROS_MASTER_KEY", "hunter2-hunter2"),
        ("KAIROS_MASTER_KEY_PREVIOUS", f"{STRONG},short"),
    ],
)
def test_a_weak_secret_is_refused_with_how_to_make_one(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, **{name: value})
    assert f"{name}" in str(raised.value) and "openssl rand -hex 32" in str(raised.value)


def test_a_strong_secret_and_master_key_are_taken(tmp_path: Path) -> None:
    settings = _load(
        tmp_path, KAIROS_SECRET=STRONG, KAIROS_MASTER_KEY=STRONG[::-1],
        KAIROS_SECRET_PREVIOUS=STRONG.upper(), KAIROS_SECRET_PREVIOUS_UNTIL="2027-01-31",
    )  # fmt: skip
    assert (settings.secret, settings.master_key) == (STRONG, STRONG[::-1])
    assert settings.unsubscribe_secrets(datetime(2027, 1, 30, tzinfo=UTC)) == (
        STRONG,
        STRONG.upper(),
    )
    assert settings.unsubscribe_secrets(datetime(2027, 1, 31, tzinfo=UTC)) == (STRONG,)


def test_the_development_defaults_are_refused_where_others_can_reach_the_process(
    tmp_path: Path,
) -> None:
    local = _load(tmp_path)
    assert deployment_problems(local) == []
    assert deployment_problems(local, bind_host="127.0.0.1") == []
    assert deployment_problems(local, bind_host="::1") == []
    public = _load(tmp_path, KAIROS_PUBLIC_URL="https://mail.example.com")
    said = deployment_problems(public)
    assert [p.split(" is ")[0] for p in said] == ["KAIROS_SECRET", "KAIROS_MASTER_KEY"]
    assert "KAIROS_PUBLIC_URL is https://mail.example.com" in said[0]
    assert len(deployment_problems(local, bind_host="0.0.0.0")) == 2
    configured = _load(tmp_path, KAIROS_SECRET=STRONG, KAIROS_MASTER_KEY=STRONG[::-1])
    assert deployment_problems(configured, bind_host="0.0.0.0") == []


def test_serve_and_the_worker_refuse_to_start_with_the_development_secret_in_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from typer.testing import CliRunner

    from kairos.cli import app as cli
    from kairos.worker import run

    monkeypatch.setenv("KAIROS_HOME", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "refusing to start: KAIROS_SECRET is the development default" in said
    assert "it listens on 0.0.0.0" in said

    public = _load(tmp_path, KAIROS_PUBLIC_URL="https://mail.example.com")
    assert asyncio.run(run(public)) == 2
    assert "kairos worker: refusing to start: KAIROS_SECRET" in capsys.readouterr().err


def test_what_a_channel_does_about_an_unknown_outcome_is_configurable(tmp_path: Path) -> None:
    settings = _load(tmp_path, KAIROS_UNKNOWN_SMS="resend after 30m", KAIROS_UNKNOWN_EMAIL="")

    assert settings.unknown == {
        Channel.email: UnknownPolicy(resend=True, wait_seconds=600),
        Channel.sms: UnknownPolicy(resend=True, wait_seconds=1800),
    }
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, KAIROS_UNKNOWN_EMAIL="retry", KAIROS_UNKNOWN_SMS="report after 0s")
    assert raised.value.problems == [
        "KAIROS_UNKNOWN_EMAIL='retry': expected 'resend after 10m' or 'report after 10m'",
        "KAIROS_UNKNOWN_SMS='report after 0s': the wait must be longer than 0s",
    ]


def test_the_metrics_address_is_host_and_port_or_off(tmp_path: Path) -> None:
    assert _load(tmp_path).metrics is None  # unset: none, but `make dev` picks one
    assert _load(tmp_path, KAIROS_METRICS="off").metrics == ""
    assert _load(tmp_path, KAIROS_METRICS="0.0.0.0:9464").metrics == "0.0.0.0:9464"
    with pytest.raises(ConfigError, match="KAIROS_METRICS='9464': expected host:port"):
        _load(tmp_path, KAIROS_METRICS="9464")


def test_a_channels_rate_is_per_second_or_per_minute(tmp_path: Path) -> None:
    settings = _load(tmp_path, KAIROS_RATE_SMS="1", KAIROS_RATE_EMAIL="600/m")

    assert settings.rates == {Channel.email: 10.0, Channel.sms: 1.0}
    assert _load(tmp_path, KAIROS_RATE_SMS="off").rates == {}
    with pytest.raises(ConfigError, match="KAIROS_RATE_EMAIL='fast': expected messages per"):
        _load(tmp_path, KAIROS_RATE_EMAIL="fast")


def test_the_worker_and_dev_settings_are_read_with_the_rest_from_a_dotenv(tmp_path: Path) -> None:
    # worker.py, kairos serve and kairos dev once read these from the process environment
    # alone, so a .env file did not set them.
    (tmp_path / ".env").write_text(
        "KAIROS_ACTIONS=shop.actions, shop.more\nKAIROS_LOG_LEVEL=warning\n"
        "KAIROS_DEV_PORT=47233\nKAIROS_DEV_UI_PORT=48233\n"
    )
    settings = load_settings({"KAIROS_HOME": str(tmp_path)})

    assert settings.actions == ("shop.actions", "shop.more")
    assert settings.log_level == "WARNING"
    assert (settings.dev_port, settings.dev_ui_port) == (47233, 48233)
    assert (_load(tmp_path).dev_port, _load(tmp_path).dev_ui_port) == (7233, 8233)


def test_a_wrong_log_level_or_dev_port_is_named_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, KAIROS_LOG_LEVEL="loud", KAIROS_DEV_PORT="70000")
    assert caught.value.problems == [
        "KAIROS_LOG_LEVEL='loud': expected DEBUG, INFO, WARNING or ERROR",
        "KAIROS_DEV_PORT='70000': expected a TCP port such as 7233",
    ]
