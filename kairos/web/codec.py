"""The codec server: ``POST /codec/decode`` for the Temporal UI and ``temporal workflow show``.

Temporal stores every Kairos payload encrypted under its customer's data key (kairos.runtime.codec).
The Temporal UI and CLI, configured with this endpoint (``--ui-codec-endpoint``,
``--codec-endpoint``), send it the payloads they display, ``{"payloads": [...]}`` in
protobuf's JSON form, and show what comes back. A payload whose key was deleted (its customer
was forgotten) comes back as it was sent: ciphertext for everyone, never an error.

There is no ``/codec/encode``: what a person types into the UI (a signal's input) is not
encrypted under a customer's key, which the codec can only choose from a workflow id that the
protocol does not send; Kairos's workers still read such plain payloads.

Who may call it: a browser only from the Temporal UI's origins (``KAIROS_CODEC_ORIGINS``, CORS
answered here); anyone only with a bearer token from ``KAIROS_CODEC_TOKENS``, or, while no token
is configured, only from this machine (loopback), as ``make dev`` runs it. Payload contents are
never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from temporalio.api.common.v1 import Payload, Payloads

from kairos.runtime.codec import KeyRing, decrypt_payload, is_encrypted, key_id_of
from kairos.runtime.crypto import KeyUnavailable
from kairos.web.errors import ApiError, json_error, read_body

log = logging.getLogger(__name__)

# The UI decodes a history page at a time; a page of large payloads stays well below this.
BODY_LIMIT = 8 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
PREFLIGHT_MAX_AGE_SECONDS = 600


class CodecRoutes:
    """``/codec/decode``: built with the key ring, the tokens and the UI origins it accepts."""

    def __init__(self, keys: KeyRing, tokens: tuple[str, ...], origins: tuple[str, ...]) -> None:
        self.keys = keys
        self.tokens = tokens
        self.origins = origins

    def routes(self) -> list[BaseRoute]:
        return [Route("/codec/decode", self.decode, methods=["POST", "OPTIONS"])]

    async def decode(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.origins:
            # No CORS headers: the browser keeps the answer from the page that asked.
            return json_error(
                403,
                "forbidden",
                f"origin {origin} may not call the codec server: add it to KAIROS_CODEC_ORIGINS",
            )
        cors = self._cors(origin)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=cors)
        try:
            self._authorize(request)
            payloads = _parse(await read_body(request, BODY_LIMIT))
        except ApiError as err:
            return json_error(err.status, err.code, err.message, headers={**err.headers, **cors})
        decoded = Payloads(payloads=[await self._decode(p) for p in payloads.payloads])
        kept = sum(is_encrypted(p) for p in decoded.payloads)
        if kept:
            # Counts only: what a payload holds is never logged, decrypted or not.
            log.info("codec: %d of %d payloads stay encrypted", kept, len(decoded.payloads))
        return Response(
            json_format.MessageToJson(decoded),
            media_type="application/json",
            headers={**cors, "Cache-Control": "no-store"},
        )

    async def _decode(self, payload: Payload) -> Payload:
        key_id = key_id_of(payload)
        if key_id is None:
            return payload
        try:
            return decrypt_payload(await self.keys.key(key_id), payload)
        except KeyUnavailable:
            return payload  # its customer was forgotten (or it was altered): ciphertext stays

    def _authorize(self, request: Request) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="kairos-codec"'}
        if not self.tokens:
            if _is_loopback(request.client.host if request.client else ""):
                return
            raise ApiError(
                403,
                "forbidden",
                "the codec server answers only this machine until KAIROS_CODEC_TOKENS is set",
            )
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, "unauthorized", "send a codec token: Authorization: Bearer <token>",
                headers=challenge,
            )  # fmt: skip
        # Compare with every token, so timing does not tell which (or whether one) nearly matched.
        matched = False
        for accepted in self.tokens:
            matched |= hmac.compare_digest(token.strip().encode(), accepted.encode())
        if not matched:
            raise ApiError(401, "unauthorized", "the codec token is not valid", headers=challenge)

    def _cors(self, origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            # The UI can be told to send its session cookies along (includeCredentials).
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
            "Vary": "Origin",
        }


def _parse(body: bytes) -> Payloads:
    try:
        document = json.loads(body)
        if not isinstance(document, dict) or not isinstance(document.get("payloads"), list):
            raise ValueError("expected an object with a list of payloads")
        return json_format.ParseDict(document, Payloads())
    except (ValueError, json_format.ParseError) as err:
        # The parser's message can quote the body: say what is expected, not what was sent.
        kind = "JSON" if isinstance(err, json.JSONDecodeError) else "payloads"
        raise ApiError(
            400,
            "invalid_body",
            f'the body is not valid {kind}: send {{"payloads": [{{"metadata": {{...}}, '
            '"data": "<base64>"}]} as the Temporal UI does',
        ) from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
