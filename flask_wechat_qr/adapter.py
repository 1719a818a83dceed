"""The host application's side of a WeChat login: its users.

Everything that touches the host's user model goes through an :class:`AccountAdapter`.
The default one works with a Flask-SQLAlchemy ``user_model`` and Flask-Login; a site with
other needs subclasses it and overrides only the methods it cares about.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import re
import secrets
import typing as t
import unicodedata
import weakref

import flask_login
import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from .context import this_app, this_request, this_session
from .errors import AccountDisabled
from .storable import storable

log = logging.getLogger("flask_wechat_qr")
_ABSENT = object()
#: The largest value of the integer column types whose range is narrower than 64 bits
#: outside SQLite (PostgreSQL's and MySQL's ``integer`` and ``smallint``).
_LARGEST_INTEGER: dict[type, int] = {sa.Integer: 2**31 - 1, sa.SmallInteger: 2**15 - 1}
#: Where the default :meth:`AccountAdapter.has_password` looks for a password, in order.
PASSWORD_ATTRIBUTES = ("password_hash", "password")
#: Put into the session just before it is given a new id, which a store skips for an empty
#: session; cleared with the rest right after.
_RENEWING = "_wechat_qr_renewing"

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.sessions import SessionMixin
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.engine import Connection
    from typing_extensions import TypeVar

    from .client import WeChatProfile
    from .settings import ConnectionSettings

    #: The host's user class, for an adapter that names it (``AccountAdapter[User]``) and
    #: wants its hooks checked against it; a plain ``AccountAdapter`` takes any user.
    UserT = TypeVar("UserT", default=t.Any)
else:
    UserT = t.TypeVar("UserT")  # Python 3.11's TypeVar has no default; checkers read the above


#: Checked when a username does not exist, so that case takes as long as a wrong password.
@functools.cache
def _dummy_hash(method: str | None = None) -> str:
    """Made on first use (hashing costs ~100 ms, which startup should not pay), with the
    method of the site's own hashes where one was seen: a site whose hashes are pbkdf2
    (made by an older Werkzeug) checks them slower than Werkzeug's default scrypt, and a
    dummy of another method would tell which usernames have a password."""
    if method is None:
        return generate_password_hash("flask-wechat-qr: no such user")
    return generate_password_hash("flask-wechat-qr: no such user", method=method)


def _hash_method(stored: object) -> str | None:
    """The method of a Werkzeug hash (``pbkdf2:sha256:600000``), or ``None``."""
    if not isinstance(stored, str) or "$" not in stored:
        return None
    method = stored.split("$", 1)[0]
    return method if method.split(":", 1)[0] in ("scrypt", "pbkdf2") else None


class AccountAdapter(t.Generic[UserT]):
    """Hooks into the host's users. Override any method; call ``super()`` where useful."""

    #: The user model's column a person types on the bind page, with their password, to
    #: prove an existing account (ask binding): the default :meth:`authenticate` looks users
    #: up by it, and the page labels the field after it (``"username"``, ``"email"`` and
    #: ``"phone"`` have their own label and phone keyboard; any other reads "Account").
    login_field: str = "username"

    #: the method of the last password hash checked (the dummy hash follows it)
    _seen_hash_method: str | None = None

    def __init__(self, db: SQLAlchemy | None = None, user_model: type[UserT] | None = None
                 ) -> None:
        self.db = db
        self.user_model = user_model

    # --- finding users -------------------------------------------------------------

    def get_user_id(self, user: UserT) -> str:
        """The user's id as stored on identity rows, which :meth:`load_user` reads back:
        Flask-Login's ``get_id()``, unless that id is not the user's primary key and
        :meth:`load_user` does not read it back: Flask-Login's id may be an alternative id,
        a session token that changes with the password, and stored, a :meth:`load_user` by
        primary key (the default, or an override calling it) would never find the user
        again. Then the primary key. (An id that reads back as the key, ``uuid.hex`` say,
        stays as it is: identity rows and ID tokens' ``sub`` hold it already.)"""
        get_id = getattr(user, "get_id", None)
        if not callable(get_id):
            return str(self._primary_key_value(user))
        user_id = str(get_id())
        model = self.user_model
        if model is not None and isinstance(user, model):
            key = self._primary_key_value(user)
            if (user_id != str(key) and self._as_primary_key(model, user_id) != key
                    and not self._reads_alternative_ids(user_id, key)):
                return str(key)
        return user_id

    #: Whether an overridden :meth:`load_user` finds users by Flask-Login's alternative id
    #: (``None``: not known yet). A property of the site's code: kept once one id finds a
    #: user.
    _alternative_ids_read: bool | None = None

    def _reads_alternative_ids(self, user_id: str, key: object) -> bool:
        """Whether :meth:`load_user` finds the user whose primary key is ``key`` by
        ``user_id``, its alternative id. The default one never does. An override is asked
        with the first such user: by the key first, which any column takes (the
        docs' soft delete, which calls the default, finds users by key only, and a stored
        token would give the person a new account at each login); only where that fails,
        by the alternative id. A lookup that fails counts as not found. Where neither
        finds the user (one just deleted), its alternative id is kept, as before, and the
        question is asked again with the next user."""
        if self._loads_by_primary_key():
            return False
        known = self._alternative_ids_read
        if known is None:
            if self._loads(str(key), key):
                known = False
            elif self._loads(user_id, key):
                known = True
            else:
                return True
            self._alternative_ids_read = known
        return known

    def _loads(self, user_id: str, key: object) -> bool:
        """Whether :meth:`load_user` finds the user whose primary key is ``key`` by
        ``user_id``; a lookup that raises (a token compared with an integer column, which
        PostgreSQL refuses) finds nobody, inside a savepoint so that the login's
        transaction goes on (SQLite refuses no such lookup, and pysqlite's savepoints are
        not to be relied on)."""
        db = self._require_db()
        model = self._require_user_model()
        session = db.session
        try:
            if session.get_bind(mapper=sa.inspect(model)).dialect.name == "sqlite":
                found = self.load_user(user_id)
            else:
                with session.begin_nested():
                    found = self.load_user(user_id)
        except Exception:  # the site's own code, asked a question it may not expect
            return False
        return (found is not None and isinstance(found, model)
                and self._primary_key_value(found) == key)

    def load_user(self, user_id: str) -> UserT | None:
        """The user with that id, or ``None`` if it no longer exists."""
        model = self._require_user_model()
        return self._require_db().session.get(model, self._as_primary_key(model, user_id))

    @staticmethod
    def _as_primary_key(model: t.Any, user_id: str) -> object:
        """``user_id`` as a value of ``model``'s primary key (its column's Python type)."""
        try:
            return model.__mapper__.primary_key[0].type.python_type(user_id)
        except (TypeError, ValueError, NotImplementedError):
            return user_id

    def match_user(
        self, connection: ConnectionSettings, field: str, profile: WeChatProfile
    ) -> UserT | None:
        """Field matching on a field other than ``unionid``: the one existing user whose
        *verified* ``field`` belongs to this WeChat account, or ``None``. Override it to
        use such fields in ``WECHAT_QR_MATCH_FIELDS``."""
        return None

    # --- creating users ------------------------------------------------------------

    def create_user(self, connection: ConnectionSettings, profile: WeChatProfile) -> UserT:
        """A new user for a first WeChat login; added to the session, not committed.

        The extension then calls :meth:`populate_user` unless the profile sync is "never".

        The extension commits it together with the identity row, so a failure in
        between never leaves a user without its identity.
        """
        model = self._require_user_model()
        username_column = model.__table__.c.get("username")
        if username_column is None or (username_column.nullable
                                       and "username" not in _required_arguments(model)):
            user = model()
        elif "username" in _keyword_parameters(model):  # a dataclass's, an own __init__'s
            user = model(username=_made_up_username(_sized(username_column)))
        else:
            user = model()
            user.username = _made_up_username(_sized(username_column))
        self._require_db().session.add(user)
        return t.cast(UserT, user)

    def populate_user(
        self, user: UserT, connection: ConnectionSettings, profile: WeChatProfile
    ) -> None:
        """Copy the WeChat profile onto the user (attributes the model has: ``nickname``,
        ``avatar_url``). Never copies anything that identifies or authenticates a user, nor
        WeChat's placeholders (empty values, "微信用户", the grey default avatar: see
        :mod:`flask_wechat_qr.placeholders`) over what the user has. A nickname longer than
        its column (``db.String(n)``) is cut to fit; an avatar URL longer than its column is
        not copied (a cut URL shows no picture). Where avatars are stored
        (``WECHAT_QR_STORE_AVATARS``), ``profile.avatar_url`` is the stored copy."""
        row: t.Any = user  # the user model's columns are known only at run time
        model = type(user)
        nickname = profile.real_nickname
        if hasattr(model, "nickname") and nickname:
            column = model_column(model, "nickname")
            longest = _sized(column) if column is not None else None
            # characters, as PostgreSQL, MySQL (utf8mb4) and SQLite count a column's length
            nickname = nickname if longest is None or len(nickname) <= longest \
                else nickname[:longest].rstrip(_DANGLING)
            if column is not None and self.db is not None:
                # what a MySQL or MariaDB column's character set holds of it
                nickname = storable(self.db, column, nickname)
            if nickname:
                row.nickname = nickname
        avatar_url = profile.real_avatar_url
        if hasattr(model, "avatar_url") and avatar_url:
            longest = _column_length(model, "avatar_url")
            if longest is None or len(avatar_url) <= longest:
                row.avatar_url = avatar_url
            else:  # a cut URL shows no picture; the database would refuse the whole URL
                _warn_once(model, f"{model.__name__}.avatar_url holds at most {longest} "
                           f"characters, a WeChat avatar URL had {len(avatar_url)}: not "
                           "copied (said once per process). Make the column longer (db.Text).")

    def can_signup(self, connection: ConnectionSettings) -> bool:
        """Whether a WeChat account nobody owns may get a new user (not in login-only mode)."""
        return not connection.login_only

    # --- proving an existing account (ask binding) --------------------------------------

    def authenticate(self, username: str, password: str) -> UserT | None:
        """The user these credentials prove, or ``None``; used to bind a WeChat account.
        ``username`` is what the person typed in the bind page's first field.

        Default: the user whose :attr:`login_field` is that value (an e-mail address as
        typed or in lower case; a phone number without spaces, dashes or ``+86``), then its
        ``check_password(password)`` method, or a Werkzeug hash in ``password_hash``. A
        user without a password (:meth:`has_password`; e.g. one a WeChat login created)
        proves nothing, nor does a value two users share, and a ``check_password`` that
        raises counts as a wrong password (logged), never a 500. Works as long whether or
        not the username exists or has a password (a dummy hash of the site's method), so
        it does not reveal which accounts exist; and the bind page answers no sooner than
        its slowest recent check (:mod:`~flask_wechat_qr.check_times`), for the times of
        a site's own ``check_password`` and of an override of this method.
        """
        user = self._user_for_login(username)
        if user is None or not self.has_password(user):
            check_password_hash(_dummy_hash(self._seen_hash_method), password or "")
            return None
        self._seen_hash_method = _hash_method(_stored_password(user)) or (
            self._seen_hash_method)
        return user if _password_matches(user, password or "", self._seen_hash_method) else None

    def login_key(self, username: str) -> str:
        """What the bind page counts wrong passwords under: one spelling for all that the
        default lookup takes as one account (case, accents, full-width forms and spaces
        around it aside, as MariaDB's and MySQL's default collations compare; a phone
        number's digits, without ``+86`` and leading zeros), whether or not such an account
        exists (a key that depended on it would tell which accounts exist). Override it
        with :meth:`authenticate` where your lookup takes other spellings as one."""
        typed = username.strip()
        if self.login_field == "phone":
            digits = re.sub(r"[\s()-]", "", typed).removeprefix("+86").removeprefix("0086")
            return str(int(digits)) if digits.isascii() and digits.isdigit() else digits
        return _folded(typed)

    def _user_for_login(self, username: str) -> UserT | None:
        """The one user whose :attr:`login_field` is ``username`` as :meth:`authenticate`
        looks it up, else ``None``."""
        model = self._require_user_model()
        field = login_field_expression(model, self.login_field)
        typed = [] if field is None else self._values_to_look_up(username, field, model)
        if field is None or not typed:
            return None
        found = self._require_db().session.execute(
            sa.select(model).where(field.in_(typed)).limit(3)
        ).scalars().all()
        # As typed wins; two accounts for one value (not unique) prove neither, rather
        # than binding the WeChat account to whichever row came first.
        exact = [row for row in found if getattr(row, self.login_field, None) == typed[0]]
        candidates = exact or found
        return t.cast(UserT, candidates[0]) if len(candidates) == 1 else None

    def _values_to_look_up(self, typed: str, field: t.Any, model: t.Any) -> list[t.Any]:
        """What ``typed`` may be stored as in ``field``, as typed first; none when it can be
        no value of the field's type (the database would refuse the comparison)."""
        # No form field typed in a browser holds NUL, and PostgreSQL refuses it in a query.
        if not typed or "\x00" in typed:
            return []
        values: list[t.Any] = [typed]
        if self.login_field == "email":
            values = [typed.strip(), typed.strip().lower()]
        elif self.login_field == "phone":
            digits = re.sub(r"[\s()-]", "", typed)
            values = [typed.strip(), digits, digits.removeprefix("+86").removeprefix("0086")]
        try:
            python_type = field.type.python_type
        except (AttributeError, NotImplementedError):
            python_type = str
        if python_type is not str:
            converted = []
            for value in values:
                try:
                    converted.append(python_type(value))
                except (TypeError, ValueError):
                    continue
            values = converted
        if python_type is int:  # what the column cannot hold, the database refuses to compare
            largest = 2**63 - 1
            if self._require_db().session.get_bind(mapper=model).dialect.name != "sqlite":
                largest = _LARGEST_INTEGER.get(type(field.type), largest)
            values = [value for value in values if -largest - 1 <= value <= largest]
        return [value for value in dict.fromkeys(values) if value not in ("", None)]

    def has_password(self, user: UserT) -> bool:
        """Whether the user can log in without WeChat: guards unlinking the last way in,
        and only such a user can be proved by :meth:`authenticate`. Default: a non-empty
        ``password_hash`` (or ``password``) attribute; a model with neither but a
        ``check_password`` method is asked that (its answer to an empty password aside)."""
        stored = _stored_password(user)
        if stored is not _ABSENT:
            return bool(stored)
        return callable(getattr(user, "check_password", None))

    def _loads_by_primary_key(self) -> bool:
        """Whether :meth:`load_user` is this default one, which looks users up by primary
        key (so :meth:`get_user_id` must store one it reads back) and finds a user a query
        already loaded into the session (the login's identity query joins it in) without a
        query of its own; an overridden one may load users from anywhere, by any id."""
        return self._is_default("load_user")

    def _signup_by_setting(self) -> bool:
        """Whether :meth:`can_signup` is this default one, which reads the connection's
        login-only setting and spends nothing; a site's own may (an invitation, a quota)."""
        return self._is_default("can_signup")

    def _is_default(self, hook: str) -> bool:
        """Whether the hook named ``hook`` is the one defined here, not the site's own (an
        override in a subclass, or one replaced on AccountAdapter itself, as a test's
        monkeypatch of the class does)."""
        return getattr(type(self), hook) is _DEFAULT_HOOKS[hook]

    def current_user(self) -> UserT | None:
        """The logged-in user (Flask-Login), or ``None``: the user object itself, not
        Flask-Login's ``current_user`` proxy, which signals would hand their receivers (one
        that keeps the user past the request, or compares it with ``is``, gets the object
        its documentation promises)."""
        proxy: t.Any = flask_login.current_user
        user = proxy._get_current_object()
        return t.cast("UserT", user) if user and user.is_authenticated else None

    # --- logging in ----------------------------------------------------------------

    def renew_session(self) -> None:
        """Start a fresh session before logging in, so nothing from before survives.

        With a server-side session store that can issue a new session id (Flask-Session's
        ``regenerate``), that is done too, so a planted session id is worthless.
        """
        app = this_app()
        regenerate = getattr(app.session_interface, "regenerate", None)
        try:
            if callable(regenerate):
                # Before the clear: Flask-Session's regenerate leaves an empty session (and
                # its planted id) as it is.
                session = this_session()
                session[_RENEWING] = True
                regenerate(session)
        finally:
            session = this_session()  # the request's, whatever a regenerate put there
            session.clear()
        _forget_remember_cookie(app, session)

    def login_user(self, user: UserT) -> None:
        """Log the user into the Flask session (Flask-Login).

        :class:`AccountDisabled` if Flask-Login refuses the user (``is_active`` is false).
        """
        if not flask_login.login_user(user):
            raise AccountDisabled()

    # --- language --------------------------------------------------------------------

    def select_locale(self) -> str | None:
        """The language of the extension's pages for this request, e.g. from the user's
        saved preference: ``"zh_CN"`` or ``"en"`` (any Chinese tag counts as ``zh_CN``).
        ``None`` (the default) lets Flask-Babel, if the site uses it, or else the
        browser's ``Accept-Language`` decide. Called at most once per request."""
        return None

    def on_user_deleted(self, forget: t.Callable[[str, Connection | None], None], key: int
                        ) -> None:
        """Call ``forget(user_id, connection)`` whenever the ORM deletes a user of
        ``user_model`` (nothing without one): once per model and ``key`` (the identity
        table), however many apps share them. ``connection``: the deleting transaction's,
        or ``None`` for the request's session."""
        model = self.user_model
        if model is None:
            return
        watched = _watched_models.setdefault(model, set())
        if key in watched:
            return
        watched.add(key)

        def after_delete(_mapper: object, connection: Connection, target: UserT) -> None:
            forget(self.get_user_id(target), connection)

        sa.event.listen(model, "after_delete", after_delete)

    # --- the business callback URL ---------------------------------------------------

    def id_token_claims(self, user: UserT, connection: ConnectionSettings) -> dict[str, t.Any]:
        """More claims for the ID token posted to ``connection``'s business callback URL, e.g.
        ``{"email": user.email, "name": user.display_name}``; they may replace ``name`` and
        ``picture`` (WeChat's nickname and avatar) but never ``iss``, ``sub``, ``aud``,
        the times, ``jti``, ``nonce`` or ``wechat``."""
        return {}

    # --- internals -----------------------------------------------------------------

    def _require_user_model(self) -> t.Any:
        if self.user_model is None:
            raise RuntimeError(
                "The default AccountAdapter needs the host's user model: pass "
                "WeChatQR(app, db=db, user_model=User), or an adapter that overrides "
                "load_user and create_user."
            )
        return self.user_model

    def _require_db(self) -> SQLAlchemy:
        if self.db is None:
            raise RuntimeError("The default AccountAdapter needs the Flask-SQLAlchemy db.")
        return self.db

    def _primary_key_value(self, user: UserT) -> object:
        """The user's primary key, by its attribute (which may be named unlike its column);
        a tuple of its values where it is composite."""
        mapper = sa.inspect(self._require_user_model())
        key = mapper.primary_key
        if len(key) == 1:  # every login asks: no tuple made for the usual key
            return getattr(user, mapper.get_property_by_column(key[0]).key)
        return tuple(getattr(user, mapper.get_property_by_column(column).key)
                     for column in key)  # a composite key: all of it


