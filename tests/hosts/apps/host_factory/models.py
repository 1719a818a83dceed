"""The blog's tables; ``db`` and ``login_manager`` come from the package."""

from __future__ import annotations

from flask_login import UserMixin
from werkzeug.security import check_password_hash

from . import db, login_manager


class Author(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    username = db.Column(db.String(80), unique=True)
    nickname = db.Column(db.Unicode(255))
    password_hash = db.Column(db.String(255))
    posts = db.relationship("Post", back_populates="author")

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class Post(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.Unicode(200), nullable=False)
    author_id = db.Column(db.Integer, db.ForeignKey("author.id"), nullable=False)
    author = db.relationship("Author", back_populates="posts")


@login_manager.user_loader
def load_author(author_id: str) -> Author | None:
    return db.session.get(Author, int(author_id))
