"""Where settings come from: the process environment over an optional ``.env`` in the project
home. One reading rule for :mod:`kairos.runtime.config` and :mod:`kairos.web.config` alike."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def environment(
    env: Mapping[str, str] | None = None, *, home: Path | None = None, dotenv: bool = True
) -> dict[str, str]:
    """The settings' raw values: ``env`` (the process environment when None) merged over the
    ``.env`` file in ``home`` (else ``KAIROS_HOME``, else the working directory), if there is
    one; the environment wins."""
    source = os.environ if env is None else env
    base = (home or Path(source.get("KAIROS_HOME", "."))).resolve()
    values: dict[str, str] = {}
    if dotenv and (base / ".env").is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(base / ".env").items() if v is not None})
    values.update(source)
    return values