#: The hooks as defined above, by name (:meth:`AccountAdapter._is_default`): one replaced on
#: AccountAdapter itself (a test's monkeypatch of the class) is the site's own, as an
#: override in a subclass is.
_DEFAULT_HOOKS = {name: AccountAdapter.__dict__[name] for name in (
    "load_user", "match_user", "create_user", "populate_user", "can_signup")}


def own_user(adapter: AccountAdapter[UserT], user: UserT | None, hook: str) -> UserT | None:
    """``user``, as the site's hook ``hook`` of ``adapter`` gave it, once it is known to be
    of the user model (or ``None``) where the default :meth:`~AccountAdapter.load_user`
    reads ids back as that model's primary keys: an identity stores only the user's id. A
    ``Staff`` with id 1 that ``authenticate`` proved would give its WeChat the login of
    ``User`` 1, someone else. ``TypeError`` (as Flask's for a view that returns what is no
    response), before anything is linked. No check where the adapter was given no user
    model, or reads ids back its own way (``"staff:1"``, an overridden ``load_user``)."""
    model = adapter.user_model
    if (user is None or model is None or isinstance(user, model)
            or not adapter._loads_by_primary_key() or _same_rows(type(user), model)):
        return user
    raise TypeError(
        f"{type(adapter).__name__}.{hook} returned a {type(user).__name__}, not a "
        f"{model.__name__} (the user model given to WeChatQR): a WeChat account linked "
        f"to it would store its id and log in to the {model.__name__} with that id, "
        f"someone else. Return a {model.__name__} (or None), or give WeChatQR the model "
        "your hooks return as user_model.")


