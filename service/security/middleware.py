"""`AuthMiddleware`: bearer tokens and tenant isolation for every route, before any handler runs.

For each HTTP request it finds the route the router will pick, applies that route's rule (`rules.py`) to the
caller's token and puts the `Principal` on the scope. `?access_token=` is always removed from the query; it is
honoured only on the stream when `SYNCTRACK_STREAM_TOKEN_IN_QUERY` is on. Failed authentications count against
the source's budget (429 beyond it). With authentication off, only loopback requests are served.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from anyio import to_thread
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.errors import ApiError, ErrorCode
from schemas.settings import Settings
from service.common.errors import error_response
from service.common.pagination import list_param
from service.common.services import services
from service.security.auth_mode import check_local_request
from service.security.edge import API_PREFIX, EdgeMiddleware, body_refusal
from service.security.failure_budget import FailureLimiter
from service.security.revocation import RevocationList
from service.security.rules import ADMIN, Kind, Rule, check_company, check_parameters, needs_lookup, rule_for
from service.security.sources import SourceResolver, bucket_key, is_loopback, parse_networks
from service.security.tokens import LOCAL_DEVELOPER, AdminTokens, Authenticator, InvalidToken, Principal, TokenSigner

log = logging.getLogger("synctrack.auth")

QUERY_TOKEN = "access_token"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="synctrack"'}
AUTHENTICATED = Rule(Kind.COMPANY)
"""Paths under /v1/ that match no route: any valid token, then the router's own 404 or 405."""


def principal_of(request: Request) -> Principal:
    """The caller of a request that passed `AuthMiddleware` (every `/v1/*` route does)."""
    principal: Principal = request.state.principal
    return principal


def company_filter(request: Request) -> list[str]:
    """Which companies a list or the stream may show the caller (the one place handlers ask): exactly a company
    token's one company, whatever the query says, or an admin's `company_id=` filter (may be empty)."""
    own = principal_of(request).company_id
    if own is not None:
        return [own]
    return list_param(request, "company_id")


