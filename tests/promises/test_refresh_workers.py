"""Profile refresh (``WECHAT_QR_PROFILE_REFRESH_AFTER``) in real worker processes: the example
site under gunicorn (several sync workers; gthread workers forked from an app built once with
``--preload``), against a WeChat API on loopback that counts ``/sns/userinfo`` calls and can
hold them unanswered. Logins come from several clients at once (127.0.0.x).

Promised: however many workers log one stale person in at once, WeChat's profile is read
once, and no login waits for it; a hung, garbled or refusing WeChat never touches a login,
the identity keeps its data, the retry waits, and no token reaches the log; more stale
people than a worker queues are skipped, not queued without end, and refreshed at a later
login, with one refresh thread per worker that ends when idle; SQLite's single writer never
fails a login ("database is locked").
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import statistics
import threading
import time
import typing as t
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
import trustme
from requests.adapters import HTTPAdapter
from support import APP_ID, APP_SECRET, ONE_DATABASE, Database, LiveServer, gunicorn
from werkzeug.wrappers import Request, Response

WEEK = 7 * 24 * 3600
#: What a refresh waits after it failed (refresh.RETRY_AFTER, as docs/association.rst says).
RETRY_AFTER = 3600
#: Most refreshes one worker queues (refresh.MAX_QUEUED, as docs/association.rst says).
MAX_QUEUED = 100
#: Seconds an idle refresh thread lives on (refresh.IDLE_SECONDS).
IDLE_SECONDS = 5
#: Longest the fake WeChat holds a call unanswered (until :meth:`CountingWeChat.release`), in
#: seconds: past any batch of logins a loaded machine runs meanwhile.
HOLD = 60
#: The site's WECHAT_QR_HTTP_TIMEOUT where a held profile call must stay held while logins
#: run (the default 5 s would end it, and the refresh thread would go on to its queue).
PATIENT = str(HOLD)
#: What a login must never hit, in any worker's log.
LOG_PROBLEMS = ("Traceback", "database is locked", "ERROR", "WORKER TIMEOUT", "Exception")

#: The host gunicorn serves: the example site, every logger at DEBUG (urllib3 logs the URLs
#: it fetches), and a page telling how many refresh threads its worker runs, and its pid.
SITE_MODULE = '''
import logging
import os
import threading

logging.basicConfig(level=logging.DEBUG)

from example_app import create_app

app = create_app()


@app.get("/test/refresh-threads")
def refresh_threads():
    return {"threads": sum(t.name == "wechat-qr-profile-refresh"
                           for t in threading.enumerate()), "pid": os.getpid()}
'''


class CountingWeChat(LiveServer):
    """WeChat's API on loopback. A code ``<openid>.<anything>`` logs that openid in, each time
    with a new access token; ``/sns/userinfo`` calls are counted by openid, held unanswered
    while :attr:`holding` is set (:data:`HOLD` at most), or answered with the openid's fault."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.asked: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.tokens: list[str] = []
        #: token calls held unanswered ("hang token")
        self.held_tokens = 0
        self.codes: list[str] = []
        self.faults: dict[str, str] = {}
        self.nickname = "张三🐼"
        self.holding = threading.Event()
        self.released = threading.Event()
        super().__init__(self.app, ssl_context=ssl_context)
        self.server.daemon_threads = False

    def release(self) -> None:
        self.holding.clear()
        self.released.set()

    @Request.application  # type: ignore[misc]
    def app(self, request: Request) -> Response:
        if request.path == "/sns/oauth2/access_token":
            openid = request.args["code"].split(".")[0]
            if self.faults.get(openid) == "hang token":  # the login's own call, held
                with self.lock:
                    self.held_tokens += 1
                self.released.wait(HOLD)
            token = "AT-" + secrets.token_hex(24)
            with self.lock:
                self.tokens.append(token)
            return _wechat({"access_token": token, "expires_in": 7200, "openid": openid,
                            "refresh_token": "RT-" + secrets.token_hex(24),
                            "scope": "snsapi_login", "unionid": "u-" + openid})
        openid = request.args["openid"]
        with self.lock:
            self.asked[openid] += 1
        fault = self.faults.get(openid)
        if self.holding.is_set() or fault == "hang":
            self.released.wait(HOLD)
        with self.lock:
            self.answered[openid] += 1
        if fault == "html":
            return Response("<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault == "errcode":
            return _wechat({"errcode": 40001, "errmsg": "invalid credential, rid: 1-2-3"})
        profile = {"openid": "someone-else" if fault == "other" else openid,
                   "unionid": "u-" + openid, "nickname": self.nickname, "sex": 0,
                   "headimgurl": "", "privilege": []}
        return _wechat(profile)

    def __exit__(self, *exc: t.Any) -> None:
        self.release()
        super().__exit__(*exc)


def _wechat(payload: dict[str, t.Any]) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), content_type="text/plain")


