"""``flask wechat-qr check --live``: ask WeChat itself whether each connection is set up
right, before a visitor meets the error.

The offline checks (:mod:`.checks`) read the settings; these call WeChat (or whatever
``WECHAT_QR_OPEN_BASE_URL``/``WECHAT_QR_API_BASE_URL`` name), through each connection's
own client session, so the proxy and CA bundle are the app's, and every step is bounded by
``WECHAT_QR_HTTP_TIMEOUT``:

* each of WeChat's hosts resolves and takes a connection (a name lookup has no timeout of
  its own: it runs in a thread that is waited for a bounded time, and a host that fails is
  not called at all), and this server's clock is compared with the ``Date`` of WeChat's
  answer: the ID tokens' ``iat``/``exp`` depend on it;
* the QR page each connection sends visitors to is loaded and read
  (:func:`~.wechat_pages.classify_page`);
* a made-up code is exchanged with the AppID and AppSecret: WeChat's 40029 (invalid code)
  means the pair matches, 40125 a wrong AppSecret, 40013 an unknown AppID;
* the same for the Official Account, where one is configured. WeChat shows its
  authorization page only inside WeChat, so it is asked with a WeChat User-Agent.

What they find are :class:`~.checks.Finding` s, as the offline checks', and rows to list;
nothing is printed here. No text leaves this module with a configured AppSecret in it,
even when an answer echoes one.
"""

from __future__ import annotations

import secrets
import socket
import time
import typing as t
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urlsplit

import requests
from requests.utils import select_proxy

from . import name_lookup
from .checks import Deployment, Finding, problem, setting_key, warning
from .client import ACCESS_TOKEN_PATH, describe_transport_failure, json_object
from .redact import redact
from .settings import OA_CONSOLE
from .urls import IN_PROCESS_ORIGIN
from .wechat_pages import PageVerdict, classify_page, page_summary

if t.TYPE_CHECKING:
    from .client import WeChatClient
    from .runtime import Runtime
    from .settings import ConnectionSettings

#: The code exchanged: no WeChat code looks like it, and it says who sent it.
INVALID_CODE = "flask-wechat-qr-check-invalid-code"
#: Seconds this server's clock may differ from WeChat's before the check says so.
CLOCK_TOLERANCE = 60
#: Asked for WeChat's own wording (its pages default to Chinese; ``lang=en`` still wins).
ACCEPT_LANGUAGE = "zh-CN,zh;q=0.9"
#: The QR page is loaded as a visitor's computer would load it.
DESKTOP_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                      "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36")
#: The Official Account's page, as WeChat's browser on a phone: outside WeChat, WeChat only
#: says "请在微信客户端打开链接" and checks nothing.
WECHAT_USER_AGENT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
                     "MicroMessenger/8.0.50(0x1800323c) NetType/WIFI Language/zh_CN")
_WEBSITE_CONSOLE = "your website application on open.weixin.qq.com (管理中心 > 网站应用)"
_RETURN_CODES = ("developers.weixin.qq.com/doc/oplatform/Return_codes/"
                 "Return_code_descriptions_new.html")
_MASK = "********"

Row = tuple[str, str]


@dataclass(frozen=True)
class LiveSection:
    """Rows listed under one heading, as the connection listing of ``check``."""

    title: str
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class LiveReport:
    """What the live checks saw (to list) and found (problems and warnings)."""

    sections: tuple[LiveSection, ...] = ()
    findings: tuple[Finding, ...] = ()
    #: why nothing was called, when nothing was
    skipped: str | None = None


class HostUnreachable(Exception):
    """A host that does not resolve or take a connection; the text says which and why."""


@dataclass(frozen=True)
class _Subject:
    """One app of a connection, as a probe speaks of it: its website application or its
    Official Account."""

    client: WeChatClient
    #: what the texts call it ("website application", "Official Account")
    name: str
    #: the labels of its two rows
    page_label: str
    keys_label: str
    #: how the site configured its AppID and AppSecret (``WECHAT_QR_APP_ID``, a list entry)
    id_key: str
    secret_key: str
    #: where its AppID and AppSecret are found
    console: str
    #: the browser its page is asked as
    user_agent: str
    #: the verdict of a page that accepts this app's set-up
    accepted: PageVerdict
    #: where its redirect URI's host is registered, and what that field is called
    domain_field: str