def auth_disabled(settings: Settings) -> bool:
    """Authentication is off only when asked for and no admin token is configured."""
    return settings.auth_disabled and not settings.admin_token_hashes


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        admin, signer = AdminTokens(settings.admin_token_hashes), TokenSigner(settings.token_signing_key)
        self.authenticator = Authenticator(admin, signer)
        self.disabled = auth_disabled(settings)
        self.sources = SourceResolver(parse_networks(settings.trusted_proxies, "SYNCTRACK_TRUSTED_PROXIES"))
        self.limiter = FailureLimiter(settings.failure_limit_per_minute)
        self.unruled: set[str] = set()
        if self.disabled:
            log.warning("msg=auth_disabled detail=%r", "requests without a token are served to loopback clients only")
        elif not settings.admin_token_hashes:
            log.warning("msg=no_admin_tokens detail=%r", "set SYNCTRACK_ADMIN_TOKEN_HASHES; only company tokens work")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refused := await self.admit(scope) or body_refusal(scope)) is not None:
            await error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def admit(self, scope: Scope) -> ApiError | None:
        """Why the request may not go on (401, 403, 404, 429); None once it may, with its `Principal` on the
        scope when its route needs one."""
        query_token = take_query_token(scope)
        rule, path_params = self.route_rule(scope)
        try:
            if self.disabled and rule.kind != Kind.SIGNATURE:
                check_local_request(scope, self.settings.cors_origins)
            if rule.kind in (Kind.PUBLIC, Kind.SIGNATURE) or (
                rule.kind == Kind.METRICS and not self.settings.metrics_require_token
            ):
                return None
            principal = self.authenticate(scope, rule, query_token)
            token_id = principal.token_id
            if token_id is not None and await services(scope["app"]).get(RevocationList).is_revoked(token_id):
                raise ApiError(401, ErrorCode.UNAUTHORIZED, "the token has been revoked", headers=dict(CHALLENGE))
            if rule.kind != Kind.COMPANY and not principal.is_admin:
                raise ApiError(403, ErrorCode.FORBIDDEN, "this route needs an admin token")
            check_parameters(scope, path_params)
            if rule.kind == Kind.COMPANY and not principal.is_admin and rule.target is not None:
                await self.confine(scope, principal, rule, path_params)
                if rule.right and not principal.can(rule.right):
                    raise ApiError(403, ErrorCode.FORBIDDEN, f"this token does not have the {rule.right!r} right")
        except ApiError as refused:
            return refused
        scope.setdefault("state", {})["principal"] = principal
        return None

    def route_rule(self, scope: Scope) -> tuple[Rule, dict[str, Any]]:
        """The rule of the route the router will choose, and that route's path parameters."""
        for route in scope["app"].router.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                rule = rule_for(scope["method"], route.path)
                if rule is None:
                    rule = ADMIN if route.path.startswith(API_PREFIX) else AUTHENTICATED
                    if route.path not in self.unruled:
                        self.unruled.add(route.path)
                        log.error("msg=route_without_access_rule path=%s treated_as=%s", route.path, rule.kind)
                return rule, dict(child.get("path_params", {}))
        path: str = scope["path"]
        return (AUTHENTICATED if path.startswith(API_PREFIX) else Rule(Kind.PUBLIC)), {}

    def authenticate(self, scope: Scope, rule: Rule, query_token: str | None) -> Principal:
        """The caller; raises ApiError (401, or 429 for a source over its failure budget)."""
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
        token: str | None = None
        problem = "this route needs an Authorization: Bearer <token> header"
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
            if token is None:
                problem = "the Authorization header must be 'Bearer <token>'"
        elif query_token is not None:
            if rule.query_token and self.settings.stream_token_in_query:
                token = query_token
            else:
                problem = f"?{QUERY_TOKEN}= is accepted on the stream only, when SYNCTRACK_STREAM_TOKEN_IN_QUERY is on"
        elif self.disabled:
            if is_loopback(scope):
                return LOCAL_DEVELOPER
            problem = "authentication is off for local development, which serves loopback clients only"
        if token is not None:
            try:
                return self.authenticator.principal(token, time.time())
            except InvalidToken as exc:
                problem = str(exc)
        source = bucket_key(self.sources.source(scope))
        wait = self.limiter.retry_after(source)
        if wait is not None:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                f"too many failed authentications from this source; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        if self.limiter.charge(source):
            log.warning("msg=source_rate_limited source=%s route=api", source)
        raise ApiError(401, ErrorCode.UNAUTHORIZED, problem, headers=dict(CHALLENGE))

    async def confine(self, scope: Scope, principal: Principal, rule: Rule, path_params: dict[str, Any]) -> None:
        """Keep a company-scoped request inside its company (raises ApiError 404); forces list filters."""
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        params = {key: str(value) for key, value in path_params.items()}
        engine = services(scope["app"]).engine
        if needs_lookup(rule, query):
            confined = await to_thread.run_sync(check_company, principal, rule, params, query, engine)
        else:
            confined = check_company(principal, rule, params, query, engine)
        if confined != query:
            scope["query_string"] = urlencode(confined).encode("latin-1")


def take_query_token(scope: Scope) -> str | None:
    """Remove `access_token` from the query string (so no handler or log sees it) and return it."""
    raw: bytes = scope.get("query_string", b"")
    if QUERY_TOKEN.encode() not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    tokens = [value for key, value in pairs if key == QUERY_TOKEN]
    if not tokens:
        return None
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != QUERY_TOKEN]).encode("latin-1")
    return tokens[0]


def security_middleware(settings: Settings) -> list[Middleware]:
    """The app's one middleware stack, every route's: header limits and `Cache-Control: no-store` on every `/v1/*`
    answer outermost, then CORS (a preflight carries no token), then authentication and the JSON-only body rule.

    The token settings are checked here, when the app is built, so a malformed hash or a short signing
    key stops the process at start (raises TokenConfigError) instead of failing every request.
    """
    AdminTokens(settings.admin_token_hashes)
    TokenSigner(settings.token_signing_key)
    parse_networks(settings.trusted_proxies, "SYNCTRACK_TRUSTED_PROXIES")
    stack = [Middleware(EdgeMiddleware, max_header_bytes=settings.max_header_bytes)]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                expose_headers=["Retry-After"],
                max_age=600,
            )
        )
    stack.append(Middleware(AuthMiddleware, settings=settings))
    return stack
