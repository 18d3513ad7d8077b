"""The console's routes under /console/: a Quart blueprint of server-rendered pages.

    GET  /console/                      to the keys (or the models) page
    GET  /console/login, POST           log in with the admin key
    POST /console/logout
    GET  /console/models                every configured model, with live health
    GET  /console/models/<id>           copyable examples for one model
    GET  /console/keys, POST            list and search keys; create one
    GET  /console/keys/<id>             one key: settings, usage, limiter, ledger rows
    POST /console/keys/<id>/edit|topup|revoke
    GET  /console/usage, /console/usage.csv

A cold path: it reads and changes keys through `KeyAdmin` (api/key_admin.py), the
admin API's own code. Every page but the login (and Models with `[console]
public_models`) needs a session; every POST a CSRF token of that session (and, when
the browser sends one, an Origin of this host). Responses carry a CSP that allows
only this console's own scripts and styles, and pages after a login `no-store`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

import trio
from quart import Blueprint, Response, g, render_template, request, url_for
from quart_trio import QuartTrio

from gateway.api.admin import admin_digest, check_admin_key
from gateway.api.key_admin import KeyAdmin
from gateway.api.metrics import merged_totals
from gateway.auth.manage import key_json
from gateway.console import forms
from gateway.console.examples import examples
from gateway.console.models_view import (
    HealthWindow,
    groups,
    model_rows,
    model_totals,
    per_mtok,
    seconds,
)
from gateway.console.session import COOKIE, LOGIN_COOKIE, LoginThrottle, Sessions, console_secret
from gateway.console.svg import bar_chart
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.observability.metrics import DURATION_BUCKETS, TTFT_BUCKETS
from gateway.providers.registry import provider_for
from gateway.state import Gateway
from gateway.store.records import StoreError

log = logging.getLogger("gateway")

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
PUBLIC: Final = frozenset({"console.login", "console.login_post", "console.static"})
MODEL_PAGES: Final = frozenset({"console.models", "console.model"})
KEY_STATES: Final = ("active", "revoked", "expired")
DONE: Final = {
    "updated": "The key was updated.",
    "topped_up": "Credit was added.",
    "revoked": "The key was revoked: it is refused from now on.",
}
CHART_DAYS: Final = 30


def _safe_next(target: str | None) -> str:
    """Where to go after the login: a console path of ours, never another site."""
    if not target:
        return "/console/keys"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return "/console/keys"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def add_console(app: QuartTrio, gw: Gateway) -> None:
    """The console on `app` (which needs `[state] admin_key`), and `GET /` leading to it."""
    admin = KeyAdmin(
        gw.db,
        gw.keys,
        ledger=gw.ledger,
        refusals=gw.refusals,
        limit_status=lambda key_id, now, limits: gw.limiter.status(key_id, now, limits),
    )
    app.register_blueprint(make_console_blueprint(gw, admin))

    @app.get("/")
    async def root() -> Response:
        if not gw.config.console.enabled:
            raise NotFound("Unknown path: GET /")
        return see_other("/console/", 303)


def make_console_blueprint(gw: Gateway, admin: KeyAdmin) -> Blueprint:
    """The console, serving `gw` and changing keys through `admin`."""
    admin_key = gw.config.state.admin_key
    assert admin_key, "the console needs [state] admin_key"
    digest = admin_digest(admin_key)
    sessions = Sessions(console_secret(admin_key), gw.config.console.session_max_age_s)
    throttle = LoginThrottle(gw.config.console.login_attempts_per_minute)
    window = HealthWindow(time.time())
    bp = Blueprint(
        "console",
        __name__,
        url_prefix="/console",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    def secure() -> bool:
        proto = request.headers.get("x-forwarded-proto", "")
        return request.scheme == "https" or proto.lower() == "https"

    def set_cookie(resp: Response, name: str, value: str, max_age: float | None) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=None if max_age is None else int(max_age),
            path="/console",
            secure=secure(),
            httponly=True,
            samesite="Strict",
        )

    async def page(template: str, status: int = 200, **context: Any) -> Response:
        sid = g.get("sid")
        html = await render_template(
            f"console/{template}",
            logged_in=sid is not None,
            csrf_token=sessions.csrf(sid) if sid else "",
            usd=forms.usd,
            when=forms.when,
            per_mtok=per_mtok,
            seconds=seconds,
            **context,
        )
        return Response(html, status=status, content_type="text/html; charset=utf-8")

    @bp.before_request
    async def gate() -> Response | None:
        console = gw.config.console
        if not console.enabled:
            raise NotFound(f"Unknown path: {request.method} {request.path}")
        g.sid = sessions.check(request.cookies.get(COOKIE), time.time())
        endpoint = request.endpoint or ""
        if request.method == "POST":
            origin = request.headers.get("origin")
            # The host only: behind a proxy that ends TLS the browser's origin is
            # https://HOST while this request came over http.
            if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
                return await page("error.html", 403, title="Refused", message=_FORGED)
            if endpoint != "console.login_post":
                form = await request.form
                if g.sid is None or not sessions.csrf_ok(g.sid, form.get("csrf_token")):
                    return await page("error.html", 403, title="Refused", message=_FORGED)
        public = endpoint in PUBLIC or (console.public_models and endpoint in MODEL_PAGES)
        if g.sid is None and not public:
            query = request.query_string.decode()
            target = request.path + (f"?{query}" if query else "")
            return see_other(url_for("console.login", next=target))
        return None

    @bp.after_request
    async def headers(resp: Response) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        if g.get("sid") is not None or request.endpoint in ("console.login", "console.login_post"):
            resp.headers["cache-control"] = "no-store"
        return resp

    @bp.errorhandler(GatewayError)
    async def gateway_error(e: GatewayError) -> Response:
        if not gw.config.console.enabled:  # no console: the gateway's own JSON 404
            return Response(e.body(), status=e.http_status, content_type="application/json")
        return await page("error.html", e.http_status, title="Error", message=e.message)

    @bp.errorhandler(StoreError)
    async def store_error(e: StoreError) -> Response:
        message = "The key store is unavailable; try again in a moment."
        return await page("error.html", 503, title="Unavailable", message=message)

    # -- login ------------------------------------------------------------------------

    @bp.get("/")
    async def home() -> Response:
        return see_other(url_for("console.keys"), 303)

    @bp.get("/login")
    async def login() -> Response:
        return await login_page()

    async def login_page(status: int = 200, error: str | None = None) -> Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        fresh = len(nonce) != 32 or not nonce.isalnum()
        if fresh:
            nonce = secrets.token_hex(16)
        resp = await page(
            "login.html",
            status,
            login_token=sessions.csrf(nonce, "login"),
            next=_safe_next(request.args.get("next")),
            error=error,
        )
        if fresh:
            set_cookie(resp, LOGIN_COOKIE, nonce, 3600)
        return resp

    @bp.post("/login")
    async def login_post() -> Response:
        now = time.time()
        wait = throttle.attempt(request.remote_addr or "-", now)
        if wait is not None:
            log.warning("console login refused: too many attempts from %s", request.remote_addr)
            resp = await login_page(429, f"Too many login attempts; try again in {wait:.0f} s.")
            resp.headers["retry-after"] = str(int(wait + 0.999))
            return resp
        form = await request.form
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not sessions.csrf_ok(nonce, form.get("login_token"), "login"):
            return await login_page(403, "The login form expired; try again.")
        if not check_admin_key((form.get("admin_key") or "").strip(), digest):
            log.warning("console login refused: wrong admin key from %s", request.remote_addr)
            return await login_page(401, "Incorrect admin key.")
        resp = see_other(_safe_next(form.get("next")), 303)
        set_cookie(resp, COOKIE, sessions.issue(), sessions.max_age_s)
        resp.delete_cookie(LOGIN_COOKIE, path="/console")
        return resp

    @bp.post("/logout")
    async def logout() -> Response:
        sessions.revoke(g.sid, time.time())
        g.sid = None
        resp = see_other(url_for("console.login"), 303)
        resp.delete_cookie(
            COOKIE, path="/console", secure=secure(), httponly=True, samesite="Strict"
        )
        return resp

    # -- models -----------------------------------------------------------------------

    @bp.get("/models")
    async def models() -> Response:
        snap = gw.current
        now = time.time()
        metrics = gw.observer.metrics
        totals = model_totals(await merged_totals(metrics)) if metrics is not None else {}
        covered_s, changes = window.since(now, totals)
        window.add(now, totals)
        health = snap.router.health
        mono = trio.current_time()
        rows = model_rows(
            snap.router.configured,
            lambda dep: provider_for(dep.kind).capabilities(dep),
            lambda model_id: health.ejected(model_id, mono),
            changes,
            (DURATION_BUCKETS, TTFT_BUCKETS),
        )
        return await page(
            "models.html",
            groups=groups(rows, snap.config),
            count=len(rows),
            covered_min=covered_s / 60,
            metrics_on=metrics is not None,
            nav="models",
        )

    @bp.get("/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        snap = gw.current
        route = next((r for r in snap.router.configured if r.id == model_id), None)
        if route is None:
            raise NotFound(f"No model {model_id!r} is configured.", code="model_not_found")
        base = request.host_url.rstrip("/") + "/v1"
        return await page(
            "model.html", model_id=model_id, examples=examples(base, model_id), nav="models"
        )

    # -- keys -------------------------------------------------------------------------

    async def keys_page(status: int = 200, **context: Any) -> Response:
        now = time.time()
        q = (request.args.get("q") or "").strip().lower()
        state = request.args.get("state") or ""
        rows = []
        for record in await admin.all_keys():
            row = key_json(record, now)
            if q and q not in record.name.lower() and q not in record.key_id:
                continue
            if state in KEY_STATES and row["state"] != state:
                continue
            rows.append(row)
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        context.setdefault("form", {})
        return await page(
            "keys.html",
            status,
            keys=rows,
            q=q,
            state=state,
            states=KEY_STATES,
            nav="keys",
            **context,
        )

    @bp.get("/keys")
    async def keys() -> Response:
        return await keys_page()

    @bp.post("/keys")
    async def create_key() -> Response:
        form = await request.form
        try:
            record, full_key = await admin.create(forms.create_body(form))
        except (forms.FormError, InvalidRequest) as e:
            return await keys_page(
                400, error=_message(e), error_field=_field(e), form=form, open_create=True
            )
        resp = await page(
            "key_created.html",
            201,
            key=key_json(record, time.time()),
            full_key=full_key,
            nav="keys",
        )
        resp.headers["cache-control"] = "no-store"
        return resp

    async def key_page(key_id: str, status: int = 200, **context: Any) -> Response:
        record = await admin.record(key_id)
        now = time.time()
        shown = {**key_json(record, now), **await admin.money_and_limits(record, now)}
        args = {"since": f"{CHART_DAYS}d", "key": key_id}
        await admin.flush()  # once, for the reports below
        by_day = await admin.usage({**args, "by": "day"}, flush=False)
        by_model = await admin.usage({**args, "by": "model"}, flush=False)
        by_status = await admin.usage({**args, "by": "status"}, flush=False)
        days = [(line.group or "-", line.totals) for line in by_day.lines]
        charts = [
            bar_chart("Requests per day", [(d[5:], t.requests) for d, t in days]),
            bar_chart(
                "Tokens per day",
                [(d[5:], t.prompt_tokens + t.completion_tokens) for d, t in days],
            ),
            bar_chart(
                "Spend per day",
                [(d[5:], t.cost_micros) for d, t in days],
                lambda v: forms.usd(int(v)),
            ),
        ]
        context.setdefault("form", _edit_values(record))
        return await page(
            "key.html",
            status,
            key=shown,
            charts=charts,
            by_model=by_model.lines,
            by_status=by_status.lines,
            recent=await admin.recent(key_id, 25, flush=False),
            done=DONE.get(request.args.get("done") or ""),
            days=CHART_DAYS,
            nav="keys",
            **context,
        )

    @bp.get("/keys/<key_id>")
    async def key(key_id: str) -> Response:
        return await key_page(key_id)

    @bp.post("/keys/<key_id>/edit")
    async def edit_key(key_id: str) -> Response:
        form = await request.form
        record = await admin.record(key_id)
        try:
            await admin.update(key_id, forms.update_body(form, record))
        except (forms.FormError, InvalidRequest) as e:
            return await key_page(key_id, 400, error=_message(e), error_field=_field(e), form=form)
        return see_other(url_for("console.key", key_id=key_id, done="updated"), 303)

    @bp.post("/keys/<key_id>/topup")
    async def topup(key_id: str) -> Response:
        form = await request.form
        try:
            await admin.topup(key_id, forms.topup_body(form))
        except (forms.FormError, InvalidRequest) as e:
            return await key_page(key_id, 400, topup_error=_message(e))
        return see_other(url_for("console.key", key_id=key_id, done="topped_up"), 303)

    @bp.post("/keys/<key_id>/revoke")
    async def revoke(key_id: str) -> Response:
        form = await request.form
        if form.get("confirm") != "yes":
            message = "Tick the box to confirm: a revoked key cannot be restored."
            return await key_page(key_id, 400, revoke_error=message)
        await admin.revoke(key_id)
        return see_other(url_for("console.key", key_id=key_id, done="revoked"), 303)

    # -- usage ------------------------------------------------------------------------

    def usage_args() -> dict[str, str]:
        args = {
            k: v.strip() for k, v in request.args.items() if k in ("by", "since", "until", "key")
        }
        args = {k: v for k, v in args.items() if v}
        args.setdefault("by", "day")
        args.setdefault("since", "30d")
        return args

    @bp.get("/usage")
    async def usage() -> Response:
        args = usage_args()
        error = None
        try:
            report = await admin.usage(args)
        except InvalidRequest as e:
            error = e.message
            report = await admin.usage({"by": "day", "since": "30d"})
        chart = None
        if report.by == "day":
            lines = report.lines
            chart = [
                bar_chart(
                    "Requests per day",
                    [((line.group or "-")[5:], line.totals.requests) for line in lines],
                ),
                bar_chart(
                    "Spend per day",
                    [((line.group or "-")[5:], line.totals.cost_micros) for line in lines],
                    lambda v: forms.usd(int(v)),
                ),
            ]
        return await page(
            "usage.html",
            400 if error else 200,
            report=report,
            args=args,
            error=error,
            charts=chart,
            csv_query=_query(args),
            nav="usage",
        )

    @bp.get("/usage.csv")
    async def usage_csv() -> Response:
        report = await admin.usage(usage_args())
        name = f"usage-by-{report.by}.csv"
        return Response(
            report.to_csv(),
            content_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    return bp


_FORGED: Final = (
    "This form was not sent by this console (a missing or stale CSRF token, or another "
    "site's page). Reload the page and try again."
)


def see_other(location: str, status: int = 303) -> Response:
    """A redirect (303: the browser follows with a GET, after a form's POST)."""
    return Response("", status=status, headers={"location": location})


def _message(e: ValueError | GatewayError) -> str:
    return e.message if isinstance(e, GatewayError) else str(e)


def _field(e: ValueError | GatewayError) -> str | None:
    if isinstance(e, forms.FormError):
        return e.field
    param = e.param if isinstance(e, GatewayError) else None
    return forms.FIELD_OF_PARAM.get(param or "", param)


def _edit_values(record: Any) -> dict[str, str]:
    return {
        "name": record.name,
        "models": ", ".join(record.models or ()),
        "rpm": "" if record.rpm is None else str(record.rpm),
        "tpm": "" if record.tpm is None else str(record.tpm),
        "spend_limit_usd": forms.usd_input(record.spend_limit_micros),
        "spend_period": record.spend_period or "month",
        "expires": forms.day(record.expires_at),
    }


def _query(args: Mapping[str, str]) -> str:
    return urlencode(args)