def _same_rows(kind: type[object], model: type[object]) -> bool:
    """Whether ``kind`` gives rows the user model reads back by the same key: a base class
    of the model (:func:`found_user` then tells its rows apart), or another mapping of
    the model's table with the same primary key. Not a sibling in the model's inheritance
    (another subclass of the same base: other rows)."""
    mapper = sa.inspect(kind, raiseerr=False)
    if mapper is None:
        return False
    if issubclass(model, kind):
        return True
    model_mapper = sa.inspect(model)
    return (mapper.base_mapper is not model_mapper.base_mapper
            and list(mapper.primary_key) == list(model_mapper.primary_key))


def found_user(adapter: AccountAdapter[UserT], user: UserT | None, hook: str
               ) -> UserT | None:
    """``user``, as the site's ``match_user`` or ``authenticate`` (``hook``) found it, once
    it is of the user model (:func:`own_user`) and the site's
    :meth:`~AccountAdapter.load_user` reads it back by its id; ``None`` where it does not:
    an account the site's own loader calls gone (soft-deleted, docs: hooks) that a lookup
    still finds, or a row of the table that is not of the user model (a base class's, the
    user model being a subclass). Linked, its WeChat would log in to a deleted account
    (where Flask-Login's loader does not look at the mark), or to nobody, and be matched
    again at every login. The default loader finds a user the lookup loaded in the
    session without a query."""
    user = own_user(adapter, user, hook)
    if user is None:
        return user
    state = sa.inspect(user, raiseerr=False)
    if state is not None and (state.transient or state.pending):
        return user  # made by the hook just now (a directory's account): nothing to read
    return user if adapter.load_user(adapter.get_user_id(user)) is not None else None