class _FromAddress(HTTPAdapter):
    """Connections from one loopback address (127.0.0.x), as from another client."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def log_in(base: str, openid: str, wechat: CountingWeChat, address: str = "127.0.0.1"
           ) -> tuple[int, float]:
    """A whole WeChat login of ``openid`` in a new browser: its status and seconds."""
    with requests.Session() as browser:
        browser.mount("http://", _FromAddress(address))
        started = time.monotonic()
        start = browser.get(base + "/auth/wechat/login", allow_redirects=False, timeout=20)
        assert start.status_code == 302, start.text
        state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
        code = f"{openid}.{secrets.token_hex(8)}"
        wechat.codes.append(code)
        done = browser.get(base + "/auth/wechat/callback", allow_redirects=False, timeout=20,
                           params={"code": code, "state": state})
        return done.status_code, time.monotonic() - started


def log_in_at_once(base: str, wechat: CountingWeChat, openids: list[str]
                   ) -> list[tuple[int, float]]:
    """Logins of ``openids``, eight at a time, from eight client addresses."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda n: log_in(base, openids[n], wechat, f"127.0.0.{n % 8 + 1}"),
                             range(len(openids))))


@pytest.fixture
def site_url(database: Database) -> str:
    """The site's database (a new schema on PostgreSQL)."""
    return database.url("site")


@pytest.fixture
def site_env(site_url: str) -> t.Callable[..., dict[str, str]]:
    """The site's environment: on the test's database, against ``wechat``."""

    def env(wechat: CountingWeChat, **settings: str) -> dict[str, str]:
        return {"DATABASE_URL": site_url, "SECRET_KEY": "shared-by-all-workers-" + "7" * 16,
                "WECHAT_QR_APP_ID": APP_ID, "WECHAT_QR_APP_SECRET": APP_SECRET,
                "WECHAT_QR_API_BASE_URL": wechat.url,
                "WECHAT_QR_OPEN_BASE_URL": "http://127.0.0.1:9",  # browsers never go there
                "WECHAT_QR_SANDBOX": "", "WECHAT_QR_SANDBOX_PUBLIC_URL": "",
                "WECHAT_QR_STORE_AVATARS": "false",
                "WECHAT_QR_PROFILE_REFRESH_AFTER": str(WEEK), **settings}

    return env


@pytest.fixture
def site_db(site_url: str) -> t.Iterator[sa.Engine]:
    """The site's database, as a database tool sees it."""
    engine = sa.create_engine(site_url)
    yield engine
    engine.dispose()


def age(engine: sa.Engine, openids: list[str] | None = None, seconds: int = WEEK + 60) -> None:
    """Profiles read ``seconds`` ago (all, or those of ``openids``)."""
    identities = _identities(engine)
    when = datetime.now(UTC) - timedelta(seconds=seconds)
    update = sa.update(identities).values(profile_refreshed_at=when, created_at=when)
    if openids is not None:
        update = update.where(identities.c.openid.in_(openids))
    with engine.begin() as connection:
        connection.execute(update)


def identities(engine: sa.Engine) -> dict[str, t.Any]:
    """Every identity row, by openid."""
    with engine.connect() as connection:
        return {row.openid: row for row in connection.execute(sa.select(_identities(engine)))}


def _identities(engine: sa.Engine) -> sa.Table:
    return sa.Table("wechat_qr_identity", sa.MetaData(), autoload_with=engine)


