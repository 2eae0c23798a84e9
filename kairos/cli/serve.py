"""``kairos serve``: the HTTP front door (unsubscribe, provider webhooks, /v1/track, health, and
the Temporal UI's codec server)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Annotated

import typer

from kairos.cli.base import app, console, fail
from kairos.language.problems import ProjectError
from kairos.runtime.config import DEV_SECRET, ConfigError, deployment_problems, load_settings
from kairos.store.database import StoreError
from kairos.web.config import load_web_config
from kairos.web.server import build_app, serve


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: KAIROS_WEB_PORT, else 8000).")
    ] = None,
) -> None:
    """Serve unsubscribe pages, webhooks, /v1/track, /v1/identify and /codec for the Temporal UI.

    Example: KAIROS_API_KEYS=$(openssl rand -hex 24) kairos serve

    In production: --host 0.0.0.0 behind a TLS proxy, with the settings docs/web.md names.
    """
    try:
        settings = load_settings()
        web = load_web_config(home=settings.home)
    except ConfigError as err:
        raise fail(str(err), code=2) from None
    bind_port = web.port if port is None else port
    how = "pass a free --port" if port is not None else "set KAIROS_WEB_PORT to a free port"
    _check_free(host, bind_port, how)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    refused = deployment_problems(settings, bind_host=host)
    if refused:
        raise fail("refusing to start: " + "; ".join(refused), code=2)
    if settings.secret == DEV_SECRET:
        console.print(
            "[yellow]warning:[/] KAIROS_SECRET is the development default; unsubscribe links "
            "can be forged until you set your own (allowed only on localhost)"
        )

    async def go() -> None:
        application = await build_app(settings, web)
        console.print(f"Kairos front door on http://{host}:{bind_port} (public URL "
                      f"{settings.public_url})")  # fmt: skip
        await serve(application, host=host, port=bind_port)

    try:
        asyncio.run(go())
    except ProjectError as err:
        raise fail(f"the journeys do not compile:\n{err}") from None
    except StoreError as err:
        raise fail(str(err)) from None


def _check_free(host: str, port: int, how: str) -> None:
    """Say in one line that the port is taken, before uvicorn says it in a page of logs."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise fail(
                f"cannot listen on {host}:{port}: {err.strerror or err} (is another `kairos "
                f"serve` or `make dev` running? Stop it, or {how})"
            ) from None
