"""A forked child calls ``start_afresh`` of everything registered that still lives."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import typing as t

import pytest
import requests
from support import LiveServer, in_forked_child

from flask_wechat_qr.forked_child import (
    made_here,
    start_afresh_if_made_elsewhere,
    start_afresh_in_forked_child,
)
from flask_wechat_qr.sandbox.server import KeepAliveHandler

#: Who started afresh, in this process.
started: list[str] = []


class Holder:
    def __init__(self, name: str) -> None:
        self.name = name

    def start_afresh(self) -> None:
        started.append(self.name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_afresh_what_is_registered_and_alive() -> None:
    kept, gone = Holder("kept"), Holder("gone")
    start_afresh_in_forked_child(kept)
    start_afresh_in_forked_child(gone)
    del gone
    gc.collect()  # held weakly: it went with its owner
    assert in_forked_child(lambda: started == ["kept"]) == 0
    assert started == [] and kept.name == "kept"  # the parent keeps its own


#: A process that called WeChat, then forked as uWSGI forks its workers (C's ``fork``: no
#: Python at-fork handler runs); the child calls again, then a call that hangs. It prints
#: which client ports served the calls and how the hung one ended.
FORKED_WITHOUT_HOOKS = """
import ctypes, json, os, sys, time
import requests
from flask_wechat_qr.deadline import DeadlineAdapter
url = sys.argv[1]
session = requests.Session()
session.mount("http://", DeadlineAdapter(10.0))
session.mount(url + "/hang", DeadlineAdapter(1.0))
proxied = requests.Session()  # WeChat's API behind a proxy: this server stands for both
proxied.mount("http://", DeadlineAdapter(10.0))
proxied.proxies = {"http": url}
parent = session.get(url + "/port", timeout=5).text
parent_proxied = proxied.get("http://api.weixin.test/port", timeout=5).text
pid = ctypes.CDLL(None).fork()
if pid == 0:
    own = session.get(url + "/port", timeout=5).text
    own_proxied = proxied.get("http://api.weixin.test/port", timeout=5).text
    started = time.monotonic()
    try:
        session.get(url + "/hang", timeout=30)
        hung = "answered"
    except requests.Timeout:
        hung = "cut"
    print(json.dumps({"parent": parent, "child": own, "parent proxied": parent_proxied,
                      "child proxied": own_proxied, "hung": hung,
                      "seconds": time.monotonic() - started}), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({"parent again": session.get(url + "/port", timeout=5).text}), flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="C's fork through ctypes")
def test_a_child_forked_without_pythons_hooks_starts_afresh_at_its_next_call() -> None:
    """A uWSGI worker (forked without Python's at-fork handlers, unless uWSGI's
    ``--py-call-osafterfork``) of a master that called WeChat: it shared the master's
    kept-alive connection (two processes reading each other's answers) and its watchdog
    thread, which does not exist there, so a hung call was never cut."""

    def app(environ: t.Any, start_response: t.Any) -> t.Any:
        if environ["PATH_INFO"] == "/hang":
            time.sleep(8)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(environ["REMOTE_PORT"]).encode()]

    with LiveServer(app, request_handler=KeepAliveHandler) as server:
        done = subprocess.run([sys.executable, "-c", FORKED_WITHOUT_HOOKS, server.url],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    child, parent = (json.loads(line) for line in done.stdout.splitlines())
    assert child["child"] != child["parent"]  # a connection of its own
    assert child["child proxied"] != child["parent proxied"]  # to the proxy too
    assert child["hung"] == "cut" and child["seconds"] < 5, child  # its deadline works
    assert parent["parent again"] == child["parent"]  # the master's connection lives on


def test_threads_that_find_at_once_something_made_elsewhere_start_it_afresh_once() -> None:
    """A uWSGI worker with ``--threads``: its first requests arrive together after the fork.
    One thread starts the thing afresh; the others wait and use what it made."""

    class Thing:
        made_in = (0, threading.Lock)  # made in another process
        starts = 0

        def start_afresh(self) -> None:
            time.sleep(0.05)  # another thread would come in here
            Thing.starts += 1
            self.made_in = made_here()

    thing = Thing()
    together = threading.Barrier(8)
    seen: list[tuple[int, object]] = []

    def first_use() -> None:
        together.wait(5)
        start_afresh_if_made_elsewhere(thing)
        seen.append(thing.made_in)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert Thing.starts == 1 and seen == [made_here()] * 8


def test_an_adapter_found_at_once_by_several_threads_after_a_fork_gives_each_its_pools(
) -> None:
    """The first calls of a uWSGI worker's threads: each gets a pool of the adapter's own
    class (a deadline on every call), one pool for them all."""
    from flask_wechat_qr.deadline import DeadlineAdapter

    adapter = DeadlineAdapter(5)
    adapter.made_in = (0, threading.Lock)  # as a worker forked without the hook finds it
    request = requests.Request("GET", "http://127.0.0.1:9/sns/auth").prepare()
    together = threading.Barrier(8)
    pools: list[t.Any] = []

    def first_call() -> None:
        together.wait(5)
        pools.append(adapter.get_connection_with_tls_context(request, verify=True))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(pools) == 8 and len({id(pool) for pool in pools}) == 1
    assert type(pools[0]).__name__ == "_HTTPPool"


#: A uWSGI master: uWSGI's Python module, with a post-fork hook the site set; the app's
#: start-up registers something to start afresh; then C's fork (no Python at-fork handler
#: runs), and the worker calls the hook, as uWSGI does.
UWSGI_FORK = """
import ctypes, json, os, sys, types
uwsgi = sys.modules["uwsgi"] = types.ModuleType("uwsgi")
calls = []
if sys.argv[1] == "site's hook":
    uwsgi.post_fork_hook = lambda: calls.append("site's")
from flask_wechat_qr.forked_child import start_afresh_in_forked_child
class Thing:
    def start_afresh(self):
        calls.append("extension's")
thing = Thing()
start_afresh_in_forked_child(thing)
pid = ctypes.CDLL(None).fork()
if pid == 0:
    before = list(calls)
    uwsgi.post_fork_hook()
    print(json.dumps({"before": before, "after": calls}), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="C's fork through ctypes")
@pytest.mark.parametrize("site", ["no hook", "site's hook"])
def test_a_uwsgi_worker_starts_afresh_from_uwsgis_post_fork_hook(site: str) -> None:
    """Before its first request, after the site's own hook, if it has one."""
    done = subprocess.run([sys.executable, "-c", UWSGI_FORK, site], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    seen: dict[str, t.Any] = json.loads(done.stdout)
    site_hook = ["site's"] if site == "site's hook" else []
    assert seen == {"before": [], "after": [*site_hook, "extension's"]}