def _forget_remember_cookie(app: Flask, session: SessionMixin) -> None:
    """Have Flask-Login delete the browser's remember-me cookie with this response, as its
    ``logout_user`` does: one there is the previous login's (someone else's, on a shared
    computer, or one planted), and would log that account in again once the new session
    ends. A login that remembers its user (``login_user(remember=True)``) sets a new one.

    Only where the app has a Flask-Login ``LoginManager`` and the browser may hold one: it
    sent one with this request, or one could be there unsent (a ``REMEMBER_COOKIE_PATH``
    other than ``/``, which may not cover this URL; ``REMEMBER_COOKIE_SAMESITE="Strict"``,
    withheld from WeChat's redirect, a navigation from another site). Most logins have none,
    and their answer then carries no deletion (``logout_user`` looks at the request only).
    ``session``: the request's."""
    if getattr(app, "login_manager", None) is None:
        return
    config = app.config
    sent = config.get("REMEMBER_COOKIE_NAME", flask_login.COOKIE_NAME) in this_request().cookies
    if (sent or (config.get("REMEMBER_COOKIE_PATH") or "/") != "/"
            or str(config.get("REMEMBER_COOKIE_SAMESITE") or "").lower() == "strict"):
        session["_remember"] = "clear"


def login_field_expression(model: t.Any, name: str) -> t.Any | None:
    """The SQL expression of the user model's ``name`` attribute (a column, a synonym or a
    hybrid property, on the model or a table it inherits), or ``None`` when no query can
    use it (missing, or a plain Python property)."""
    if name not in sa.inspect(model).all_orm_descriptors:
        return None
    expression = getattr(model, name, None)
    return expression if hasattr(expression, "__clause_element__") else None


