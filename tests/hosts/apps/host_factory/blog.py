"""The blog's pages: the index and writing a post (which needs a logged-in author)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug import Response

from . import db
from .models import Post

blog = Blueprint("blog", __name__)


@blog.route("/")
def index() -> str:
    posts = db.session.execute(db.select(Post).order_by(Post.id.desc())).scalars().all()
    return render_template("blog.html", posts=posts)


@blog.route("/write", methods=["POST"])
@login_required
def write() -> Response:
    db.session.add(Post(title=request.form["title"], author=current_user))
    db.session.commit()
    return redirect(url_for("blog.index"))