def wait_for(condition: t.Callable[[], t.Any], seconds: float = 10) -> t.Any:
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.1)
    return result


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def assert_clean(log: Path) -> None:
    text = log.read_text(errors="replace")
    for problem in LOG_PROBLEMS:
        assert problem not in text, text[max(0, text.find(problem) - 2000):][:6000]


def site_module(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir(exist_ok=True)
    (folder / "refresh_site.py").write_text(SITE_MODULE)
    return folder


# --- one person, everywhere at once ------------------------------------------------------

SERVERS: dict[str, dict[str, t.Any]] = {
    "3 sync workers": {"workers": 3},
    "2 gthread workers x 4, preloaded": {"workers": 2, "threads": 4, "preload": True},
    # gevent patches threading in each worker, after a preloaded app was built: the refresh
    # thread is a greenlet, and what it waits on must be gevent's.
    "2 gevent workers, preloaded": {"workers": 2, "gevent": True, "preload": True},
}


@pytest.mark.parametrize(("database", "server"), [
    ("sqlite", "3 sync workers"),
    ("sqlite", "2 gthread workers x 4, preloaded"),
    ("sqlite", "2 gevent workers, preloaded"),
    ("postgresql", "2 gevent workers, preloaded"),
    # Forked after the app was built: no connection of the parent's may serve a worker.
    ("postgresql", "2 gthread workers x 4, preloaded"),
], indirect=["database"])
def test_one_person_logging_in_on_every_worker_at_once_is_refreshed_once(
        site_env: t.Any, site_db: sa.Engine, tmp_path: Path, server: str) -> None:
    stale, fresh = "oStale-1111", "oFresh-2222"
    log = tmp_path / "gunicorn.log"
    with CountingWeChat() as wechat, \
            gunicorn(site_env(wechat, WECHAT_QR_HTTP_TIMEOUT=PATIENT), log,
                     **SERVERS[server]) as base:
        assert [log_in(base, who, wechat)[0] for who in (stale, fresh)] == [302, 302]
        assert [s for s, _ in log_in_at_once(base, wechat, [stale, fresh] * 4)] == [302] * 8
        assert wechat.asked == {stale: 1, fresh: 1}  # the first logins read the profile
        age(site_db, [stale])
        wechat.nickname = "张三丰🐉"
        wechat.holding.set()
        mixed = log_in_at_once(base, wechat, [stale, fresh] * 12)
        # Every login answered while WeChat still held the refresh's profile call.
        assert wechat.answered == {stale: 1, fresh: 1}
        assert [status for status, _ in mixed] == [302] * 24
        # ... and no slower than the logins of someone fresh (no refresh at all).
        seconds = {who: statistics.median(s for n, (_, s) in enumerate(mixed) if n % 2 == i)
                   for i, who in enumerate((stale, fresh))}
        assert seconds[stale] < 3 * seconds[fresh], seconds
        wait_for(lambda: wechat.asked[stale] >= 2)
        wechat.release()
        wait_for(lambda: identities(site_db)[stale].nickname == "张三丰🐉")
        time.sleep(0.5)  # a second refresh (there must be none) would have asked by now
        assert wechat.asked == {stale: 2, fresh: 1}  # the first logins, and one refresh
        assert identities(site_db)[fresh].nickname == "张三🐼"
    assert_clean(log)


# --- a hostile or slow WeChat --------------------------------------------------------------


@ONE_DATABASE
def test_a_hung_garbled_or_refusing_wechat_never_touches_a_login_nor_leaks_a_token(
        site_env: t.Any, site_db: sa.Engine, tmp_path: Path) -> None:
    faults = {"oHang-1": "hang", "oHtml-2": "html", "oErrcode-3": "errcode",
              "oOther-4": "other"}
    people = list(faults)
    log = tmp_path / "gunicorn.log"
    # The timeout ends the hung refresh; it also bounds every healthy call of these logins,
    # which a loaded machine once took over 1 s to answer (a 504 among the first logins).
    with CountingWeChat() as wechat, gunicorn(
            site_env(wechat, WECHAT_QR_HTTP_TIMEOUT="3"), log, app="refresh_site:app",
            path=[site_module(tmp_path)], workers=2, threads=2, preload=True) as base:
        assert [s for s, _ in log_in_at_once(base, wechat, people)] == [302] * 4
        age(site_db)
        wechat.faults = faults
        wechat.nickname = "someone else's nickname"
        assert [s for s, _ in log_in_at_once(base, wechat, people * 5)] == [302] * 20
        wait_for(lambda: log.read_text().count("profile refresh of identity") >= 4)
        retry_at = datetime.now(UTC) - timedelta(seconds=WEEK - RETRY_AFTER)
        for openid, row in identities(site_db).items():
            assert row.nickname == "张三🐼", openid
            lease = _utc(row.profile_refreshed_at)
            assert abs((lease - retry_at).total_seconds()) < 120, openid
        # Tried again in an hour, not at the next logins.
        assert [s for s, _ in log_in_at_once(base, wechat, people)] == [302] * 4
        time.sleep(0.5)
        assert wechat.asked == dict.fromkeys(people, 2)
    text = log.read_text(errors="replace")
    assert "/sns/userinfo?access_token=[redacted]" in text  # urllib3 logged at DEBUG
    for secret in [*wechat.tokens, *wechat.codes, APP_SECRET]:
        assert secret not in text
    assert_clean(log)


@pytest.mark.parametrize(("preload", "tls"), [(False, False), (True, False), (True, True)],
                         ids=["app built in the worker", "preloaded", "preloaded, https"])
@ONE_DATABASE
def test_a_gevent_worker_cuts_a_hung_wechat_call_and_its_other_logins_go_on(
        site_env: t.Any, tmp_path: Path, preload: bool, tls: bool) -> None:
    """``gunicorn -k gevent``, the app built before gevent patched threading and ssl
    (``--preload``) or after: a login whose WeChat token call hangs ends at the HTTP timeout
    with the timeout page, while the worker's other logins, at once from several addresses,
    all succeed; over https as WeChat's API is (urllib3's TLS context of the unpatched
    class failed every call with a RecursionError)."""
    stuck = "oHangToken-1"
    log = tmp_path / "gunicorn.log"
    server_tls, trusted = None, {}
    if tls:
        authority = trustme.CA()
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(server_tls)
        authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        trusted = {"REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem")}
    with CountingWeChat(server_tls) as wechat, gunicorn(
            site_env(wechat, WECHAT_QR_HTTP_TIMEOUT="3", **trusted), log, workers=1,
            gevent=True, preload=preload) as base:
        wechat.faults = {stuck: "hang token"}
        with ThreadPoolExecutor(3) as pool:
            hung = [pool.submit(log_in, base, stuck, wechat, f"127.0.0.{20 + n}")
                    for n in range(3)]
            wait_for(lambda: wechat.held_tokens == 3)  # all three wait for WeChat
            # One login from each of eight addresses at once, well within the hung ones' 3 s
            # (24 took 0.5-1.0 s with the machine loaded, and CI has seen one login of four
            # take over 1 s).
            others = log_in_at_once(base, wechat, [f"oGevent-{n}" for n in range(8)])
            assert [status for status, _ in others] == [302] * 8
            # They went on meanwhile.
            assert not any(future.done() for future in hung)
            ended = [future.result(timeout=20) for future in hung]
        assert [status for status, _ in ended] == [504] * 3
        assert all(3 <= seconds < 7 for _, seconds in ended), ended
        wechat.release()
        assert [s for s, _ in log_in_at_once(base, wechat, ["oGevent-1", "oAfter-2"])] == \
            [302, 302]
    text = log.read_text(errors="replace")
    assert text.count("gave no complete answer within WECHAT_QR_HTTP_TIMEOUT") == 3, text
    # Said once, with what to do, where urllib3's own context would have failed.
    assert text.count("ssl was patched (gevent) after urllib3") == (1 if tls else 0), text
    assert_clean(log)


