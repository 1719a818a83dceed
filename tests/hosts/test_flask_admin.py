"""A site with a Flask-Admin back office (``apps/host_flask_admin``): its admins list, edit,
make and delete users and WeChat identities in ``ModelView``s. An identity names its user
twice, by ``user_id`` (Flask-Login's id, the field the admin's form shows) and by
``user_key`` (the foreign key that deletes it with its user, which the form leaves out):
whatever the admin writes, the two stay one user, so deleting a user takes exactly that
user's WeChat with it and the others' WeChat keep logging them in."""

from __future__ import annotations

import html
import re
import typing as t
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from support import log_in, logged_in_user_id

from .browse import Browser, wechat_login
from .shapes import SANDBOX


def build(tmp_path: Path) -> Flask:
    import host_flask_admin

    app = t.cast(Flask, host_flask_admin.create_app({
        **SANDBOX, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'admin.db'}"}))
    with app.app_context():
        host_flask_admin.db.session.add(host_flask_admin.User(username="admin", is_admin=True))
        host_flask_admin.db.session.commit()
    return app


def admin(app: Flask) -> t.Any:
    client = app.test_client()
    log_in(client, 1)
    return client


def edit_form(client: t.Any, path: str) -> dict[str, str]:
    """The fields of a Flask-Admin form as a browser posts them back."""
    page = client.get(path)
    assert page.status_code == 200, path
    fields: dict[str, str] = {}
    text = page.get_data(as_text=True)
    for attrs in re.findall(r"<input\b([^>]*)>", text):
        named = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        if "name" in named and named.get("type") not in ("submit", "checkbox"):
            fields[named["name"]] = html.unescape(named.get("value", ""))
    for name, body in re.findall(r'<textarea\b[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>',
                                 text, re.S):
        fields[name] = html.unescape(body.removeprefix("\r\n").removeprefix("\n"))
    return fields


def identities(app: Flask) -> list[tuple[str, str, t.Any]]:
    db = app.extensions["sqlalchemy"]
    table = db.metadata.tables["wechat_qr_identity"]
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            sa.select(table.c.openid, table.c.user_id, table.c.user_key).order_by(table.c.id))]


def test_an_identity_the_admin_moved_stays_with_its_new_user(tmp_path: Path) -> None:
    """Before: moving an identity to another user in the admin (its ``user_id``) kept the
    old user's ``user_key``: deleting the old user deleted the moved identity with them,
    and its WeChat made a new account instead of logging in its new user."""
    app = build(tmp_path)
    lisi = Browser(app)
    wechat_login(lisi, "lisi")
    zhangsan = Browser(app)
    wechat_login(zhangsan, "zhangsan")
    assert [user_id for _openid, user_id, _key in identities(app)] == ["2", "3"]
    client = admin(app)
    form = edit_form(client, "/admin/identity/edit/?id=1")
    form["user_id"] = "3"  # 李四's WeChat now logs in 张三's account (zhangsan's goes)
    assert client.post("/admin/identity/delete/", data={"id": "2"}).status_code == 302
    assert client.post("/admin/identity/edit/?id=1", data=form).status_code == 302
    assert [user_id for _openid, user_id, _key in identities(app)] == ["3"]
    assert client.post("/admin/user/delete/", data={"id": "2"}).status_code == 302

    again = Browser(app)
    assert '<p id="who">张三🐼</p>' in wechat_login(again, "lisi").get_data(as_text=True)
    assert logged_in_user_id(again.client) == "3"
    assert again.errors() == []


def test_an_identity_the_admin_made_goes_with_its_user(tmp_path: Path) -> None:
    """Before: an identity made in the admin had no ``user_key``: deleting its user behind
    the ORM left it, and the next user given the same id (SQLite reuses it) was logged in
    by that WeChat account."""
    app = build(tmp_path)
    client = admin(app)
    form = edit_form(client, "/admin/identity/new/")
    form.update(connection="wechat", openid="o-made-in-the-admin", user_id="1")
    assert client.post("/admin/identity/new/", data=form).status_code == 302
    assert identities(app) == [("o-made-in-the-admin", "1", 1)]
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        db.session.execute(sa.text('DELETE FROM "user" WHERE id = 1'))  # a database tool
        db.session.commit()
    assert identities(app) == []


def test_the_admin_pages_of_users_and_identities(tmp_path: Path) -> None:
    """Every admin page of both models answers, before and after a login."""
    app = build(tmp_path)
    client = admin(app)
    wechat_login(Browser(app), "lisi")
    pages = ["/admin/", "/admin/user/", "/admin/identity/", "/admin/user/new/",
             "/admin/identity/new/", "/admin/user/edit/?id=2", "/admin/identity/edit/?id=1"]
    assert {path: client.get(path).status_code for path in pages} == dict.fromkeys(pages, 200)
    assert app.test_client().get("/admin/identity/").status_code == 403  # not an admin