def _column_length(model: type[object], name: str) -> int | None:
    """The most characters the model's ``name`` attribute holds, when it is a column of a
    sized string type (``db.String(80)``); ``None`` when unsized or not a plain column."""
    column = model_column(model, name)
    return _sized(column) if column is not None else None


def model_column(model: type[object] | None, name: str) -> sa.Column[t.Any] | None:
    """The table column of the user model's ``name`` attribute (``nickname``: where
    :meth:`AccountAdapter.populate_user` copies WeChat's), ``None`` when it is none."""
    mapper = sa.inspect(model, raiseerr=False) if model is not None else None
    attribute = mapper.attrs.get(name) if mapper is not None else None
    columns = getattr(attribute, "columns", None)
    return columns[0] if columns and isinstance(columns[0], sa.Column) else None


def _sized(column: t.Any) -> int | None:
    """A column's length when it is a sized string type, else ``None``."""
    length = getattr(column.type, "length", None)
    return length if isinstance(length, int) and length > 0 else None


#: What a made-up username is written with where ``wechat-`` and ten hex digits do not fit.
_USERNAME_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def _made_up_username(longest: int | None) -> str:
    """A random username for someone who has none: ``wechat-`` and ten hex digits, or, for a
    shorter column, letters and digits to its whole length (random in every character: a
    cut ``wechat-…`` or ``wx…`` would be the same name for everyone)."""
    username = f"wechat-{secrets.token_hex(5)}"
    if longest is None or len(username) <= longest:
        return username
    return "".join(secrets.choice(_USERNAME_LETTERS) for _ in range(longest))