@dataclass
class _Results:
    """Rows and findings, gathered as a probe goes."""

    rows: list[Row] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def run_live_checks(deployment: Deployment, runtime: Runtime) -> LiveReport:
    """Call WeChat for every connection of ``runtime`` (see the module's docstring)."""
    settings = deployment.settings
    if settings.sandbox or settings.api_base_url.startswith(IN_PROCESS_ORIGIN):
        return LiveReport(skipped=(
            "logins go to the sandbox inside this app, which answers only this app's own "
            "requests: nothing to call. Run --live against WeChat, or a standalone sandbox "
            "(WECHAT_QR_OPEN_BASE_URL and WECHAT_QR_API_BASE_URL)"))
    return LiveCheck(deployment, runtime).run()


class LiveCheck:
    """One run of the live checks: the hosts first (a host that fails is not called
    again), then each connection's apps; the clock from the first API answer."""

    def __init__(self, deployment: Deployment, runtime: Runtime) -> None:
        self.deployment = deployment
        self.runtime = runtime
        self.timeout = deployment.settings.http_timeout
        #: hosts (``host[:port]``) that failed, and why
        self.unreachable: dict[str, str] = {}
        #: this server's clock minus the API's, in seconds, once an answer said
        self.skew: float | None = None

    def run(self) -> LiveReport:
        """Every probe, then the report, scrubbed of every configured AppSecret."""
        hosts = self.check_hosts()
        sections = []
        findings = list(hosts.findings)
        for conn in self.deployment.settings.connections.values():
            results = self.check_connection(conn)
            sections.append(LiveSection(f"Live checks of connection {conn.identifier!r}",
                                        tuple(results.rows)))
            findings += results.findings
        clock_row, clock_findings = self.clock()
        settings = self.deployment.settings
        first = LiveSection(
            f"Live checks: QR pages at {_origin(self._open_base())}, API at "
            f"{_origin(settings.api_base_url)}; each step at most {self.timeout:g} s",
            (*hosts.rows, clock_row))
        findings += clock_findings
        return _scrubbed(LiveReport((first, *sections), tuple(findings)),
                         _configured_secrets(settings.connections.values()))

    def _open_base(self) -> str:
        return next(iter(self.runtime.clients.values())).open_base

    # --- hosts and clock ------------------------------------------------------------

    def check_hosts(self) -> _Results:
        """Each host once (WeChat's pages and its API are two; a sandbox is one)."""
        roles: dict[str, tuple[str, list[str]]] = {}
        for role, url in (("QR pages", self._open_base()),
                          ("API", self.deployment.settings.api_base_url)):
            roles.setdefault(_netloc(url), (url, []))[1].append(role)
        proxies = dict(next(iter(self.runtime.clients.values())).session.proxies)
        results = _Results()
        for netloc, (url, names) in roles.items():
            label = f"{' and '.join(names)} host"
            try:
                seen = probe_host(url, proxies, self.timeout)
            except HostUnreachable as exc:
                self.unreachable[netloc] = str(exc)
                results.rows.append((label, f"{netloc}: UNREACHABLE, {exc}"))
                results.findings.append(_unreachable_finding(netloc, names, str(exc)))
            else:
                results.rows.append((label, f"{netloc}: {seen}"))
        return results

    def note_clock(self, date_header: str | None, local_time: float) -> None:
        """The skew from the first answer whose ``Date`` can be read."""
        if self.skew is not None or not date_header:
            return
        try:
            self.skew = local_time - parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError):
            return

    def clock(self) -> tuple[Row, list[Finding]]:
        """The clock's row, and a finding when it is more than :data:`CLOCK_TOLERANCE` off:
        a problem when this site signs ID tokens, whose ``iat``/``exp`` it sets."""
        if self.skew is None:
            return ("Clock", "not checked: no answer of the API said its time"), []
        seconds = round(abs(self.skew))
        side = "ahead of" if self.skew > 0 else "behind"
        said = (f"{seconds} s {side} the API's" if seconds > 1 else "within 1 s of the API's"
                ) + " (the Date of its answer)"
        if seconds <= CLOCK_TOLERANCE:
            return ("Clock", f"OK, {said}"), []
        signer = self.runtime.id_tokens
        issuing = signer is not None and any(
            c.callback_url for c in self.deployment.settings.connections.values())
        fix = ("keep the clock synchronised (NTP: chrony, systemd-timesyncd or your cloud's "
               "time service)")
        if issuing and signer is not None:
            effect = ("not valid yet (iat in the future)" if self.skew > 0 else
                      "expired" if seconds >= signer.ttl else "short of their lifetime")
            found = problem(
                f"this server's clock is {seconds} s {side} WeChat's: the ID tokens it signs "
                f"for business callback URLs (valid {signer.ttl} s) reach receivers whose "
                f"clocks are right {effect}, and receivers that allow less skew refuse them",
                fix)
        else:
            found = warning(
                f"this server's clock is {seconds} s {side} WeChat's: logins work, but ID "
                "tokens (once a business callback URL is set) and log times depend on it",
                fix)
        return ("Clock", f"{found.kind.upper()}, {said}"), [found]

    # --- a connection ---------------------------------------------------------------

    def check_connection(self, conn: ConnectionSettings) -> _Results:
        """The page and the keys of the connection's website application, then of its
        Official Account."""
        results = _Results()
        if not conn.has_credentials:
            results.rows.append(("Not checked", "no AppID and AppSecret"))
            return results
        redirect_uri = (self.deployment.urls.redirect_uris[conn.identifier]
                        if self.deployment.base_url else None)
        subjects = [self._website(conn)]
        if conn.identifier in self.runtime.official_accounts:
            subjects.append(self._official_account(conn))
        for subject in subjects:
            self.load_page(subject, redirect_uri, results)
            self.exchange_invalid_code(subject, results)
        return results

    def _index(self, conn: ConnectionSettings) -> int:
        return list(self.deployment.settings.connections).index(conn.identifier)

    def _website(self, conn: ConnectionSettings) -> _Subject:
        index = self._index(conn)
        return _Subject(
            client=self.runtime.clients[conn.identifier], name="website application",
            page_label="QR page", keys_label="AppID and AppSecret",
            id_key=setting_key(self.deployment, index, "app_id"),
            secret_key=setting_key(self.deployment, index, "app_secret"),
            console=_WEBSITE_CONSOLE, user_agent=DESKTOP_USER_AGENT, accepted="qr_page",
            domain_field=("the authorization callback domain (授权回调域) on "
                          "open.weixin.qq.com (管理中心 > 网站应用 > 开发信息)"))

    def _official_account(self, conn: ConnectionSettings) -> _Subject:
        index = self._index(conn)
        return _Subject(
            client=self.runtime.official_accounts[conn.identifier], name="Official Account",
            page_label="Official Account page", keys_label="Official Account keys",
            id_key=setting_key(self.deployment, index, "oa_app_id"),
            secret_key=setting_key(self.deployment, index, "oa_app_secret"),
            console=OA_CONSOLE, user_agent=WECHAT_USER_AGENT, accepted="consent_page",
            domain_field=("a web authorization domain (网页授权域名) on mp.weixin.qq.com "
                          "(设置与开发 > 公众号设置 > 功能设置), with its MP_verify file served"))

    # --- (a) the page ---------------------------------------------------------------

    def load_page(self, subject: _Subject, redirect_uri: str | None,
                  results: _Results) -> None:
        """Load the page a visitor is sent to and say what it is."""
        label, client = subject.page_label, subject.client
        if redirect_uri is None:
            results.rows.append((label, "not checked: the redirect URI is unknown (give "
                                        "--base-url or SERVER_NAME)"))
            return
        netloc = _netloc(client.open_base)
        if netloc in self.unreachable:
            results.rows.append((label, f"not checked: {netloc} is unreachable"))
            return
        url = client.authorize_url(redirect_uri, secrets.token_hex(16)).split("#", 1)[0]
        try:
            resp = client.session.request(
                "GET", url, withhold_token=True, timeout=self.timeout, allow_redirects=False,
                headers={"User-Agent": subject.user_agent, "Accept-Language": ACCEPT_LANGUAGE,
                         "Accept": "text/html,application/xhtml+xml"})
        except requests.RequestException as exc:
            reason = describe_transport_failure(exc, client.open_base)
            results.rows.append((label, f"not checked: {reason}"))
            results.findings.append(warning(
                f"the {label} could not be loaded from this server: {reason}",
                "run the check where the page can be loaded, or open it in a browser: "
                + url, client.connection.identifier))
            return
        if resp.is_redirect:
            location = resp.headers.get("Location", "")
            if _same_page(location, redirect_uri):  # a silent snsapi_base authorization
                results.rows.append((label, "OK, WeChat sends the browser straight on to the "
                                            f"redirect URI {redirect_uri}"))
                return
            verdict: PageVerdict = "unknown"
            summary = f"a redirect to {_netloc(location) or '?'}"
        else:
            page = resp.content.decode("utf-8", "replace")
            verdict, summary = classify_page(page), page_summary(page)
        row, found = _page_outcome(subject, verdict, redirect_uri, url,
                                   f"HTTP {resp.status_code}, “{summary}”")
        results.rows.append((label, row))
        if found is not None:
            results.findings.append(found)

    # --- (b) the AppID and AppSecret ------------------------------------------------

    def exchange_invalid_code(self, subject: _Subject, results: _Results) -> None:
        """Exchange :data:`INVALID_CODE`: WeChat looks at the AppID and AppSecret before
        the code, so its answer says whether they match."""
        client, label = subject.client, subject.keys_label
        netloc = _netloc(client.api_base_url)
        if netloc in self.unreachable:
            results.rows.append((label, f"not checked: {netloc} is unreachable"))
            return
        app_id, app_secret = client.credentials(client.connection)
        query = urlencode([("appid", app_id), ("secret", app_secret), ("code", INVALID_CODE),
                           ("grant_type", "authorization_code")])
        before = time.time()
        try:
            resp = client.session.request(
                "GET", f"{client.api_base_url}{ACCESS_TOKEN_PATH}?{query}",
                withhold_token=True, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            reason = describe_transport_failure(exc, client.api_base_url)
            results.rows.append((label, f"not checked: {reason}"))
            results.findings.append(problem(
                f"WeChat's API could not be asked about the {subject.name}'s AppID and "
                f"AppSecret: {reason}; logins fail the same way",
                f"make sure {netloc} is WeChat's API (or a proxy to it) and that this server "
                "reaches it (DNS, firewall, proxy), then run the check again",
                client.connection.identifier))
            return
        self.note_clock(resp.headers.get("Date"), (before + time.time()) / 2)
        row, found = _credentials_outcome(subject, app_id, resp)
        results.rows.append((label, row))
        if found is not None:
            results.findings.append(found)


# --- what a page and an answer mean --------------------------------------------------


def _page_outcome(subject: _Subject, verdict: PageVerdict, redirect_uri: str, url: str,
                  seen: str) -> tuple[str, Finding | None]:
    """The row and finding of a page's verdict."""
    app_id = subject.client.app_id
    if verdict == subject.accepted:
        shown = "the QR code" if verdict == "qr_page" else "the authorization page"
        return f"OK, {shown} for AppID {app_id} and redirect URI {redirect_uri}", None
    where = subject.client.connection.identifier
    host = urlsplit(redirect_uri).hostname or redirect_uri
    if verdict == "callback_domain":
        return f"PROBLEM, “redirect_uri 参数错误” (10003): {host} is not registered", problem(
            f"WeChat refuses the redirect URI {redirect_uri} for the {subject.name} {app_id} "
            f"(“redirect_uri 参数错误”, 10003): its host {host} is not the domain registered "
            "for it", f"enter {host} as {subject.domain_field}: exactly that host, no scheme, "
            "no port; or fix --base-url / SERVER_NAME", where)
    if verdict == "callback_scheme":
        return "PROBLEM, 10039: the other of http and https is registered", problem(
            f"WeChat refuses the scheme of the redirect URI {redirect_uri} for the "
            f"{subject.name} {app_id} (10039): it was registered for the other of http and "
            "https", "serve the site (and give --base-url) with the scheme WeChat has, or "
            "change it there", where)
    if verdict == "scope":
        kind = "approved" if subject.accepted == "qr_page" else "a verified service account"
        return "PROBLEM, “Scope参数错误或没有Scope权限” (10005)", problem(
            f"WeChat refuses the scope asked for the {subject.name} {app_id} (“Scope参数错误或"
            "没有Scope权限”, 10005): the AppID is another kind of app's, or the app has no "
            "right to that scope yet",
            f"set {subject.id_key} to the AppID of {subject.console} ({kind})", where)
    if verdict == "app_id":
        return "PROBLEM, “appid 参数错误”: WeChat does not know the AppID", problem(
            f"WeChat does not know the AppID {app_id} of the {subject.name} (“appid 参数错误”)",
            f"copy {subject.id_key} from {subject.console}", where)
    if verdict == "refused":
        return "PROBLEM, “该链接无法访问”, no cause given", problem(
            f"WeChat refuses the {subject.page_label} (“该链接无法访问”) without saying why: "
            f"most often {host} is not the registered domain, or the app is not approved",
            f"check {subject.domain_field} and the app's status; WeChat's page: {url}", where)
    if verdict == "not_in_wechat":
        return "WARNING, “请在微信客户端打开链接”: not checked outside WeChat", warning(
            f"WeChat showed “请在微信客户端打开链接” for the {subject.page_label}: it checks the "
            "Official Account's AppID and domain only inside WeChat, so they were not checked",
            "open the site's login once in WeChat on a phone", where)
    return f"WARNING, a page this check does not know: {seen}", warning(
        f"the {subject.page_label} is not one this check knows ({seen}): WeChat may have "
        "changed it, or something else answers there",
        f"open it in a browser and look: {url}", where)


def _credentials_outcome(subject: _Subject, app_id: str,
                         resp: requests.Response) -> tuple[str, Finding | None]:
    """The row and finding of WeChat's answer to the made-up code."""
    where = subject.client.connection.identifier
    answer = json_object(resp)
    if answer is None:
        summary = page_summary(resp.content.decode("utf-8", "replace"), 80)
        found = problem(
            f"the API at {_netloc(subject.client.api_base_url)} answered HTTP "
            f"{resp.status_code} with something that is not WeChat's JSON (“{summary}”)",
            "check WECHAT_QR_API_BASE_URL and any proxy between this server and WeChat",
            where)
        return f"PROBLEM, HTTP {resp.status_code}, not WeChat's JSON", found
    errcode, errmsg = answer.get("errcode"), _printable(answer.get("errmsg", ""))
    said = f"errcode {errcode}: {errmsg}"
    if errcode == 40029:
        return f"OK, they match (WeChat: {said}, as it answers a made-up code)", None
    if errcode == 40125:
        found = problem(
            f"WeChat refuses the AppSecret of the {subject.name} {app_id} ({said})",
            f"copy the AppSecret of {subject.console} into {subject.secret_key} (reset it "
            "there if nobody has it; another app's AppSecret, e.g. an Official Account's "
            "for a website application, gives 40125 too)", where)
    elif errcode == 40013:
        found = problem(f"WeChat does not know the AppID {app_id} of the {subject.name} "
                        f"({said})", f"copy {subject.id_key} from {subject.console}", where)
    elif errcode in (-1, 45009, 45011):
        found = warning(f"WeChat was busy ({said}): the {subject.name}'s AppID and AppSecret "
                        "were not checked", "run the check again in a minute", where)
    elif errcode is None:
        found = problem(
            f"the API at {_netloc(subject.client.api_base_url)} accepted a made-up code: "
            "it is not WeChat", "point WECHAT_QR_API_BASE_URL at WeChat's API", where)
        said = "no errcode"
    else:
        found = problem(
            f"WeChat answered the made-up code with {said}, not 40029 (invalid code): the "
            f"{subject.name}'s AppID and AppSecret could not be confirmed",
            f"look the errcode up in WeChat's return codes ({_RETURN_CODES})", where)
    return f"{found.kind.upper()}, {said}", found


# --- helpers ---------------------------------------------------------------------------


def probe_host(url: str, proxies: t.Mapping[str, str], timeout: float) -> str:
    """Resolve ``url``'s host (or its proxy's) and open a TCP connection to it, each within
    ``timeout``: what was seen, or :class:`HostUnreachable` saying why not."""
    proxy = select_proxy(url, dict(proxies))
    if proxy:
        target = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    else:
        target = urlsplit(url)
    host = target.hostname or ""
    try:
        port = target.port or (443 if target.scheme == "https" else 80)
    except ValueError:
        raise HostUnreachable(f"{target.netloc} has no valid port") from None
    via = f" (through the proxy {host}:{port})" if proxy else ""
    addresses = resolve(host, port, timeout)
    started = time.monotonic()
    address = connect(addresses, port, timeout)
    elapsed = round((time.monotonic() - started) * 1000)
    more = f" and {len(addresses) - 1} more" if len(addresses) > 1 else ""
    return (f"resolves to {address}{more}; port {port} takes a connection ({elapsed} ms)"
            f"{via}")


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses of ``host``, looked up within ``timeout`` (:mod:`.name_lookup`:
    ``getaddrinfo`` itself can block far longer with a dead DNS server)."""
    try:
        found = name_lookup.addresses(host, port, type=socket.SOCK_STREAM, timeout=timeout)
    except TimeoutError:
        raise HostUnreachable(f"resolving {host} took longer than {timeout:g} s") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HostUnreachable(f"could not resolve {host} ({reason})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def connect(addresses: list[str], port: int, timeout: float) -> str:
    """The first of ``addresses`` that takes a TCP connection on ``port``, all tries
    within ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    reason = "no address"
    for address in addresses[:4]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.create_connection((address, port), timeout=remaining):
                return address
        except TimeoutError:
            reason = f"timed out after {timeout:g} s"
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
    shown = f"[{addresses[0]}]" if addresses and ":" in addresses[0] else \
        (addresses[0] if addresses else "?")
    raise HostUnreachable(f"could not connect to {shown}:{port} ({reason})")


def _unreachable_finding(netloc: str, roles: list[str], reason: str) -> Finding:
    if "API" in roles:
        return problem(
            f"this server cannot reach WeChat's API at {netloc}: {reason}; every login "
            "fails when the code is exchanged",
            f"let this server resolve and connect to {netloc} (DNS, firewall, security "
            "group), or give it a proxy (HTTPS_PROXY), or fix WECHAT_QR_API_BASE_URL")
    return warning(
        f"this server cannot reach WeChat's QR pages at {netloc}: {reason}; they were not "
        "checked (visitors' browsers load them, not this server)",
        f"run the check where {netloc} can be reached, or fix WECHAT_QR_OPEN_BASE_URL")


def _printable(value: t.Any, limit: int = 200) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _same_page(location: str, redirect_uri: str) -> bool:
    """Whether a redirect goes to ``redirect_uri`` (with ``code`` and ``state`` added)."""
    there, expected = urlsplit(location), urlsplit(redirect_uri)
    return (there.scheme, there.netloc, there.path) == (expected.scheme, expected.netloc,
                                                         expected.path)


def _netloc(url: str) -> str:
    """``host[:port]`` of ``url``, without any user name or password."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{_netloc(url)}{parts.path.rstrip('/')}"


def _configured_secrets(connections: t.Iterable[ConnectionSettings]) -> list[str]:
    found = [s for conn in connections for s in (conn.app_secret, conn.oa_app_secret) if s]
    return sorted(set(found), key=len, reverse=True)


def _scrub(text: str, configured: list[str]) -> str:
    """``text`` without any configured AppSecret (also as WeChat might echo it, in a
    ``secret=`` query parameter)."""
    text = redact(text)
    for secret in configured:
        if len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def _scrubbed(report: LiveReport, configured: list[str]) -> LiveReport:
    """``report`` with :func:`_scrub` applied to every text it holds."""
    sections = tuple(LiveSection(_scrub(s.title, configured),
                                 tuple((label, _scrub(value, configured))
                                       for label, value in s.rows))
                     for s in report.sections)
    findings = tuple(Finding(f.kind, _scrub(f.what, configured), _scrub(f.fix, configured),
                             f.connection) for f in report.findings)
    return LiveReport(sections, findings, report.skipped)
