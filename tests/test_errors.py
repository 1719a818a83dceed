"""WeChat's ``errmsg`` goes into the site's logs: a line break in it cannot forge a line."""

from __future__ import annotations

import logging
import typing as t

from support import TOKEN_PATH, finish_login, start_login

from flask_wechat_qr.errors import error_for


def test_control_characters_in_errmsg_are_escaped() -> None:
    error = error_for(40125, "invalid appsecret\r\nERROR forged: all good, rid: 1\x1b[31m")
    assert "\n" not in str(error) and "\r" not in str(error) and "\x1b" not in str(error)
    assert "\\r\\nERROR forged" in str(error)  # still readable for the operator


def test_an_operator_error_logs_one_line(app: t.Any, wechat_api: t.Any, caplog: t.Any) -> None:
    client = app.test_client()
    wechat_api.error(TOKEN_PATH, 40125, "invalid appsecret\nCRITICAL someone logged in")
    with caplog.at_level(logging.ERROR, logger="flask_wechat_qr"):
        finish_login(client, start_login(client))
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert lines and all("\n" not in line for line in lines)
    assert any("40125" in line for line in lines)


def test_chinese_errmsg_stays_readable() -> None:
    assert "无效的code" in str(error_for(40029, "无效的code, rid: 1"))