# --- more stale people than a worker queues -------------------------------------------------


@ONE_DATABASE
def test_more_stale_people_than_a_worker_queues_are_refreshed_at_a_later_login(
        site_env: t.Any, site_db: sa.Engine, tmp_path: Path) -> None:
    people = [f"oMany-{n:03d}" for n in range(MAX_QUEUED + 12)]
    log = tmp_path / "gunicorn.log"
    # The first refresh's profile call stays held while all the logins run: the default 5 s
    # timeout would end it once they take longer (2 s here on a machine loaded with three
    # busy loops), and the refresh thread would take on its queue while logins still come.
    with CountingWeChat() as wechat, gunicorn(
            site_env(wechat, WECHAT_QR_HTTP_TIMEOUT=PATIENT), log, app="refresh_site:app",
            path=[site_module(tmp_path)], workers=1, threads=8, preload=True) as base:
        add_people(site_db, people)
        age(site_db)

        def threads() -> int:
            return int(requests.get(base + "/test/refresh-threads", timeout=5).json()["threads"])

        wechat.holding.set()
        assert [s for s, _ in log_in_at_once(base, wechat, people)] == [302] * len(people)
        assert threads() == 1
        wechat.release()
        wait_for(lambda: threads() == 0, IDLE_SECONDS + 10)  # done, and the thread ended
        refreshed = set(wechat.asked)
        # One running and MAX_QUEUED waiting; the others were skipped, not queued.
        assert MAX_QUEUED <= len(refreshed) <= MAX_QUEUED + 1
        assert wechat.asked == dict.fromkeys(refreshed, 1)
        skipped = [p for p in people if p not in refreshed]
        assert [s for s, _ in log_in_at_once(base, wechat, skipped)] == [302] * len(skipped)
        wait_for(lambda: len(wechat.asked) >= len(people))
        time.sleep(0.5)  # a second refresh of anyone (there must be none) would have asked
        assert wechat.asked == dict.fromkeys(people, 1)
        assert threads() <= 1
    assert_clean(log)


