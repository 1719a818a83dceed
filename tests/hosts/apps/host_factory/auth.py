"""The author's profile page, with WeChat linking (the extension is imported from the
package, where it was created at module level)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from . import wechat

auth = Blueprint("auth", __name__)


@auth.route("/profile")
@login_required
def profile() -> str:
    return render_template("profile.html", identities=wechat.identities_of(current_user))
