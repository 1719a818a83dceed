"""ID tokens (id_token.py): their settings and keys, the JWKS, and the token a login posts
to the business callback URL, verified exactly as a receiving service would (signature,
issuer, audience, expiry, nonce). How it is posted (and errors with it): test_delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import typing as t
import warnings
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError
from joserfc.jwk import KeySet, OctKey, RSAKey
from support import (
    AVATAR,
    BUSINESS_URL,
    ID_TOKEN_SECRET,
    NICKNAME,
    OPENID,
    UNIONID,
    Clock,
    add_user,
    all_users,
    callback_app,
    ending_of,
    error_name,
    finish_login,
    form_post,
    link_identity,
    logged_in_user_id,
    login_with_wechat,
    make_test_app,
    receiver_keys,
    recording,
    start_login,
    verify,
)

from flask_wechat_qr import signals
from flask_wechat_qr.adapter import AccountAdapter
from flask_wechat_qr.errors import ConfigurationError

# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "key", "problem"), [
    ({"WECHAT_QR_CALLBACK_URL": BUSINESS_URL}, "WECHAT_QR_CALLBACK_URL", "no ID token key"),
    ({"WECHAT_QR_ID_TOKEN_SECRET": "short"}, "WECHAT_QR_ID_TOKEN_SECRET", "shorter than 32"),
    ({"WECHAT_QR_ID_TOKEN_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nnope\n"},
     "WECHAT_QR_ID_TOKEN_PRIVATE_KEY", "not an RSA key"),
    ({"WECHAT_QR_ID_TOKEN_PRIVATE_KEY": "/no/such/key.pem"},
     "WECHAT_QR_ID_TOKEN_PRIVATE_KEY", "no readable PEM file"),
    ({"WECHAT_QR_ID_TOKEN_ISSUER": "app.example.com"}, "WECHAT_QR_ID_TOKEN_ISSUER",
     "not an http(s) URL"),
    ({"WECHAT_QR_ID_TOKEN_TTL": 0}, "WECHAT_QR_ID_TOKEN_TTL", "not a positive number"),
])
def test_bad_id_token_settings_fail_at_init_app(tmp_path: t.Any, config: dict[str, t.Any],
                                                key: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_test_app(tmp_path, **config)
    assert caught.value.key == key
    assert problem in str(caught.value)


def test_key_and_secret_together_are_refused(tmp_path: t.Any, pem: str) -> None:
    with pytest.raises(ConfigurationError, match="both a private key and a shared secret"):
        make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                      WECHAT_QR_ID_TOKEN_SECRET=ID_TOKEN_SECRET)


def test_public_or_small_keys_cannot_sign(tmp_path: t.Any, rsa_key: RSAKey) -> None:
    public = rsa_key.as_pem(private=False).decode()
    with pytest.raises(ConfigurationError, match="public key"):
        make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=public)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(ConfigurationError, match="1024 bits"):
        make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=small)


def test_private_key_from_a_file(tmp_path: t.Any, pem: str, rsa_key: RSAKey) -> None:
    path = tmp_path / "id-token.pem"
    path.write_text(pem)
    app = make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=str(path),
                        WECHAT_QR_CALLBACK_URL=BUSINESS_URL)
    keys = app.test_client().get("/auth/.well-known/jwks.json").get_json()["keys"]
    assert [k["kid"] for k in keys] == [rsa_key.thumbprint()]


# --- the JWKS ---------------------------------------------------------------------------


def test_jwks_publishes_only_public_keys(tmp_path: t.Any, pem: str, rsa_key: RSAKey) -> None:
    previous = RSAKey.generate_key(2048)
    app = make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                        WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS=[
                            previous.as_pem(private=False).decode()])
    resp = app.test_client().get("/auth/.well-known/jwks.json")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    keys = resp.get_json()["keys"]
    assert [k["kid"] for k in keys] == [rsa_key.thumbprint(), previous.thumbprint()]
    for key in keys:
        assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}
        assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert "PRIVATE" not in resp.get_data(as_text=True)


def test_a_key_published_twice_is_in_the_jwks_once(tmp_path: t.Any, pem: str,
                                                   rsa_key: RSAKey) -> None:
    """Rotation's step 2 done without taking the new key out of the published ones (or the
    old one listed twice): each key is in the JWKS once. Node's jose refuses every token
    verified against a set with two keys of its kid (ERR_JWKS_MULTIPLE_MATCHING_KEYS)."""
    previous = RSAKey.generate_key(2048).as_pem(private=False).decode()
    current = rsa_key.as_pem(private=False).decode()
    app = make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem,
                        WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS=[current, previous, previous])
    keys = app.test_client().get("/auth/.well-known/jwks.json").get_json()["keys"]
    assert [k["kid"] for k in keys] == [rsa_key.thumbprint(),
                                        RSAKey.import_key(previous).thumbprint()]


def test_no_jwks_without_an_rs256_key(tmp_path: t.Any) -> None:
    for index, config in enumerate(({}, {"WECHAT_QR_ID_TOKEN_SECRET": ID_TOKEN_SECRET})):
        (tmp_path / str(index)).mkdir()
        app = make_test_app(tmp_path / str(index), **config)
        resp = app.test_client().get("/auth/.well-known/jwks.json")
        assert resp.status_code == 404
        assert resp.get_json()["error"] == "not_found"


# --- delivery to the callback URL ------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("state", "a\nb"), ("nonce", "n" * 5000)])
def test_a_business_parameter_that_is_not_valid_says_what_to_do(
        make_app: t.Any, pem: str, name: str, value: str) -> None:
    """The visitor cannot mend the business front end's parameter: the page says to go
    back and start again (before: that the parameter was not valid, and no more; a review
    of the Chinese pages, session 36)."""
    app = callback_app(make_app, pem)
    for language, words in (("en", "Go back and start the WeChat login again."),
                            ("zh-CN", f"登录请求的 {name} 参数无效，请返回重新发起微信登录。")):
        resp = app.test_client().get("/auth/wechat/login", query_string={name: value},
                                     headers={"Accept-Language": language})
        assert resp.status_code == 400 and error_name(resp) == "InvalidRequest"
        assert words in resp.get_data(as_text=True)


def test_login_posts_a_verifiable_id_token(make_app: t.Any, wechat_api: t.Any,
                                           pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    before = int(time.time())
    resp = login_with_wechat(client, wechat_api, state="biz-state-42", nonce="n-0S6_WzA2Mj")

    post = form_post(resp)
    assert post["action"] == BUSINESS_URL
    assert post["method"] == "post"
    assert post["target"] == "_top"
    assert set(post["fields"]) == {"id_token", "state"}
    assert post["fields"]["state"] == "biz-state-42"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Location" not in resp.headers

    claims = verify(post["fields"]["id_token"], receiver_keys(client), nonce="n-0S6_WzA2Mj")
    (user,) = all_users(app)
    assert claims["sub"] == str(user.id)
    assert claims["aud"] == "wechat"
    assert claims["iss"] == "http://localhost"
    assert claims["exp"] - claims["iat"] == 300
    assert before <= claims["iat"] <= time.time()
    assert before <= claims["auth_time"] <= claims["iat"]
    assert claims["name"] == NICKNAME
    assert claims["picture"] == AVATAR
    assert claims["wechat"] == {"connection": "wechat", "openid": OPENID, "unionid": UNIONID}
    assert len(claims["jti"]) >= 16
    header = jwt.decode(post["fields"]["id_token"], receiver_keys(client)).header
    assert header["kid"] == receiver_keys(client).keys[0].kid
    # The browser is logged into the site too.
    assert logged_in_user_id(client) == str(user.id)


def test_a_receiver_with_authlib_jose_verifies_it(make_app: t.Any, wechat_api: t.Any,
                                                 pem: str) -> None:
    """Receivers on an older Authlib use ``authlib.jose`` (deprecated in new ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from authlib.jose import JsonWebKey, JsonWebToken

    app = callback_app(make_app, pem)
    client = app.test_client()
    token = form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"]
    key_set = JsonWebKey.import_key_set(client.get("/auth/.well-known/jwks.json").get_json())
    claims = JsonWebToken(["RS256"]).decode(
        token, key_set,
        claims_options={"iss": {"essential": True, "value": "http://localhost"},
                        "aud": {"essential": True, "value": "wechat"}})
    claims.validate()
    assert claims["wechat"]["openid"] == OPENID


def test_expired_token_is_refused(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem, WECHAT_QR_ID_TOKEN_TTL=60)
    client = app.test_client()
    token = form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"]
    keys = receiver_keys(client)
    claims = verify(token, keys)
    assert claims["exp"] - claims["iat"] == 60
    verify(token, keys, now=claims["exp"] - 1)
    with pytest.raises(ExpiredTokenError):
        verify(token, keys, now=claims["exp"] + 1)


def test_wrong_audience_is_refused(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    token = form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"]
    with pytest.raises(InvalidClaimError):
        verify(token, receiver_keys(client), audience="another-service")
    with pytest.raises(InvalidClaimError):
        verify(token, receiver_keys(client), issuer="https://evil.example")


def test_tampered_token_is_refused(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    token = form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"]
    keys = receiver_keys(client)
    header, payload, signature = token.split(".")
    # Another user's id in the payload, signature kept.
    claims = jwt.decode(token, keys).claims
    forged = jwt.encode({"alg": "HS256"}, {**claims, "sub": claims["sub"] + "0"},
                        OctKey.import_key(ID_TOKEN_SECRET))
    with pytest.raises(BadSignatureError):
        jwt.decode(".".join([header, forged.split(".")[1], signature]), keys)
    # One flipped character in the signature.
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(BadSignatureError):
        jwt.decode(".".join([header, payload, flipped]), keys)
    # The classic downgrades: "alg": "none", and HS256 keyed with the published public key.
    assert json.loads(_b64decode(header)) == {"alg": "RS256", "typ": "JWT",
                                              "kid": keys.keys[0].kid}
    none = ".".join([_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                     payload, ""])
    public_pem = keys.keys[0].as_pem(private=False)
    signing_input = ".".join([_b64encode(json.dumps(
        {"alg": "HS256", "typ": "JWT", "kid": keys.keys[0].kid}).encode()), payload])
    confused = signing_input + "." + _b64encode(
        hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    for downgraded in (none, confused):
        with pytest.raises(JoseError):
            jwt.decode(downgraded, keys, algorithms=["RS256"])
        with pytest.raises((JoseError, ValueError)):
            jwt.decode(downgraded, keys)  # a receiver that forgets to pin the algorithm


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_hs256_with_a_shared_secret(make_app: t.Any, wechat_api: t.Any) -> None:
    app = make_app(WECHAT_QR_CALLBACK_URL=BUSINESS_URL, WECHAT_QR_ID_TOKEN_SECRET=ID_TOKEN_SECRET)
    client = app.test_client()
    token = form_post(login_with_wechat(client, wechat_api, nonce="abc"))["fields"]["id_token"]
    claims = verify(token, OctKey.import_key(ID_TOKEN_SECRET), algorithm="HS256", nonce="abc")
    assert claims["wechat"]["openid"] == OPENID
    assert "kid" not in jwt.decode(token, OctKey.import_key(ID_TOKEN_SECRET)).header
    with pytest.raises(BadSignatureError):
        jwt.decode(token, OctKey.import_key(ID_TOKEN_SECRET + "x"), algorithms=["HS256"])


def test_configured_issuer_audience_and_no_state(make_app: t.Any, wechat_api: t.Any,
                                                 pem: str) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=[
        {"connection": "shop", "app_id": "wx1111111111111111", "app_secret": "s1",
         "callback_url": BUSINESS_URL, "id_token_audience": "shop-frontend"},
        {"connection": "web", "app_id": "wx2222222222222222", "app_secret": "s2"},
    ], WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem, WECHAT_QR_ID_TOKEN_ISSUER="https://id.example.com")
    client = app.test_client()
    post = form_post(login_with_wechat(client, wechat_api, connection="shop"))
    assert set(post["fields"]) == {"id_token"}  # no state given, none posted
    claims = verify(post["fields"]["id_token"], receiver_keys(client),
                    audience="shop-frontend", issuer="https://id.example.com")
    assert "nonce" not in claims
    assert claims["wechat"]["connection"] == "shop"
    # A connection without a callback URL logs in as before (state/nonce ignored).
    resp = login_with_wechat(client, wechat_api, connection="web", openid="o-web",
                             state="ignored", next="/account")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"


def test_each_login_gets_a_new_token_id(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    client = app.test_client()
    first = verify(form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"],
                   receiver_keys(client))
    second = verify(form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"],
                    receiver_keys(client))
    assert first["sub"] == second["sub"]
    assert first["jti"] != second["jti"]


@pytest.mark.parametrize("algorithm", ["RS256", "HS256"])
def test_a_reload_of_the_callback_posts_the_same_token_until_it_expires(
    make_app: t.Any, wechat_api: t.Any, pem: str, clock: Clock, algorithm: str
) -> None:
    """One login, one token: reloading the callback URL (logged in, as the same browser)
    posts the identical token while it is valid, then says the login was handed on; it
    never mints a second token a thief could use after the first was spent."""
    config = ({} if algorithm == "RS256" else
              {"WECHAT_QR_ID_TOKEN_PRIVATE_KEY": None, "WECHAT_QR_ID_TOKEN_SECRET":
               ID_TOKEN_SECRET})
    app = callback_app(make_app, pem, **config)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client, state="biz")
    first = form_post(finish_login(client, state))["fields"]["id_token"]
    with recording(app, "id_token_issued") as events:
        clock.advance(120)
        again = form_post(finish_login(client, state))["fields"]["id_token"]
    assert again == first
    assert [e[1]["claims"]["jti"] for e in events] == [jwt.decode(
        first, receiver_keys(client) if algorithm == "RS256" else
        OctKey.import_key(ID_TOKEN_SECRET)).claims["jti"]]
    clock.advance(300)  # past the token's lifetime
    late = finish_login(client, state)
    assert late.status_code == 400 and error_name(late) == "StateError"


def test_adapter_adds_claims_but_cannot_replace_the_safe_ones(
    make_app: t.Any, wechat_api: t.Any, pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def claims(self: AccountAdapter, user: t.Any, connection: t.Any) -> dict[str, t.Any]:
        return {"email": f"user{user.id}@example.com", "name": "Zhang San", "sub": "1",
                "aud": "everyone", "nonce": "forged", "wechat": {"openid": "x"}}

    monkeypatch.setattr(AccountAdapter, "id_token_claims", claims)
    app = callback_app(make_app, pem)
    client = app.test_client()
    add_user(app, username="first")  # id 1: the id the hook tries to claim
    token = form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"]
    got = verify(token, receiver_keys(client))
    user = all_users(app)[-1]
    assert got["email"] == f"user{user.id}@example.com"
    assert got["name"] == "Zhang San"  # name and picture may be replaced
    assert got["sub"] == str(user.id) != "1"
    assert got["aud"] == "wechat"
    assert "nonce" not in got
    assert got["wechat"]["openid"] == OPENID


def test_signal_tells_who_got_a_token(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    seen: list[dict[str, t.Any]] = []

    def receiver(sender: t.Any, **kwargs: t.Any) -> None:
        seen.append(kwargs)

    with signals.id_token_issued.connected_to(receiver, app):
        token = form_post(login_with_wechat(app.test_client(), wechat_api))["fields"]["id_token"]
    (event,) = seen
    assert event["connection"].identifier == "wechat"
    assert event["claims"]["jti"] == jwt.decode(token, receiver_keys(app.test_client())
                                                ).claims["jti"]


def test_returning_user_gets_a_token_too(make_app: t.Any, wechat_api: t.Any, pem: str) -> None:
    app = callback_app(make_app, pem)
    user_id = add_user(app, username="old", nickname="Old Friend")
    link_identity(app, user_id)
    client = app.test_client()
    claims = verify(form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"],
                    receiver_keys(client))
    assert claims["sub"] == str(user_id)
    assert claims["wechat"]["openid"] == OPENID


def test_token_stays_out_of_logs_and_urls(make_app: t.Any, wechat_api: t.Any, pem: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    app = callback_app(make_app, pem)
    resp = login_with_wechat(app.test_client(), wechat_api)
    token = form_post(resp)["fields"]["id_token"]
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text
    assert all(token not in value for value in resp.headers.values())


def test_claims_that_are_not_json_end_on_an_error_page(
    make_app: t.Any, wechat_api: t.Any, pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host bug in id_token_claims: a page saying what happened, not a 500 traceback; the
    login itself (committed) is still the outcome a repeated callback finds."""
    import datetime

    monkeypatch.setattr(AccountAdapter, "id_token_claims",
                        lambda self, user, connection: {"joined": datetime.datetime.now()})
    app = callback_app(make_app, pem)
    client = app.test_client()
    wechat_api.token()
    wechat_api.userinfo()
    state = start_login(client)
    resp = finish_login(client, state)
    assert resp.status_code == 500
    assert "could not hand the login on" in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)
    (user,) = all_users(app)
    assert logged_in_user_id(client) == str(user.id)
    ending = ending_of(app, state)
    assert ending is not None and ending.user_id == str(user.id)


def test_extra_claims_cannot_set_nbf(make_app: t.Any, wechat_api: t.Any, pem: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AccountAdapter, "id_token_claims",
                        lambda self, user, connection: {"nbf": 4102444800, "iat": 1})
    app = callback_app(make_app, pem)
    client = app.test_client()
    claims = verify(form_post(login_with_wechat(client, wechat_api))["fields"]["id_token"],
                    receiver_keys(client))
    assert "nbf" not in claims and claims["iat"] > 1


def test_issuer_comes_from_server_name_not_the_host_header(make_app: t.Any, wechat_api: t.Any,
                                                           pem: str) -> None:
    app = callback_app(make_app, pem, SERVER_NAME="www.example.com",
                       PREFERRED_URL_SCHEME="https")
    client = app.test_client()
    resp = login_with_wechat(client, wechat_api, base_url="http://evil.example")
    token = form_post(resp)["fields"]["id_token"]
    claims = jwt.decode(token, receiver_keys(client)).claims
    assert claims["iss"] == "https://www.example.com"


@pytest.mark.parametrize("mount", ["dispatcher", "proxy_fix"])
def test_under_a_mount_point_the_issuer_is_where_the_public_keys_are(
        make_app: t.Any, wechat_api: t.Any, pem: str, mount: str) -> None:
    """Mounted under ``/site`` (a DispatcherMiddleware, or a proxy's X-Forwarded-Prefix
    through ProxyFix) with SERVER_NAME and no APPLICATION_ROOT: the iss is the site's root
    at its mount point, where a receiver (docs/id-token.rst) fetches the public keys:
    iss + /auth/.well-known/jwks.json."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.wrappers import Response

    app = callback_app(make_app, pem, SERVER_NAME="www.example.com",
                       PREFERRED_URL_SCHEME="https")
    if mount == "dispatcher":
        app.wsgi_app = DispatcherMiddleware(Response("not the site", 404),  # type: ignore[method-assign]
                                            {"/site": app.wsgi_app})
    else:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    client = app.test_client()

    def get(url: str, **params: str) -> t.Any:
        """``url`` (public) as the browser and the front (the proxy) ask the app for it."""
        path = url.removeprefix("https://www.example.com")
        if mount == "dispatcher":
            return client.get(path, query_string=params, base_url="https://www.example.com")
        return client.get(path.removeprefix("/site"), query_string=params,
                          base_url="https://www.example.com",
                          headers={"X-Forwarded-Prefix": "/site"})

    wechat_api.token()
    wechat_api.userinfo()
    start = get("https://www.example.com/site/auth/wechat/login", nonce="n-1")
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    done = get("https://www.example.com/site/auth/wechat/callback", code="c", state=state)
    token = form_post(done)["fields"]["id_token"]
    issuer = "https://www.example.com/site"
    keys = get(issuer + "/auth/.well-known/jwks.json")
    assert keys.status_code == 200, keys.data
    claims = verify(token, KeySet.import_key_set(keys.get_json()), issuer=issuer, nonce="n-1")
    assert claims["iss"] == issuer


@pytest.mark.parametrize(("prefix", "issuer"), [
    ("@evil.example", "https://www.example.com"),
    ("//evil.example/x", "https://www.example.com"),
    ("/site?x=1", "https://www.example.com"),
    ("/my site", "https://www.example.com/my%20site"),
])
def test_a_hostile_or_odd_forwarded_prefix_never_moves_the_issuer_off_server_name(
        make_app: t.Any, wechat_api: t.Any, pem: str, prefix: str, issuer: str) -> None:
    """The host of ``iss`` is SERVER_NAME's whatever a proxy header says: a prefix that is
    not a path of this site is left out, and one with a space is written as url_for
    writes it into the public keys' URL."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = callback_app(make_app, pem, SERVER_NAME="www.example.com",
                       PREFERRED_URL_SCHEME="https")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    client = app.test_client()
    headers = {"X-Forwarded-Prefix": prefix}
    wechat_api.token()
    wechat_api.userinfo()
    start = client.get("/auth/wechat/login", base_url="https://www.example.com",
                       headers=headers)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    done = client.get("/auth/wechat/callback", query_string={"code": "c", "state": state},
                      base_url="https://www.example.com", headers=headers)
    token = form_post(done)["fields"]["id_token"]
    claims = jwt.decode(token, receiver_keys(client)).claims
    assert claims["iss"] == issuer
    assert urlsplit(claims["iss"]).hostname == "www.example.com"


def test_the_issuer_is_known_outside_a_request_where_it_is_configured(
        make_app: t.Any, pem: str) -> None:
    """``id_token_issuer()`` (public, for a receiver in the same app: a CLI command, a
    job) needs no request when the issuer is configured."""
    from flask_wechat_qr import id_token_issuer

    app = callback_app(make_app, pem, WECHAT_QR_ID_TOKEN_ISSUER="https://issuer.example.com")
    with app.app_context():
        assert id_token_issuer() == "https://issuer.example.com"
    app = callback_app(make_app, pem, SERVER_NAME="www.example.com",
                       PREFERRED_URL_SCHEME="https")
    with app.app_context():
        assert id_token_issuer() == "https://www.example.com"


@pytest.mark.parametrize(("config", "problem"), [
    ({"WECHAT_QR_ID_TOKEN_TTL": 86400}, "too long"),
    ({"WECHAT_QR_ID_TOKEN_SECRET": ID_TOKEN_SECRET, "WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS": ["x"]},
     "only for RS256"),
    ({"WECHAT_QR_ID_TOKEN_AUDIENCE": ["a", "b"], "WECHAT_QR_ID_TOKEN_SECRET": ID_TOKEN_SECRET},
     "is not a string"),
    ({"WECHAT_QR_ID_TOKEN_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\\nMIIE\\n"},
     "literal \\n"),
])
def test_more_bad_id_token_settings(tmp_path: t.Any, config: dict[str, t.Any],
                                    problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem.replace("\\", "\\\\")):
        make_test_app(tmp_path, **config)


def test_a_key_error_never_repeats_the_key(tmp_path: t.Any, pem: str) -> None:
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    with pytest.raises(ConfigurationError) as caught:
        make_test_app(tmp_path, WECHAT_QR_ID_TOKEN_PRIVATE_KEY=body)
    assert body[:40] not in str(caught.value)




def test_on_the_www_subdomain_the_issuer_is_where_the_public_keys_are(
        tmp_path: t.Any, pem: str) -> None:
    """``SERVER_NAME`` "example.test" with every route on ``www``
    (``url_map.default_subdomain``, subdomain matching): the iss was the bare name, where
    no keys are (a receiver finding them from iss got a 404), and ``check`` warned that
    SERVER_NAME overrides a --base-url nobody gave."""
    from flask import Flask
    from flask_login import LoginManager, UserMixin
    from flask_sqlalchemy import SQLAlchemy
    from support import APP_ID, APP_SECRET

    from flask_wechat_qr import WeChatQR, id_token_issuer
    from flask_wechat_qr.checks import Deployment, run_checks
    from flask_wechat_qr.runtime import find_runtime

    app = Flask("www_site", root_path=str(tmp_path), subdomain_matching=True)
    app.url_map.default_subdomain = "www"
    app.config.update(TESTING=True, SECRET_KEY="www-site-secret-" * 3,
                      SERVER_NAME="example.test", SQLALCHEMY_DATABASE_URI="sqlite://",
                      WECHAT_QR_APP_ID=APP_ID, WECHAT_QR_APP_SECRET=APP_SECRET,
                      WECHAT_QR_CALLBACK_URL="https://biz.example.test/wechat/done",
                      WECHAT_QR_ID_TOKEN_PRIVATE_KEY=pem)
    db = SQLAlchemy(app)
    LoginManager(app)

    class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
        id = db.Column(db.Integer, primary_key=True)

    WeChatQR(app, db=db, user_model=User)
    with app.test_request_context("/", base_url="http://www.example.test"):
        issuer = id_token_issuer()
    assert issuer == "http://www.example.test"
    keys = app.test_client().get("/auth/.well-known/jwks.json",
                                 base_url=issuer)
    assert keys.status_code == 200 and keys.json["keys"]
    runtime = find_runtime(app)
    assert runtime is not None
    findings = run_checks(Deployment.of(app, runtime.settings))
    assert not [f for f in findings.warnings if "SERVER_NAME" in f.what or "iss" in f.what]
