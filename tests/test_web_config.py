"""The web front door's settings, and choosing the unsubscribe page's language."""

from __future__ import annotations

from pathlib import Path

import pytest

from kairos.runtime.config import ConfigError
from kairos.web.config import WebConfig, load_web_config
from kairos.web.i18n import STRINGS, choose_locale
from tests.browser.harness import SendGridKey


def _load(tmp_path: Path, **env: str) -> WebConfig:
    return load_web_config({"KAIROS_HOME": str(tmp_path), **env})


def test_defaults_accept_nothing_until_configured(tmp_path: Path) -> None:
    assert _load(tmp_path) == WebConfig(api_keys=(), sendgrid_public_key="", port=8000)


def test_keys_port_and_sendgrid_key(tmp_path: Path) -> None:
    key = SendGridKey().public
    pem = f"-----BEGIN PUBLIC KEY-----\n{key[:64]}\n{key[64:]}\n-----END PUBLIC KEY-----\n"
    config = _load(
        tmp_path,
        KAIROS_API_KEYS=" key-one-0123456789abcdef , key-two-0123456789abcdef,",
        KAIROS_WEB_PORT="8080",
        SENDGRID_WEBHOOK_PUBLIC_KEY=pem,
    )
    assert config.api_keys == ("key-one-0123456789abcdef", "key-two-0123456789abcdef")
    assert (config.port, config.sendgrid_public_key) == (8080, key)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAIROS_WEB_PORT=9000\nKAIROS_API_KEYS=from-dotenv-0123456789\n")
    config = _load(tmp_path, KAIROS_WEB_PORT="9001")
    assert (config.port, config.api_keys) == (9001, ("from-dotenv-0123456789",))


def test_every_wrong_value_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(
            tmp_path,
            KAIROS_API_KEYS="short,has a space in it 0123456789",
            KAIROS_WEB_PORT="99999",
            SENDGRID_WEBHOOK_PUBLIC_KEY="bm90IGEga2V5",
        )
    problems = caught.value.problems
    assert [p.split(":")[0].split("=")[0] for p in problems] == [
        "KAIROS_API_KEYS",
        "KAIROS_API_KEYS",
        "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA public key",
        "KAIROS_WEB_PORT",
    ]
    assert "openssl rand -hex 24" in problems[0]


@pytest.mark.parametrize(
    ("profile", "header", "expected"),
    [
        ("fi", "de-DE,de;q=0.9", "fi"),
        ("de_AT", "", "de"),
        ("hu", "de-DE,de;q=0.9,en;q=0.8", "de"),
        (None, "hu-HU, fi;q=0.5, de;q=0.7", "de"),
        ("sv-FI", "fi", "sv"),
        (None, "sv-SE, fi;q=0.5", "sv"),
        (None, "fi;q=0, de;q=0.1", "de"),
        (None, "*", "en"),
        (None, "", "en"),
        (None, "garbage;;;,fi-FI", "fi"),
        (42, "fi", "fi"),
    ],
)
def test_the_customers_language_wins_then_the_browsers_then_english(
    profile: object, header: str, expected: str
) -> None:
    assert choose_locale(profile, header) == expected


def test_every_language_has_every_string() -> None:
    for locale, strings in STRINGS.items():
        assert strings.keys() == STRINGS["en"].keys(), locale