#: What a cut nickname must not end with: half of a character sequence (a zero-width
#: joiner of an emoji sequence, a variation selector).
_DANGLING = "\u200d\ufe0e\ufe0f"


#: The user models whose too-short ``avatar_url`` column this process has warned of.
_WARNED: weakref.WeakSet[type[object]] = weakref.WeakSet()


def _warn_once(model: type[object], message: str) -> None:
    """A warning about a user model's column, once per model and process: with a profile
    synced at every login it would otherwise come with every login."""
    if model not in _WARNED:
        _WARNED.add(model)
        log.warning("%s", message)


def why_accounts_cannot_be_proved(adapter: AccountAdapter[t.Any]) -> str | None:
    """Why the default :meth:`AccountAdapter.authenticate` could prove no account of the
    user model, or ``None`` (an overridden one is the host's to judge)."""
    if type(adapter).authenticate is not AccountAdapter.authenticate:
        return None
    model = adapter.user_model
    if model is None:
        return "the default AccountAdapter.authenticate needs the user model (user_model=)"
    if login_field_expression(model, adapter.login_field) is None:
        return (f"the default AccountAdapter.authenticate looks users up by their "
                f"{adapter.login_field!r} attribute (AccountAdapter.login_field), which "
                f"{model.__name__} has not as a column, a synonym or a hybrid property with "
                "a SQL expression (a plain Python property cannot be queried)")
    if not (any(hasattr(model, name) for name in PASSWORD_ATTRIBUTES)
            or callable(getattr(model, "check_password", None))):
        return (f"{model.__name__} has no password_hash or password column and no "
                "check_password method for the default AccountAdapter.authenticate")
    return None


