"""Refreshing a returning person's WeChat profile off the login's path.

A returning login makes one WeChat call (the token) and reads no profile, so the nickname
and avatar an identity keeps would stay those of its first login. When the profile was last
read more than ``WECHAT_QR_PROFILE_REFRESH_AFTER`` seconds ago, a returning login hands its
refresh to a background worker of its process, after the login has committed and without
waiting for it. The worker reads ``/sns/userinfo`` with the login's own access token (WeChat
keeps it valid for two hours and the refresh runs within seconds, so no refresh token is
stored: a refresh token is a credential, and it would only help to refresh people who do
not come back), stores the profile on the identity (WeChat's placeholders never replace real
data; the avatar is stored where avatars are) and sends
:data:`~flask_wechat_qr.signals.profile_refreshed`, for a host that copies the profile onto
its users.

One refresh per identity at a time, across all worker processes: a refresh first claims
the identity with one conditional ``UPDATE`` (its ``profile_refreshed_at`` still stale ->
stale again :data:`RETRY_AFTER` seconds from now), committed before the WeChat call; only
the worker whose ``UPDATE`` changed the row goes on. A refresh that succeeds stamps the
identity with now; one that fails in any way (WeChat, the database, a worker stopped
mid-way) leaves the claim, so a login tries again :data:`RETRY_AFTER` seconds later.

Bounded: one thread per process and app, started when there is work and ended when idle; at
most :data:`MAX_QUEUED` refreshes wait, and past that a refresh is skipped (a later login asks
again).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import typing as t
from dataclasses import dataclass
from datetime import timedelta

import requests
import sqlalchemy as sa
from flask import after_this_request, g, has_request_context, request

from . import signals
from .avatars import SCRIPT_ROOT
from .errors import LoginError
from .forked_child import (
    made_here,
    start_afresh_if_made_elsewhere,
    start_afresh_in_forked_child,
)
from .i18n import userinfo_lang
from .models import as_utc, utcnow
from .transactions import end_reads

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import CursorResult

    from .adapter import AccountAdapter
    from .association import AssociationPolicy
    from .client import WeChatClient, WeChatToken
    from .models import Models
    from .protocols import Identity, User
    from .settings import ConnectionSettings

log = logging.getLogger("flask_wechat_qr")

__all__ = ["ProfileRefresher"]

#: Refreshes waiting in one process at most; more are skipped, not queued.
MAX_QUEUED = 100
#: Seconds after a failed refresh before a login tries that identity's again.
RETRY_AFTER = 3600
#: Seconds the worker thread waits for more work before it ends.
IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class _Refresh:
    """One identity's refresh, as a login handed it over."""

    app: Flask
    connection: ConnectionSettings
    client: WeChatClient
    identity_id: int
    token: WeChatToken
    lang: str | None
    #: the path the site is served under (the stored avatar's URL starts with it)
    script_root: str = ""


def threads_idle_between_requests() -> bool:
    """Whether this process is a uWSGI worker without Python threads (``--enable-threads``
    off, uWSGI's default before 2.0.27 unless ``--threads`` is given): its worker holds the
    GIL while it waits for the next request, so a thread of the app's runs only while a
    request is served, and a refresh handed to one would wait for the next request."""
    uwsgi = sys.modules.get("uwsgi")  # only inside uWSGI
    if uwsgi is None or getattr(uwsgi, "has_threads", True):
        return False
    # uWSGI's --gevent mode says no threads, but gevent's patched ones run as greenlets.
    monkey = sys.modules.get("gevent.monkey")
    return not (monkey is not None and monkey.is_module_patched("threading"))


def refreshes_profiles(connection: ConnectionSettings) -> bool:
    """Whether ``connection``'s returning logins may refresh a stale profile: a refresh
    period is set, and the profile is not read at every login anyway."""
    return bool(connection.profile_refresh_after) and connection.profile_sync != "each_login"