def add_people(engine: sa.Engine, openids: list[str]) -> None:
    """Users who logged in with WeChat before (rows as their first logins left them)."""
    users = sa.Table("user", sa.MetaData(), autoload_with=engine)
    identities = _identities(engine)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for openid in openids:
            user_id = connection.execute(sa.insert(users).values(
                nickname="张三🐼", created_at=now)).inserted_primary_key[0]
            connection.execute(sa.insert(identities).values(
                connection="wechat", openid=openid, unionid="u-" + openid,
                user_id=str(user_id), user_key=user_id, nickname="张三🐼", created_at=now,
                last_login_at=now, profile_refreshed_at=now))


# --- a worker stopped mid-refresh ------------------------------------------------------------


@ONE_DATABASE
def test_a_worker_stopped_while_its_refresh_waits_for_wechat_leaves_it_for_an_hour(
        site_env: t.Any, site_db: sa.Engine, tmp_path: Path) -> None:
    """A deploy or ``--max-requests`` stops a worker (SIGTERM: gunicorn's graceful stop) while
    its refresh waits for WeChat: the profile counts as unread, tried again in an hour (not
    in a week, as if it had been read)."""
    person = "oStopped-5"
    log = tmp_path / "gunicorn.log"
    with CountingWeChat() as wechat, gunicorn(
            site_env(wechat), log, app="refresh_site:app", path=[site_module(tmp_path)],
            workers=1) as base:
        assert log_in(base, person, wechat)[0] == 302
        age(site_db)
        wechat.holding.set()
        worker = requests.get(base + "/test/refresh-threads", timeout=5).json()["pid"]
        assert log_in(base, person, wechat)[0] == 302
        wait_for(lambda: wechat.asked[person] == 2)  # the refresh has claimed and asks
        os.kill(worker, signal.SIGTERM)
        wait_for(lambda: f"Worker exiting (pid: {worker})" in log.read_text())
        wechat.release()
        assert log_in(base, person, wechat)[0] == 302  # on the new worker: not read again
        row = identities(site_db)[person]
        assert row.nickname == "张三🐼"
        retry_at = datetime.now(UTC) - timedelta(seconds=WEEK - RETRY_AFTER)
        assert abs((_utc(row.profile_refreshed_at) - retry_at).total_seconds()) < 120
        age(site_db, seconds=WEEK + 60)  # an hour and more later
        wechat.nickname = "张三丰🐉"
        assert log_in(base, person, wechat)[0] == 302
        wait_for(lambda: identities(site_db)[person].nickname == "张三丰🐉")
        assert wechat.asked[person] == 3
    assert_clean(log)
