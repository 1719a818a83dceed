"""A forked child calls ``start_afresh`` of everything registered that still lives."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import typing as t

import pytest
from support import LiveServer, in_forked_child

from flask_wechat_qr.forked_child import start_afresh_in_forked_child
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
session.mount("http://", DeadlineAdapter(1.0))
parent = session.get(url + "/port", timeout=5).text
pid = ctypes.CDLL(None).fork()
if pid == 0:
    own = session.get(url + "/port", timeout=5).text
    started = time.monotonic()
    try:
        session.get(url + "/hang", timeout=30)
        hung = "answered"
    except requests.Timeout:
        hung = "cut"
    print(json.dumps({"parent": parent, "child": own, "hung": hung,
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
    assert child["hung"] == "cut" and child["seconds"] < 5, child  # its deadline works
    assert parent["parent again"] == child["parent"]  # the master's connection lives on
