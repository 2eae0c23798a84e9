"""The ``action`` step: registered Python actions and webhooks.

Built-in actions cover the journeys Kairos ships (coupons, referral rewards, a sales hand-off).
They are deliberately self-contained: codes are derived from the message key, so a retried
activity issues the same coupon, and each action is appended to ``<outbox>/actions.jsonl`` where
a developer can see it. A shop plugs in its own by registering a function under the same name
(``register``) in a module named by ``KAIROS_ACTIONS`` (comma-separated import paths), or a
new one under a new name, declared to the compiler by the same call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from kairos.language.actions_catalogue import ACTIONS, ActionSpec, coupon_expiry, declare
from kairos.runtime.contract import ActionRequest


@dataclass(frozen=True)
class ActionContext:
    """What an action knows about the step that called it."""

    key: str
    customer_id: str
    journey: str
    step: str
    log_dir: Path


ActionFn = Callable[[ActionContext, dict[str, Any]], Awaitable[dict[str, Any]]]
_REGISTRY: dict[str, ActionFn] = {}


def register(name: str, *, spec: ActionSpec | None = None) -> Callable[[ActionFn], ActionFn]:
    """Implement the action ``name`` with the decorated function (replacing a built-in of that
    name), and declare it to the compiler (:data:`kairos.language.actions_catalogue.ACTIONS`).

    Args:
        name: What journeys write after ``action:``.
        spec: Its ``with:`` arguments and the result it saves, which the compiler checks
            journeys and templates against; a new action without one takes no arguments.
    """
    if spec is not None and spec.name != name:
        raise ValueError(f"register({name!r}): its spec is named {spec.name!r}")

    def decorate(fn: ActionFn) -> ActionFn:
        if spec is not None:
            declare(spec)
        elif name not in ACTIONS:
            declare(ActionSpec(name=name, description=fn.__doc__ or ""))
        _REGISTRY[name] = fn
        return fn

    return decorate


def registered() -> dict[str, ActionFn]:
    return dict(_REGISTRY)


def _now() -> datetime:
    if activity.in_activity():
        return activity.info().current_attempt_scheduled_time
    return datetime.now(UTC)


def _code(prefix: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return prefix + base64.b32encode(digest)[:8].decode()


async def _journal(ctx: ActionContext, action: str, result: dict[str, Any]) -> None:
    line = json.dumps(
        {"at": datetime.now(UTC).isoformat(), "action": action, "key": ctx.key,
         "customer_id": ctx.customer_id, "journey": ctx.journey, "step": ctx.step,
         "result": result}
    )  # fmt: skip

    def append() -> None:
        ctx.log_dir.mkdir(parents=True, exist_ok=True)
        with (ctx.log_dir / "actions.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    await asyncio.to_thread(append)


@register("issue_coupon")
async def issue_coupon(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """A personal coupon: ``percent`` off, valid ``valid_days`` days."""
    percent = int(args.get("percent", 10))
    valid_days = int(args.get("valid_days", 14))
    result = {
        "code": _code("K", ctx.key),
        "percent": percent,
        # The activity's scheduled time, not the wall clock, so simulations date it right.
        "expires_at": coupon_expiry(_now(), valid_days),
    }
    await _journal(ctx, "issue_coupon", result)
    return result


@register("grant_referral_reward")
async def grant_referral_reward(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Credit the referrer: ``amount`` in ``currency``."""
    result = {
        "reward_id": _code("R", ctx.key),
        "amount": float(args.get("amount", 10)),
        "currency": str(args.get("currency", "EUR")),
    }
    await _journal(ctx, "grant_referral_reward", result)
    return result


@register("notify_sales")
async def notify_sales(ctx: ActionContext, args: dict[str, Any]) -> dict[str, Any]:
    """Hand a sales-ready lead to the sales team, with a ``note``."""
    result = {"ticket": _code("S", ctx.key), "note": str(args.get("note", ""))}
    await _journal(ctx, "notify_sales", result)
    return result


class Actions:
    """The action activity, built with where actions journal to."""

    def __init__(self, log_dir: Path, http: httpx.AsyncClient | None = None) -> None:
        self.log_dir = log_dir
        self.http = http

    @activity.defn(name="run_action")
    async def run_action(self, request: ActionRequest) -> dict[str, Any]:
        """Run a registered action or call a webhook; the result is saved by the journey."""
        ctx = ActionContext(
            key=request.key,
            customer_id=request.customer_id,
            journey=request.journey,
            step=request.step,
            log_dir=self.log_dir,
        )
        if request.webhook is not None:
            return await self._webhook(request)
        fn = _REGISTRY.get(request.action or "")
        if fn is None:
            raise ApplicationError(
                f"no action named {request.action!r} is registered on this worker "
                f"(registered: {', '.join(sorted(_REGISTRY))})",
                type="UnknownAction",
                non_retryable=True,
            )
        return await fn(ctx, request.args)

    async def _webhook(self, request: ActionRequest) -> dict[str, Any]:
        assert request.webhook is not None
        hook = request.webhook
        headers = {"Idempotency-Key": request.key, **hook.headers}
        body = request.args.get("body", hook.body)
        client = self.http or httpx.AsyncClient(timeout=20)
        try:
            response = await client.request(
                hook.method, hook.url, json=body if hook.method != "GET" else None, headers=headers
            )
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"webhook {hook.url} unreachable: {err}", type="WebhookUnavailable"
            ) from err
        finally:
            if self.http is None:
                await client.aclose()
        return _webhook_result(hook.url, response)


def _webhook_result(url: str, response: httpx.Response) -> dict[str, Any]:
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = response.headers.get("Retry-After", "")
        delay = timedelta(seconds=int(retry_after)) if retry_after.isdigit() else None
        raise ApplicationError(
            f"webhook {url} answered {status}; retrying",
            type="WebhookUnavailable",
            next_retry_delay=delay,
        )
    if status >= 400:
        raise ApplicationError(
            f"webhook {url} refused the call with {status}: {response.text[:200]}",
            type="WebhookRejected",
            non_retryable=True,
        )
    try:
        data = response.json()
    except ValueError:
        return {"status": status}
    return data if isinstance(data, dict) else {"status": status, "body": data}
