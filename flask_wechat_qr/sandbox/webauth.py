"""The simulated Official Account's web authorization (网页授权): the page WeChat's in-app
browser shows at ``/connect/oauth2/authorize``, with WeChat's rules.

* The URL is matched like WeChat's: ``appid, redirect_uri, response_type=code, scope,
  state`` in that order (more may follow, e.g. the undocumented ``connect_redirect=1``;
  the ``#wechat_redirect`` fragment never reaches a server). A website application's AppID
  here, or a scope an Official Account has not, is WeChat's 10005 page; a redirect URI off
  the web authorization domain its 10003 page.
* ``snsapi_userinfo`` shows the consent sheet ("<name> 申请获得你的公开信息（昵称、头像）")
  every time, so a test can pick the simulated person, or a snapshot-page visitor (快照页,
  virtual ids and ``is_snapshotuser: 1``, as WeChat since 2022-07-12).
* ``snsapi_base`` is silent on WeChat. The sandbox needs to know who holds the phone: it
  asks once, remembers the person in a cookie (:data:`PERSON_COOKIE`) and the consent in its
  table, and from then on redirects at once with a code.
* Allow redirects with ``code`` and ``state``; Deny with ``state`` only (WeChat's
  documented refusal: no ``code``, no ``error``).
"""

from __future__ import annotations

import secrets
import time
import typing as t
from urllib.parse import parse_qsl

import sqlalchemy as sa
from flask import redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..i18n import gettext as _
from .users import PEOPLE, PEOPLE_BY_KEY, SNAPSHOT_CHOICE, is_snapshot, new_snapshot_key
from .views import (
    CONSENT_TTL,
    OFFICIAL_ACCOUNT,
    REDIRECT_ORDER,
    SandboxApp,
    SandboxRuntime,
    blueprint,
    chosen_person,
    lookup_key,
    made_up_people,
    new_code,
    order_problem,
    page_error,
    person_of,
    purge_now_and_then,
    redirect_uri_problem,
    response_type_problem,
    sandbox_runtime,
    scope_problem,
    state_problem,
    with_query,
)

#: The sandbox's cookie saying which simulated person holds "the phone" (WeChat knows who is
#: logged in to it; the sandbox asks once). Its value is the person's key.
PERSON_COOKIE = "wechat_qr_sandbox_person"


@blueprint.route("/connect/oauth2/authorize", methods=["GET", "POST"])
def authorize() -> t.Any:
    """WeChat's web authorization page, as the in-app browser shows it."""
    sandbox = sandbox_runtime()
    args = request.args
    app = sandbox.apps.get(args.get("appid", ""))
    if app is None:
        return page_error(_("Invalid appid"),
                          _("The appid is not an Official Account of this Open Platform."))
    keys = [key for key, _value in parse_qsl(request.query_string.decode("latin-1"),
                                             keep_blank_values=True)]
    scope = args.get("scope", "")
    redirect_uri, state = args.get("redirect_uri", ""), args.get("state")
    problem = (order_problem(keys, REDIRECT_ORDER)
               or scope_problem(app, scope, OFFICIAL_ACCOUNT)
               or response_type_problem(args.get("response_type"))
               or redirect_uri_problem(app, redirect_uri)
               or state_problem(state))
    if problem is not None:
        return problem

    remembered = _remembered_person(sandbox)
    if request.method == "GET":
        if (scope == "snsapi_base" and remembered is not None
                and _has_consented(sandbox, app, remembered)):
            return _grant(sandbox, app, remembered, scope, redirect_uri, state)
        return _consent_page(app, scope, remembered)
    if request.form.get("action") != "allow":
        return redirect(with_query(redirect_uri, [("state", state)]))
    if request.form.get("person") == SNAPSHOT_CHOICE and scope == "snsapi_userinfo":
        person_key: str | None = new_snapshot_key(secrets.token_hex(8))
    else:
        person_key = chosen_person(sandbox, request.form)
    if person_key is None:
        return _consent_page(app, scope, remembered,
                             problem=_("Choose a person or type a nickname.")), 400
    return _grant(sandbox, app, person_key, scope, redirect_uri, state)


def _consent_page(app: SandboxApp, scope: str, remembered: str | None,
                  problem: str | None = None) -> str:
    sandbox = sandbox_runtime()
    people = [*PEOPLE, *made_up_people(sandbox)]
    if remembered is not None and remembered not in {person.key for person in people}:
        people.insert(0, person_of(sandbox, remembered))  # made up longer ago
    return render_template(
        "wechat_qr/sandbox/authorize.html", app=app, scope=scope, people=people,
        chosen=remembered or people[0].key, snapshot_choice=SNAPSHOT_CHOICE,
        in_wechat="MicroMessenger" in request.headers.get("User-Agent", ""),
        problem=problem)


def _grant(sandbox: SandboxRuntime, app: SandboxApp, person_key: str, scope: str,
           redirect_uri: str, state: str | None) -> Response:
    """A code for ``person_key``, the consent recorded and the person remembered (never a
    snapshot visitor: a browse-only page consents to nothing), and back to the site."""
    now = time.time()
    purge_now_and_then(sandbox, now)
    code = new_code(sandbox, app.app_id, person_key, scope, now)
    snapshot = is_snapshot(person_key)
    if not snapshot:
        _record_consent(sandbox, app, person_key, scope, now)
    sandbox.db.session.commit()
    response = redirect(with_query(redirect_uri, [("code", code), ("state", state)]))
    if not snapshot:
        response.set_cookie(PERSON_COOKIE, person_key, max_age=CONSENT_TTL,
                            path=url_for(".index"), httponly=True, samesite="Lax")
    return response


def _record_consent(sandbox: SandboxRuntime, app: SandboxApp, person_key: str, scope: str,
                    now: float) -> None:
    consent_model = sandbox.models.Consent
    row = _consent(sandbox, app, person_key)
    if row is None:
        sandbox.db.session.add(consent_model(app_id=app.app_id, person_key=person_key,
                                             scope=scope, expires_at=now + CONSENT_TTL))
        return
    if scope == "snsapi_userinfo":
        row.scope = scope  # the wider grant is kept
    row.expires_at = now + CONSENT_TTL


def _has_consented(sandbox: SandboxRuntime, app: SandboxApp, person_key: str) -> bool:
    row = _consent(sandbox, app, person_key)
    return row is not None and row.expires_at >= time.time()


def _consent(sandbox: SandboxRuntime, app: SandboxApp, person_key: str) -> t.Any:
    consent_model = sandbox.models.Consent
    return sandbox.db.session.execute(
        sa.select(consent_model).where(consent_model.app_id == app.app_id,
                                       consent_model.person_key == person_key)
    ).scalar_one_or_none()


def _remembered_person(sandbox: SandboxRuntime) -> str | None:
    """The person of :data:`PERSON_COOKIE`, if the sandbox still knows them."""
    key = lookup_key(request.cookies.get(PERSON_COOKIE))
    if key in PEOPLE_BY_KEY:
        return key
    if key and sandbox.db.session.get(sandbox.models.Person, key) is not None:
        return key
    return None