def columns_create_user_cannot_fill(model: type[object]) -> list[str]:
    """The required columns of ``model`` the default :meth:`AccountAdapter.create_user`
    leaves empty (NOT NULL, no default, not a generated key), as ``table.column``: the first
    WeChat login would fail on them in the database."""
    missing = []
    mapper = sa.inspect(model)
    for table in mapper.tables:
        for column in table.columns:
            if column.nullable or column.default is not None or column.server_default \
                    is not None or column.computed is not None or column.identity is not None:
                continue
            if _dataclass_fills(model, mapper, column):
                continue  # its __init__ does (a dataclass field's default_factory)
            if column.primary_key and (column.foreign_keys or column is table.autoincrement_column):
                continue  # generated by the database, or the parent row's (inheritance)
            if column.name == "username" and table is getattr(model, "__table__", None):
                continue  # the default create_user makes one
            if column is mapper.polymorphic_on and mapper.polymorphic_identity is not None:
                continue  # the discriminator: SQLAlchemy sets it to the model's identity
            missing.append(f"{table.fullname}.{column.name}")
    return missing


def composite_key_columns(model: type[object]) -> list[str]:
    """The columns of the user model's primary key where it has several, which the default
    :meth:`AccountAdapter.load_user` cannot find a user by (it takes one value); none for a
    key of one column."""
    mapper = sa.inspect(model, raiseerr=False)
    key = [column.name for column in mapper.primary_key] if mapper is not None else []
    return key if len(key) > 1 else []


def arguments_create_user_cannot_give(model: type[object]) -> list[str]:
    """The arguments the user model's ``__init__`` requires (no default) that the default
    :meth:`AccountAdapter.create_user` does not give: it calls ``model()`` with at most a
    made-up ``username``. A ``MappedAsDataclass`` model's fields without a default, or an
    ``__init__`` of the model's own: the first WeChat login would fail with a
    ``TypeError``."""
    table = getattr(model, "__table__", None)
    gives = {"username"} if isinstance(table, sa.Table) and "username" in table.c else set()
    return [name for name in _required_arguments(model)
            if name not in gives & _keyword_parameters(model)]


def _parameters(model: type[object]) -> list[inspect.Parameter]:
    """The parameters of ``model(...)`` (its ``__init__``'s, without ``self``); none where
    Python cannot tell them. Read once per model: a first login with a ``username`` column
    asks, and ``inspect.signature`` is slow."""
    parameters = _parameters_of.get(model)
    if parameters is None:
        try:
            parameters = list(inspect.signature(model).parameters.values())
        except (TypeError, ValueError):
            parameters = []
        _parameters_of[model] = parameters
    return parameters


#: :func:`_parameters`' answers, by model (held weakly: a test's models go with it).
_parameters_of: weakref.WeakKeyDictionary[type[object], list[inspect.Parameter]] = (
    weakref.WeakKeyDictionary())