class ProfileRefresher:
    """Refreshes stale profiles of returning people in the background; one per app."""

    def __init__(self, db: SQLAlchemy, models: Models, policy: AssociationPolicy,
                 adapter: AccountAdapter[User]) -> None:
        self.db = db
        self.models = models
        self.policy = policy
        self.adapter = adapter
        self.start_afresh()
        start_afresh_in_forked_child(self)
        table = models.Identity.__table__
        refreshed = sa.func.coalesce(table.c.profile_refreshed_at, table.c.created_at)
        # Built once: the claim (see the module's docstring). The openid and connection are
        # checked too: on SQLite a deleted identity's id may be given to someone else's.
        self._claim = sa.update(table).where(
            table.c.id == sa.bindparam("identity_id"),
            table.c.connection == sa.bindparam("of_connection"),
            table.c.openid == sa.bindparam("of_openid"),
            refreshed < sa.bindparam("stale_before"),
        ).values(profile_refreshed_at=sa.bindparam("lease"))

    def start_afresh(self) -> None:
        """No thread, nothing queued: at creation, in a process forked from this one
        (which has none of its parent's threads, and maybe a lock one of them held), and
        where gevent patched ``threading`` since (a greenlet waiting on the queue made
        before would stop the worker)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.Queue[_Refresh] = queue.Queue(MAX_QUEUED)
        #: refreshes queued or running here, by (connection, identity id)
        self._pending: set[tuple[str, int]] = set()
        self._thread: threading.Thread | None = None
        self.made_in = made_here()

    @staticmethod
    def is_due(connection: ConnectionSettings, identity: Identity, token: WeChatToken) -> bool:
        """Whether a returning login with ``token`` should refresh ``identity``'s profile."""
        if not refreshes_profiles(connection) or not token.grants_profile:
            return False  # off; read at every login anyway; or a token that cannot read it
        last = identity.profile_refreshed_at or identity.created_at
        after = timedelta(seconds=connection.profile_refresh_after)
        return last is None or as_utc(last) < utcnow() - after

    def schedule(self, connection: ConnectionSettings, client: WeChatClient,
                 identity: Identity, token: WeChatToken) -> bool:
        """Queue ``identity``'s refresh (in a request, after its login committed); ``False``
        if it is queued already or the queue is full."""
        key = (connection.identifier, identity.id)
        job = _Refresh(signals.sender(), connection, client, identity.id, token,
                       userinfo_lang(), request.script_root if has_request_context() else "")
        start_afresh_if_made_elsewhere(self)
        if threads_idle_between_requests() and has_request_context():
            # No thread would run once the answer is sent: the refresh runs in the
            # request's own thread after the answer (WSGI's close), not during it. Not
            # marked pending here: an answer the host replaced is never closed, and the
            # claim in the database keeps two refreshes of one profile apart anyway.
            @after_this_request
            def after_the_answer(response: t.Any) -> t.Any:
                response.call_on_close(lambda: self._run(job))
                return response

            return True
        with self._lock:
            if key in self._pending:
                return False
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                log.info("profile refresh skipped: %d already waiting", MAX_QUEUED)
                return False
            self._pending.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work,
                                                name="wechat-qr-profile-refresh", daemon=True)
                self._thread.start()
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until no refresh is queued or running (tests, and a clean shutdown);
        ``False`` if some still are after ``timeout`` seconds."""
        start_afresh_if_made_elsewhere(self)
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def refresh(self, connection: ConnectionSettings, client: WeChatClient, identity_id: int,
                token: WeChatToken, lang: str | None = None) -> bool:
        """Refresh one identity's profile now (in an app context): ``True`` if this call did
        it; ``False`` if another refresh has it, it was not stale, or it failed (logged)."""
        now = utcnow()
        after = timedelta(seconds=connection.profile_refresh_after)
        claimed = self._in_transaction(lambda: t.cast("CursorResult[t.Any]",
            self.db.session.execute(self._claim, {
                "identity_id": identity_id, "of_connection": connection.identifier,
                "of_openid": token.openid, "stale_before": now - after,
                "lease": now - after + timedelta(seconds=RETRY_AFTER)})).rowcount == 1)
        if not claimed:
            return False
        try:
            profile = client.userinfo(token, lang)
        except (LoginError, requests.RequestException) as exc:
            log.warning("profile refresh of identity %s failed: %s; trying again in %d s",
                        identity_id, type(exc).__name__, RETRY_AFTER)
            return False
        avatars = self.policy.avatars
        if avatars is not None:
            # downloaded before the transaction that stores it, no connection held
            avatars.prefetch(profile, lambda: end_reads(self.db))
        identity = self._in_transaction(
            lambda: self.policy.refresh_profile(identity_id, profile, token.unionid))
        if identity is None:
            return False  # unlinked meanwhile
        user = self.adapter.load_user(identity.user_id)
        signals.send(signals.profile_refreshed, user=user, identity=identity,
                     profile=self.policy.as_kept(profile),
                     connection=connection)
        return True

    def _work(self) -> None:
        """The worker thread: refreshes until the queue stays empty for a while (or
        :meth:`start_afresh` gave the refresher another)."""
        jobs = self._queue
        while True:
            try:
                job = jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue is not jobs:
                        return
                    if jobs.empty():
                        self._thread = None
                        return
                continue
            try:
                self._run(job)
            finally:
                with self._idle:
                    self._pending.discard((job.connection.identifier, job.identity_id))
                    self._idle.notify_all()

    def _run(self, job: _Refresh) -> None:
        """One refresh in an app context of its own; nothing it raises ends the thread."""
        try:
            with job.app.app_context():
                g.setdefault(SCRIPT_ROOT, job.script_root)
                try:
                    self.refresh(job.connection, job.client, job.identity_id, job.token,
                                 job.lang)
                except Exception:
                    log.exception("profile refresh of identity %s failed; trying again in "
                                  "%d s", job.identity_id, RETRY_AFTER)
        except Exception:  # the host's teardown_appcontext, after the refresh
            log.exception("closing the app context of a profile refresh failed")

    def _in_transaction(self, work: t.Callable[[], t.Any]) -> t.Any:
        try:
            result = work()
            self.db.session.commit()
            return result
        except BaseException:
            self.db.session.rollback()
            raise
