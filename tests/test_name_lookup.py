"""Name lookups within a deadline: a DNS server that does not answer holds a lookup thread,
not the login (the call's deadline holds), and one thread per name, not one per login."""

from __future__ import annotations

import socket
import threading
import time
import typing as t

import pytest
import requests

from flask_wechat_qr import name_lookup
from flask_wechat_qr.deadline import DeadlineAdapter

ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.9", 443))]


class HangingResolver:
    """A ``getaddrinfo`` that answers only once let go (a DNS server that does not answer),
    counting the lookups it was asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[str] = []
        self.let_go = threading.Event()
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: str, port: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self.asked.append(host)
        assert self.let_go.wait(timeout=20)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.9", port))]


def test_a_lookup_that_does_not_answer_is_given_up_after_its_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = HangingResolver(monkeypatch)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^looking up api\.weixin\.qq\.com took longer "
                                           r"than 0\.2 s$"):
        name_lookup.addresses("api.weixin.qq.com", 443, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2
    resolver.let_go.set()


def test_one_lookup_of_a_name_runs_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight logins at once while DNS does not answer: one thread asks it, the others wait
    for that answer; once it came, a later lookup asks again (nothing is cached)."""
    resolver = HangingResolver(monkeypatch)
    answers: list[t.Any] = []

    def look_up() -> None:
        answers.append(name_lookup.addresses("api.weixin.qq.com", 443, timeout=10))

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not resolver.asked and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the others have come meanwhile
    resolver.let_go.set()
    for thread in threads:
        thread.join(timeout=10)
    assert resolver.asked == ["api.weixin.qq.com"]
    assert len(answers) == 8 and all(answer[0][4][0] == "127.0.0.9" for answer in answers)
    name_lookup.addresses("api.weixin.qq.com", 443, timeout=10)
    assert resolver.asked == ["api.weixin.qq.com"] * 2


def test_the_resolvers_errors_are_raised_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*args: t.Any, **kwargs: t.Any) -> t.Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        name_lookup.addresses("api.weixin.test", 443, timeout=5)


def test_an_address_is_no_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """An address written as one is answered at once, with no thread (the sandbox's and
    a test's ``127.0.0.1``, an ``[::1]`` proxy)."""
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    for address in ("127.0.0.1", "::1"):
        assert name_lookup.addresses(address, 443, type=socket.SOCK_STREAM, timeout=1)
    assert started == []


def test_a_wechat_call_whose_host_does_not_resolve_in_time_ends_at_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The call's deadline holds while its host is looked up: before, a lookup DNS did not
    answer held the call (and its worker) for the resolver's own timeouts, however short
    the deadline (a long-run hunt: 3 s for a 2 s deadline)."""
    resolver = HangingResolver(monkeypatch)
    started = time.monotonic()
    with requests.Session() as session, pytest.raises(requests.Timeout):
        session.trust_env = False
        session.mount("https://", DeadlineAdapter(0.3))
        session.get("https://api.weixin.test/sns/oauth2/access_token", timeout=5)
    assert 0.25 <= time.monotonic() - started < 2
    assert resolver.asked == ["api.weixin.test"]
    resolver.let_go.set()


def test_an_avatar_whose_host_does_not_resolve_in_time_is_given_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_wechat_qr.avatar_download import AvatarDownloader

    resolver = HangingResolver(monkeypatch)
    downloader = AvatarDownloader(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017  (its own error type: the test is the time)
        downloader.download("https://thirdwx.qlogo.cn/mmopen/vi_32/abc/132")
    assert time.monotonic() - started < 2
    assert resolver.asked == ["thirdwx.qlogo.cn"]
    resolver.let_go.set()


def test_a_thread_that_cannot_start_leaves_the_name_to_the_next_lookup(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread to be had (a container's process limit): a name not found for now (the
    caller's usual error), and the next lookup, threads back, is asked afresh (a
    reviewer's, session 40: the name stayed waited for by nobody, every lookup a timeout)."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: ANSWER)
    real_start = threading.Thread.start

    def no_thread(self: threading.Thread) -> None:
        if self.name == "wechat-qr-name-lookup":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(socket.gaierror, match="no thread to look poisoned.test up"):
        name_lookup.addresses("poisoned.test", 443, timeout=1)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert name_lookup.addresses("poisoned.test", 443, timeout=1) == ANSWER


def test_a_name_idna_cannot_encode_is_a_name_not_found() -> None:
    """``getaddrinfo`` raises UnicodeError for a label over 63 characters: the thread
    swallowed it and every caller got no address (a reviewer's, session 40)."""
    with pytest.raises(socket.gaierror, match="UnicodeError"):
        name_lookup.addresses("a" * 64 + ".qlogo.cn", 443, timeout=5)


def test_an_endless_timeout_is_no_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: ANSWER)
    assert name_lookup.addresses("endless.test", 443, timeout=float("inf")) == ANSWER


def test_each_waiting_caller_gets_its_own_error_and_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One object raised by several threads carries each one's traceback into the others
    (and keeps their frames alive); one list answered to all is one caller's to change."""
    let_go = threading.Event()
    outcome = {"error": True}

    def resolver(host: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        assert let_go.wait(timeout=20)
        if outcome["error"]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(ANSWER)

    def look_up(caught: list[t.Any]) -> None:
        try:
            caught.append(name_lookup.addresses("shared.test", 443, timeout=10))
        except socket.gaierror as error:
            caught.append(error)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    for kind in ("error", "answer"):
        outcome["error"] = kind == "error"
        let_go.clear()
        caught: list[t.Any] = []
        threads = [threading.Thread(target=look_up, args=(caught,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)  # both wait for the one lookup
        let_go.set()
        for thread in threads:
            thread.join(timeout=10)
        assert len(caught) == 2 and caught[0] is not caught[1]
        assert str(caught[0]) == str(caught[1])


@pytest.mark.parametrize("address", ["127.1", "2130706433", "fe80::1%lo"])
def test_the_short_forms_of_an_address_are_no_lookup_either(
        monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    looked_up: list[str] = []

    def resolver(host: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        looked_up.append(threading.current_thread().name)
        return ANSWER

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    name_lookup.addresses(address, 443, timeout=1)
    assert looked_up == [threading.current_thread().name]  # in the caller's own thread