def _required_arguments(model: type[object]) -> list[str]:
    """The names of the arguments ``model(...)`` cannot be called without."""
    return [parameter.name for parameter in _parameters(model)
            if parameter.default is inspect.Parameter.empty and parameter.kind not in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _keyword_parameters(model: type[object]) -> set[str]:
    """The names of the parameters of ``model(...)`` that can be given by keyword."""
    return {parameter.name for parameter in _parameters(model) if parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _dataclass_fills(model: type[object], mapper: t.Any, column: sa.Column[t.Any]) -> bool:
    """Whether ``column`` is the attribute of a dataclass field of ``model`` whose
    ``__init__`` gives it a value of its own (``default_factory=``, ``default=``)."""
    if not dataclasses.is_dataclass(model):
        return False
    try:
        key = mapper.get_property_by_column(column).key
    except sa.orm.exc.UnmappedColumnError:  # a column no attribute maps
        return False
    for field in dataclasses.fields(model):
        if field.name == key:
            return (field.default is not dataclasses.MISSING
                    or field.default_factory is not dataclasses.MISSING)
    return False


def _stored_password(user: object) -> object:
    """The stored password the defaults read: the ``password_hash`` attribute, else
    ``password`` (a write-only property reads as absent), else ``_ABSENT``."""
    for name in PASSWORD_ATTRIBUTES:
        value = getattr(user, name, _ABSENT)
        if value is not _ABSENT:
            return value
    return _ABSENT


def _password_matches(user: object, password: str, dummy_method: str | None = None) -> bool:
    """The user's own ``check_password``, else the Werkzeug hash in ``password_hash`` (or
    ``password``). A host method that raises (e.g. on a hash it cannot read) is a wrong
    password, said in the log; so is a hash Werkzeug cannot check (another library's:
    Flask-Security's argon2 or bcrypt, passlib's), with what to override to check it,
    after the work of a check (``dummy_method``'s, as for an unknown username): answered
    at once, it would tell which accounts exist."""
    try:
        check = getattr(user, "check_password", None)
        if callable(check):
            return bool(check(password))
    except Exception as exc:  # the host's code: any failure means "not proved"
        log.warning("check_password of %s raised %s; counted as a wrong password",
                    type(user).__name__, type(exc).__name__)
        return False
    stored = _stored_password(user)
    if _hash_method(stored) is not None:
        return check_password_hash(t.cast(str, stored), password)
    check_password_hash(_dummy_hash(dummy_method), password)
    model = type(user)
    if stored is not _ABSENT and stored and model not in _UNREADABLE_HASHES:
        _UNREADABLE_HASHES.add(model)
        log.error(
            "%s's stored password is not a Werkzeug hash (scrypt or pbkdf2), so the "
            "default AccountAdapter.authenticate cannot check it: nobody can prove an "
            "account on the bind page (each attempt is a wrong password). Override "
            "authenticate with your site's own password check (docs: hooks, 'Proving "
            "an existing account'; Flask-Security: 'A site on Flask-Security-Too'). "
            "Said once per process.", model.__name__)
    return False


#: The user models whose password hashes the default check could not read, said once each.
_UNREADABLE_HASHES: weakref.WeakSet[type[object]] = weakref.WeakSet()


_watched_models: weakref.WeakKeyDictionary[type[object], set[int]] = weakref.WeakKeyDictionary()


#: Letters that case- and accent-insensitive collations take as other letters (MySQL's
#: and MariaDB's Unicode collations: ``æ`` is ``ae``, ``ø`` is ``o``).
_LETTER_EQUIVALENTS = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d",
                                     "ð": "d", "ı": "i", "ħ": "h", "ŧ": "t", "þ": "th"})
#: Letters by category that show nothing (Hangul fillers), which collations ignore.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def _folded(text: str) -> str:
    """One spelling for the spellings a case- and accent-insensitive collation takes as one
    (MariaDB's ``utf8mb4_general_ci`` finds ``alice`` for ``Álice`` or ``alïce``; its
    Unicode collations and MySQL 8's ``utf8mb4_0900_ai_ci`` for the full-width
    ``ａｌｉｃｅ`` or ``al\u200bice`` too): case folded, compatibility forms as their plain
    letters, marks (accents, variation selectors), format and control characters gone,
    a few letters as the letters those collations take them for, every character past the
    Basic Multilingual Plane as one (``general_ci`` weighs them all alike), and the spaces
    around it (collations ignore trailing ones). Counted under the typed text instead, each
    spelling had its own limit of wrong passwords for the one account. Close, not exact
    (``ß`` is ``ss`` here, ``s`` to ``general_ci``): a few spellings per account at most."""
    kept = []
    for char in unicodedata.normalize("NFKD", text.casefold()):
        if unicodedata.category(char) in ("Mn", "Me", "Cf", "Cc") or char in _INVISIBLE_LETTERS:
            continue
        kept.append("\ufffd" if ord(char) > 0xFFFF else char)
    folded = unicodedata.normalize("NFKC", "".join(kept)).casefold()
    return folded.translate(_LETTER_EQUIVALENTS).strip()
