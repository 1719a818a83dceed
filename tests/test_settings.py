"""Every connection and app-wide setting: parsed, defaulted, and refused with a clear error.

Most tests call :func:`load_settings` on a plain dict (what ``init_app`` does with
``app.config``); a few go through a real app to check what ``init_app`` leaves in
``app.config`` and that several connections really work end to end.
"""

from __future__ import annotations

import typing as t
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from support import (
    APP_ID,
    APP_SECRET,
    SANDBOX_APP_ID,
    SANDBOX_APP_SECRET,
    app_settings,
    in_process_origin,
)

import flask_wechat_qr
from flask_wechat_qr import ConfigurationError
from flask_wechat_qr.sandbox.options import SANDBOX_OA_APP_ID, SANDBOX_OA_APP_SECRET
from flask_wechat_qr.settings import (
    CONNECTION_DEFAULTS,
    GLOBAL_DEFAULTS,
    PREFIX,
    SETTINGS,
    TOPICS,
    UNSAFE_MATCH_FIELDS,
    Settings,
    VerifyFile,
    apply_defaults,
    config_from_env,
    load_settings,
    parse_bool,
)

BASE = {"WECHAT_QR_APP_ID": APP_ID, "WECHAT_QR_APP_SECRET": APP_SECRET}


def load(**overrides: t.Any) -> Settings:
    """``load_settings`` on the minimal valid configuration plus ``overrides``."""
    return load_settings({**BASE, **overrides})


def refused(config: t.Mapping[str, t.Any], key: str, *fix_words: str) -> ConfigurationError:
    """Assert that ``config`` is refused, naming ``key`` and a fix containing ``fix_words``."""
    with pytest.raises(ConfigurationError) as info:
        load_settings(config)
    error = info.value
    assert error.key == key
    text = str(error)
    assert text.startswith(key + ": "), text
    assert error.problem and error.problem in text
    assert error.fix and error.fix in text
    for word in fix_words:
        assert word in error.fix, (word, error.fix)
    return error


def two_connections(**second: t.Any) -> list[dict[str, t.Any]]:
    return [
        {"connection": "wechat", "app_id": "wxaaaaaaaaaaaaaaa1", "app_secret": "secret-a"},
        {"connection": "wechat-mp", "display_name": "微信公众号", "app_id": "wxbbbbbbbbbbbbbbb2",
         "app_secret": "secret-b", **second},
    ]


# --- defaults ------------------------------------------------------------------------


def test_minimal_configuration_gives_documented_defaults() -> None:
    settings = load()
    assert list(settings.connections) == ["wechat"]
    conn = settings.connections["wechat"]
    assert conn.identifier == "wechat"
    assert conn.display_name == "WeChat"
    assert conn.app_id == APP_ID
    assert conn.app_secret == APP_SECRET
    assert conn.callback_url is None
    assert conn.login_only is False
    assert conn.association == "off"
    assert conn.match_fields == ("unionid",)
    assert conn.profile_sync == "first_login"
    assert conn.profile_refresh_after == 7 * 24 * 3600
    assert conn.lang is None
    assert conn.userinfo_lang is None
    assert conn.qr_self_redirect is False
    assert conn.qr_style == "black"
    assert conn.qr_href is None
    assert conn.qr_stylelite is False
    assert conn.qr_fast_login is True
    assert settings.open_base_url == "https://open.weixin.qq.com"
    assert settings.api_base_url == "https://api.weixin.qq.com"
    assert settings.sandbox is False
    assert settings.sandbox_prefix == "/wechat-sandbox"
    assert settings.sandbox_public_url is None
    assert settings.url_prefix == "/auth"
    assert settings.http_timeout == 5.0
    assert settings.code_used_wait == 2.0  # a used code holds a worker at most this long
    assert settings.frame_ancestors == "'self'"
    assert settings.state_ttl == 600
    assert settings.post_login_url == "/"


#: A non-default value for every per-connection key, and what the settings make of it.
CONNECTION_VALUES: dict[str, tuple[t.Any, t.Any]] = {
    "connection": ("corp-wechat-2", "corp-wechat-2"),
    "display_name": ("微信登录", "微信登录"),
    "app_id": (" wx0123456789abcdef ", "wx0123456789abcdef"),
    "app_secret": ("an0th3r-s3cr3t", "an0th3r-s3cr3t"),
    "callback_url": ("https://biz.example.com/wechat/done", "https://biz.example.com/wechat/done"),
    "id_token_audience": ("biz-web", "biz-web"),
    "login_only": (True, True),
    "association": ("field_matching", "field_matching"),
    "match_fields": ("unionid,email", ("unionid", "email")),
    "profile_sync": ("each_login", "each_login"),
    "profile_refresh_after": ("86400", 86400),
    "lang": ("en", "en"),
    "userinfo_lang": ("zh_TW", "zh_TW"),
    "qr_self_redirect": ("true", True),
    "qr_style": ("white", "white"),
    "qr_href": ("https://static.example.com/qr.css", "https://static.example.com/qr.css"),
    "oa_app_id": (" wxfedcba9876543210 ", "wxfedcba9876543210"),
    "oa_app_secret": ("0a-s3cr3t", "0a-s3cr3t"),
    "oa_scope": ("snsapi_base", "snsapi_base"),
    "oa_verify_file": ("MP_verify_AbC123.txt=AbC123",
                       VerifyFile("MP_verify_AbC123.txt", "AbC123")),
    "qr_stylelite": ("yes", True),
    "qr_fast_login": ("false", False),
}

#: The same for every app-wide key (``connections`` has tests of its own).
GLOBAL_VALUES: dict[str, tuple[t.Any, t.Any]] = {
    "open_base_url": ("http://localhost:5000/sandbox/", "http://localhost:5000/sandbox"),
    "api_base_url": ("http://localhost:5000/sandbox-api", "http://localhost:5000/sandbox-api"),
    "sandbox": (True, True),
    "app_id_check": ("false", False),
    "sandbox_prefix": ("/try-wechat/", "/try-wechat"),
    "sandbox_public_url": ("http://192.168.1.20:5000/", "http://192.168.1.20:5000"),
    "sandbox_app_name": ("示例网站", "示例网站"),
    "url_prefix": ("login/", "/login"),
    "http_timeout": ("2.5", 2.5),
    "code_used_wait": ("0.5", 0.5),
    "frame_ancestors": ("'none'", "'none'"),
    "user_foreign_key": (False, False),
    "store_avatars": ("yes", True),
    "state_ttl": (300, 300),
    "post_login_url": ("/account", "/account"),
    "mobile_page": ("false", False),
    "other_login_url": ("/login", "/login"),
    "bind_ttl": (120, 120),
    "bind_attempts_per_binding": (3, 3),
    "bind_attempts_per_address": (10, 10),
    "bind_attempts_per_account": (7, 7),
    "bind_block_seconds": (60.5, 61),
    "default_locale": ("zh_CN", "zh_CN"),
    "id_token_private_key": ("/etc/site/id-token.pem", "/etc/site/id-token.pem"),
    # Read in a second load: a private key and a secret together are refused.
    "id_token_secret": ("s" * 40, "s" * 40),
    "id_token_published_keys": (["/etc/site/old.pem"], ("/etc/site/old.pem",)),
    "id_token_issuer": ("https://id.example.com/", "https://id.example.com"),
    "id_token_ttl": (120, 120),
}


def test_every_connection_setting_is_read() -> None:
    assert set(CONNECTION_VALUES) == set(CONNECTION_DEFAULTS)  # a new key needs a case here
    settings = load(**{PREFIX + name.upper(): value
                       for name, (value, _) in CONNECTION_VALUES.items()})
    assert list(settings.connections) == ["corp-wechat-2"]
    conn = settings.connections["corp-wechat-2"]
    for name, (_, expected) in CONNECTION_VALUES.items():
        attribute = "identifier" if name == "connection" else name
        assert getattr(conn, attribute) == expected, name


def test_every_app_wide_setting_is_read() -> None:
    assert set(GLOBAL_VALUES) | {"connections"} == set(GLOBAL_DEFAULTS)
    secret = {"id_token_secret"}  # never together with the private key
    for names in (set(GLOBAL_VALUES) - secret, secret):
        settings = load_settings({**BASE, **{PREFIX + name.upper(): GLOBAL_VALUES[name][0]
                                             for name in names}})
        for name in names:
            assert getattr(settings, name) == GLOBAL_VALUES[name][1], name


@pytest.mark.parametrize("value, expected", [("/", ""), ("", ""), ("/auth/", "/auth"),
                                             ("wechat/login", "/wechat/login")])
def test_url_prefix_is_normalised(value: str, expected: str) -> None:
    assert load(WECHAT_QR_URL_PREFIX=value).url_prefix == expected


def test_app_id_and_secret_are_stripped() -> None:
    conn = load(WECHAT_QR_APP_ID=f"  {APP_ID}\n", WECHAT_QR_APP_SECRET=f" {APP_SECRET} ")
    assert conn.connections["wechat"].app_id == APP_ID
    assert conn.connections["wechat"].app_secret == APP_SECRET


def test_the_secret_is_not_in_the_repr_of_the_settings() -> None:
    settings = load()
    assert APP_SECRET not in repr(settings.connections["wechat"])
    assert APP_SECRET not in repr(settings)
    assert APP_ID in repr(settings.connections["wechat"])


def test_init_app_setdefaults_every_key_into_app_config(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(WECHAT_QR_DISPLAY_NAME="微信", WECHAT_QR_HTTP_TIMEOUT=3)
    expected = {
        **{"WECHAT_QR_" + k.upper(): v for k, v in GLOBAL_DEFAULTS.items()},
        **{"WECHAT_QR_" + k.upper(): v for k, v in CONNECTION_DEFAULTS.items()},
        "WECHAT_QR_APP_ID": APP_ID,
        "WECHAT_QR_APP_SECRET": APP_SECRET,
        "WECHAT_QR_DISPLAY_NAME": "微信",
        "WECHAT_QR_HTTP_TIMEOUT": 3,
        "WECHAT_QR_CODE_USED_WAIT": 0.2,  # the test apps' own
        "WECHAT_QR_PROFILE_REFRESH_AFTER": 0,  # TESTING's own default
    }
    for key, value in expected.items():
        assert key in app.config, key
        assert app.config[key] == value, key
    # Spot checks against the documented defaults, so a changed default is noticed.
    assert app.config["WECHAT_QR_CONNECTION"] == "wechat"
    assert app.config["WECHAT_QR_ASSOCIATION"] == "off"
    assert app.config["WECHAT_QR_LOGIN_ONLY"] is False
    assert app.config["WECHAT_QR_CALLBACK_URL"] is None
    assert app.config["WECHAT_QR_OPEN_BASE_URL"] == "https://open.weixin.qq.com"
    assert app.config["WECHAT_QR_API_BASE_URL"] == "https://api.weixin.qq.com"
    assert app.config["WECHAT_QR_URL_PREFIX"] == "/auth"
    # ... and what is in force is what app.config shows.
    settings = app_settings(app)
    assert settings.connections["wechat"].display_name == "微信"
    assert settings.http_timeout == 3.0


def test_apply_defaults_never_overwrites() -> None:
    config: dict[str, t.Any] = {"WECHAT_QR_ASSOCIATION": "field_matching",
                                "WECHAT_QR_LOGIN_ONLY": "true"}
    apply_defaults(config)
    assert config["WECHAT_QR_ASSOCIATION"] == "field_matching"
    assert config["WECHAT_QR_LOGIN_ONLY"] == "true"
    assert config["WECHAT_QR_PROFILE_SYNC"] == "first_login"


def test_settings_are_read_once_at_init_app(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    app.config["WECHAT_QR_APP_ID"] = "wxchangedafterinit"
    resp = app.test_client().get("/auth/wechat/login")
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["appid"] == [APP_ID]


# --- unique identifier ---------------------------------------------------------------


@pytest.mark.parametrize("identifier", ["wechat", "w", "wechat-2", "0", "a" * 31, "we-chat-corp"])
def test_valid_identifiers(identifier: str) -> None:
    assert list(load(WECHAT_QR_CONNECTION=identifier).connections) == [identifier]


@pytest.mark.parametrize("identifier", [
    "WeChat", "WECHAT", "we_chat", "we chat", " wechat", "wechat\n", "a" * 32, "a" * 40, "",
    "wechat/qr", "wechat.qr", "微信", 7,
])
def test_invalid_identifier_is_refused(identifier: t.Any) -> None:
    error = refused({**BASE, "WECHAT_QR_CONNECTION": identifier}, "WECHAT_QR_CONNECTION",
                    "lowercase letters, digits and '-'", "31")
    assert repr(identifier) in error.problem


# --- AppID / AppSecret ---------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_missing_or_blank_app_id_leaves_the_connection_off(value: t.Any) -> None:
    """A site deploys its code before it has credentials: loading works, the connection
    says it has none (init_app warns; its routes answer 503)."""
    conn = load_settings({**BASE, "WECHAT_QR_APP_ID": value}).connections["wechat"]
    assert (conn.app_id, conn.has_credentials) == ("", False)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_app_secret_leaves_the_connection_off(value: t.Any) -> None:
    conn = load_settings({**BASE, "WECHAT_QR_APP_SECRET": value}).connections["wechat"]
    assert (conn.app_id, conn.app_secret, conn.has_credentials) == (APP_ID, "", False)


def test_an_empty_config_loads_with_no_credentials() -> None:
    assert [c.has_credentials for c in load_settings({}).connections.values()] == [False]
    assert load_settings(BASE).connections["wechat"].has_credentials


@pytest.mark.parametrize("value", [12345, 0x1F, ["wx5f3d2e1c0b9a8776"]])
def test_a_credential_that_is_not_text_is_refused(value: t.Any) -> None:
    for key in ("WECHAT_QR_APP_ID", "WECHAT_QR_APP_SECRET"):
        error = refused({**BASE, key: value}, key, "open.weixin.qq.com")
        assert "must be text" in error.problem


@pytest.mark.parametrize("app_id", [
    "12345", "wx123", "wx5f3d2e1c0b9a877", "wx5f3d2e1c0b9a87766", "WX5F3D2E1C0B9A8776",
    "wx5f3d2e1c0b9a877g", "gh_5f3d2e1c0b9a", APP_SECRET])
def test_an_app_id_that_is_not_wechat_shaped_stops_startup(app_id: str) -> None:
    error = refused({**BASE, "WECHAT_QR_APP_ID": app_id}, "WECHAT_QR_APP_ID",
                    "管理中心 > 网站应用", "WECHAT_QR_APP_ID_CHECK=False")
    assert "'wx' and 16 hexadecimal digits" in error.problem
    assert f"{app_id[:4]!r}... ({len(app_id)} characters)" in error.problem
    assert APP_SECRET not in str(error)  # a secret pasted into the AppID is not repeated
    refused({"WECHAT_QR_CONNECTIONS": [
        {"app_id": APP_ID, "app_secret": APP_SECRET},
        {"connection": "shop", "app_id": app_id, "app_secret": APP_SECRET}]},
        "WECHAT_QR_CONNECTIONS[1]['app_id']")


def test_the_sandbox_app_id_with_the_sandbox_off_stops_startup() -> None:
    error = refused({"WECHAT_QR_APP_ID": SANDBOX_APP_ID, "WECHAT_QR_APP_SECRET": "s"},
                    "WECHAT_QR_APP_ID", "WECHAT_QR_SANDBOX on", "管理中心 > 网站应用")
    assert "the sandbox's AppID" in error.problem


def test_the_app_id_check_can_be_turned_off_and_is_off_in_the_sandbox() -> None:
    assert load(WECHAT_QR_APP_ID="my-app", WECHAT_QR_APP_ID_CHECK=False
                ).connections["wechat"].app_id == "my-app"
    assert load(WECHAT_QR_APP_ID="my-app", WECHAT_QR_APP_ID_CHECK="false"
                ).connections["wechat"].app_id == "my-app"
    sandbox = load(WECHAT_QR_APP_ID="my-sandbox-app", WECHAT_QR_SANDBOX=True)
    assert sandbox.connections["wechat"].app_id == "my-sandbox-app"
    # The standalone sandbox (or another WeChat-compatible service) at other base URLs.
    standalone = load(WECHAT_QR_APP_ID=SANDBOX_APP_ID,
                      WECHAT_QR_OPEN_BASE_URL="http://127.0.0.1:5001",
                      WECHAT_QR_API_BASE_URL="http://127.0.0.1:5001")
    assert standalone.connections["wechat"].app_id == SANDBOX_APP_ID
    refused({**BASE, "WECHAT_QR_APP_ID": "my-app", "WECHAT_QR_OPEN_BASE_URL":
             "https://open.weixin.qq.com"}, "WECHAT_QR_APP_ID")  # the default, spelled out


def test_invalid_config_stops_init_app(make_app: t.Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_app(WECHAT_QR_ASSOCIATION="ask-binding")
    assert info.value.key == "WECHAT_QR_ASSOCIATION"


# --- association mode ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["off", "field_matching", "ask_binding"])
def test_association_modes_parse(mode: str) -> None:
    assert load(WECHAT_QR_ASSOCIATION=mode).connections["wechat"].association == mode


@pytest.mark.parametrize("mode", ["auto", "OFF", "field-matching", "askBinding", "", True])
def test_unknown_association_mode_is_refused(mode: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_ASSOCIATION": mode}, "WECHAT_QR_ASSOCIATION",
            "off", "field_matching", "ask_binding")


# --- callback URL --------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://biz.example.com/done", "http://localhost:8000/cb?x=1"])
def test_http_callback_urls_are_accepted(url: str) -> None:
    assert load(WECHAT_QR_CALLBACK_URL=url).connections["wechat"].callback_url == url


@pytest.mark.parametrize("url", [None, ""])
def test_unset_callback_url_is_none(url: t.Any) -> None:
    assert load(WECHAT_QR_CALLBACK_URL=url).connections["wechat"].callback_url is None


@pytest.mark.parametrize("url", [
    "ftp://files.example.com/done", "/wechat/done", "wechat/done", "javascript:",
    "javascript:alert(document.cookie)", "https://", "http:///path", "example.com/done",
    "data:text/html,hi", "mailto:ops@example.com", "//example.com/done",
])
def test_non_http_callback_url_is_refused(url: str) -> None:
    error = refused({**BASE, "WECHAT_QR_CALLBACK_URL": url}, "WECHAT_QR_CALLBACK_URL",
                    "https://")
    assert repr(url) in error.problem


@pytest.mark.parametrize("url", ["https://app.example.com/#/wechat/done",
                                 "https://app.example.com/spa#done", "http://localhost:8000/#"])
def test_callback_url_with_a_fragment_route_is_refused(url: str) -> None:
    """The ID token is POSTed: the path after '#' never reaches the business server."""
    error = refused({**BASE, "WECHAT_QR_CALLBACK_URL": url}, "WECHAT_QR_CALLBACK_URL",
                    "POSTed", "never reaches your server", "path your server handles")
    assert "'#'" in error.problem and repr(url) in error.problem


def test_callback_url_fragment_is_refused_inside_a_connection_dict() -> None:
    conns = two_connections(callback_url="https://biz.example.com/app#/done")
    refused({**BASE, "WECHAT_QR_CONNECTIONS": conns},
            "WECHAT_QR_CONNECTIONS[1]['callback_url']", "path your server handles")


# --- match fields --------------------------------------------------------------------


@pytest.mark.parametrize("field", sorted(UNSAFE_MATCH_FIELDS))
def test_unsafe_match_fields_are_refused(field: str) -> None:
    error = refused({**BASE, "WECHAT_QR_ASSOCIATION": "field_matching",
                     "WECHAT_QR_MATCH_FIELDS": ("unionid", field)},
                    "WECHAT_QR_MATCH_FIELDS", "unionid")
    assert field in error.problem


def test_documented_unsafe_fields_are_all_in_the_list() -> None:
    assert {"nickname", "headimgurl", "sex", "province", "city", "country"} <= UNSAFE_MATCH_FIELDS


@pytest.mark.parametrize("association", ["off", "field_matching"])
def test_unsafe_match_field_is_refused_even_when_not_matching(association: str) -> None:
    refused({**BASE, "WECHAT_QR_ASSOCIATION": association, "WECHAT_QR_MATCH_FIELDS": "nickname"},
            "WECHAT_QR_MATCH_FIELDS")


@pytest.mark.parametrize("fields", [
    "unionid, nickname", ["NickName"], ["HEADIMGURL"], [" nickname "], ("unionid", "Sex "),
])
def test_unsafe_match_fields_cannot_sneak_in_by_spelling(fields: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_ASSOCIATION": "field_matching", "WECHAT_QR_MATCH_FIELDS": fields},
            "WECHAT_QR_MATCH_FIELDS", "unionid")


@pytest.mark.parametrize("fields", [5, [5], ["unionid", None]])
def test_match_fields_of_the_wrong_type_are_a_configuration_error(fields: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_MATCH_FIELDS": fields}, "WECHAT_QR_MATCH_FIELDS")


def test_match_fields_from_a_comma_separated_string() -> None:
    conn = load(WECHAT_QR_MATCH_FIELDS="unionid, email ,").connections["wechat"]
    assert conn.match_fields == ("unionid", "email")


def test_field_matching_needs_a_field() -> None:
    refused({**BASE, "WECHAT_QR_ASSOCIATION": "field_matching", "WECHAT_QR_MATCH_FIELDS": ()},
            "WECHAT_QR_MATCH_FIELDS", "unionid")


# --- profile sync, languages, QR options ---------------------------------------------


@pytest.mark.parametrize("mode", ["first_login", "each_login", "never"])
def test_profile_sync_modes(mode: str) -> None:
    assert load(WECHAT_QR_PROFILE_SYNC=mode).connections["wechat"].profile_sync == mode


@pytest.mark.parametrize("mode", ["always", "", "each-login"])
def test_bad_profile_sync_is_refused(mode: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_PROFILE_SYNC": mode}, "WECHAT_QR_PROFILE_SYNC",
            "first_login", "each_login", "never")


@pytest.mark.parametrize(("value", "expected"), [
    (3600, 3600), ("86400", 86400), (" 60 ", 60), (1.5, 2), (0, 0), ("0", 0), ("", 0),
    (None, 7 * 24 * 3600)])  # None: unset, the default
def test_profile_refresh_after_is_seconds_or_off(value: t.Any, expected: int) -> None:
    settings = load(WECHAT_QR_PROFILE_REFRESH_AFTER=value)
    assert settings.connections["wechat"].profile_refresh_after == expected


@pytest.mark.parametrize("value", [-1, "7d", "1 week", True, float("inf"), float("nan")])
def test_bad_profile_refresh_after_is_refused(value: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_PROFILE_REFRESH_AFTER": value},
            "WECHAT_QR_PROFILE_REFRESH_AFTER", "number of seconds", "0 for never")


@pytest.mark.parametrize("lang, expected", [(None, None), ("", None), ("cn", "cn"),
                                            ("en", "en")])
def test_qr_page_language(lang: t.Any, expected: str | None) -> None:
    assert load(WECHAT_QR_LANG=lang).connections["wechat"].lang == expected


@pytest.mark.parametrize("lang", ["zh_CN", "EN", "fr", "english", ["en"]])
def test_bad_qr_page_language_is_refused(lang: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_LANG": lang}, "WECHAT_QR_LANG", "'cn'", "'en'")


@pytest.mark.parametrize("lang", ["zh_CN", "zh_TW", "en"])
def test_userinfo_languages(lang: str) -> None:
    assert load(WECHAT_QR_USERINFO_LANG=lang).connections["wechat"].userinfo_lang == lang


@pytest.mark.parametrize("lang", ["cn", "zh-CN", "zh_cn", "fr", ["en"]])
def test_bad_userinfo_language_is_refused(lang: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_USERINFO_LANG": lang}, "WECHAT_QR_USERINFO_LANG",
            "'zh_CN'", "'zh_TW'", "'en'")


@pytest.mark.parametrize("style", ["black", "white"])
def test_qr_styles(style: str) -> None:
    assert load(WECHAT_QR_QR_STYLE=style).connections["wechat"].qr_style == style


@pytest.mark.parametrize("style", ["dark", "Black", ""])
def test_bad_qr_style_is_refused(style: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_QR_STYLE": style}, "WECHAT_QR_QR_STYLE", "'black'", "'white'")


@pytest.mark.parametrize("href", ["https://static.example.com/qr.css",
                                  "data:text/css;base64,LmltcG93ZXJCb3ggLnFyY29kZSB7fQ=="])
def test_qr_href_https_or_data_uri(href: str) -> None:
    assert load(WECHAT_QR_QR_HREF=href).connections["wechat"].qr_href == href


@pytest.mark.parametrize("href", ["http://static.example.com/qr.css",
                                  "//static.example.com/qr.css", "/static/qr.css",
                                  "data:text/html;base64,PGgxPmhpPC9oMT4="])
def test_qr_href_over_http_is_refused(href: str) -> None:
    refused({**BASE, "WECHAT_QR_QR_HREF": href}, "WECHAT_QR_QR_HREF", "https://",
            "data:text/css;base64,")


def test_qr_href_with_stylelite_is_a_warning_naming_both_keys(
        caplog: pytest.LogCaptureFixture) -> None:
    """Not a refusal: the QR still works, in WeChat's compact style without the sheet."""
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        conn = load(WECHAT_QR_QR_HREF="https://static.example.com/qr.css",
                    WECHAT_QR_QR_STYLELITE=True).connections["wechat"]
    assert conn.qr_stylelite is True and conn.qr_href == "https://static.example.com/qr.css"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "WECHAT_QR_QR_HREF is ignored" in warnings[0]
    assert "WECHAT_QR_QR_STYLELITE" in warnings[0]


def test_qr_href_with_stylelite_in_a_connection_dict_names_the_entry(
        caplog: pytest.LogCaptureFixture) -> None:
    conns = two_connections(qr_href="https://static.example.com/qr.css", qr_stylelite="on")
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        load(WECHAT_QR_CONNECTIONS=conns)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "WECHAT_QR_CONNECTIONS[1]['qr_href']" in warning
    assert "WECHAT_QR_CONNECTIONS[1]['qr_stylelite']" in warning


@pytest.mark.parametrize("config", [
    {"WECHAT_QR_QR_STYLELITE": True},
    {"WECHAT_QR_QR_HREF": "https://static.example.com/qr.css"},
    {"WECHAT_QR_QR_HREF": "https://static.example.com/qr.css", "WECHAT_QR_QR_STYLELITE": False},
])
def test_stylelite_or_href_alone_is_no_warning(config: dict[str, t.Any],
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        load(**config)
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


# --- booleans ------------------------------------------------------------------------


BOOLEAN_KEYS = ["WECHAT_QR_LOGIN_ONLY", "WECHAT_QR_QR_SELF_REDIRECT", "WECHAT_QR_SANDBOX",
                "WECHAT_QR_QR_STYLELITE", "WECHAT_QR_QR_FAST_LOGIN"]


def _bool_value(settings: Settings, key: str) -> bool:
    if key == "WECHAT_QR_SANDBOX":
        return settings.sandbox
    return getattr(settings.connections["wechat"], key.removeprefix("WECHAT_QR_").lower())


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("true", True), ("false", False), ("True", True),
    ("FALSE", False), (" true ", True), ("1", True), ("0", False), ("yes", True),
    ("off", False), (1, True), (0, False),
])
def test_booleans_accept_bools_and_strings(key: str, value: t.Any, expected: bool) -> None:
    parsed = _bool_value(load(**{key: value}), key)
    assert parsed is expected


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
@pytest.mark.parametrize("value", ["maybe", "tru", 1.5, ["true"]])
def test_booleans_refuse_anything_else(key: str, value: t.Any) -> None:
    """The fix names every spelling accepted, an environment variable's too (a newcomer
    who wrote ``maybe`` was told only "Use True or False")."""
    refused({**BASE, key: value}, key, "True or False", "true/false", "yes/no", "on/off",
            "1/0")


def test_parse_bool() -> None:
    assert parse_bool("TRUE") is True
    assert parse_bool("no") is False
    assert parse_bool("nope") is None
    assert parse_bool(None) is None


# --- HTTP timeout, state TTL, base URLs, post-login URL -------------------------------


@pytest.mark.parametrize("value, expected", [(2.5, 2.5), ("2.5", 2.5), (10, 10.0), ("1", 1.0),
                                             (0.1, 0.1)])
def test_http_timeout(value: t.Any, expected: float) -> None:
    assert load(WECHAT_QR_HTTP_TIMEOUT=value).http_timeout == expected


@pytest.mark.parametrize("value", [0, -1, "0", "-2.5", "abc", "", "nan", "inf",
                                   float("inf"), True, [5]])
def test_bad_http_timeout_is_refused(value: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_HTTP_TIMEOUT": value}, "WECHAT_QR_HTTP_TIMEOUT", "seconds")


@pytest.mark.parametrize("value, expected", [(0, 0.0), ("0", 0.0), ("1.5", 1.5), (60, 60.0)])
def test_code_used_wait(value: t.Any, expected: float) -> None:
    assert load(WECHAT_QR_CODE_USED_WAIT=value).code_used_wait == expected


@pytest.mark.parametrize("value", [-1, "-0.5", 61, "soon", True, "nan"])
def test_bad_code_used_wait_is_refused(value: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_CODE_USED_WAIT": value}, "WECHAT_QR_CODE_USED_WAIT", "seconds")


@pytest.mark.parametrize("value", [0, -5, "soon"])
def test_bad_state_ttl_is_refused(value: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_STATE_TTL": value}, "WECHAT_QR_STATE_TTL", "seconds")


def test_fractional_state_ttl_never_becomes_zero() -> None:
    # int(0.5) == 0 would make every state expire at once.
    assert load(WECHAT_QR_STATE_TTL=0.5).state_ttl >= 1
    assert load(WECHAT_QR_STATE_TTL="120").state_ttl == 120


@pytest.mark.parametrize("key", ["WECHAT_QR_OPEN_BASE_URL", "WECHAT_QR_API_BASE_URL"])
@pytest.mark.parametrize("value", ["ftp://open.weixin.qq.com", "open.weixin.qq.com",
                                   "/sandbox", "https://", "https://proxy.example.com/wx?k=1",
                                   "https://proxy.example.com/wx#api"])
def test_bad_base_urls_are_refused(key: str, value: str) -> None:
    refused({**BASE, key: value}, key, "weixin.qq.com")


@pytest.mark.parametrize("value", ["https://evil.example.com/", "//evil.example.com", "account",
                                   "/\\evil.example.com", "/account\n"])
def test_post_login_url_must_be_local(value: str) -> None:
    refused({**BASE, "WECHAT_QR_POST_LOGIN_URL": value}, "WECHAT_QR_POST_LOGIN_URL", "path")


# --- several connections -------------------------------------------------------------


def test_connections_list_gives_two_connections() -> None:
    settings = load(WECHAT_QR_CONNECTIONS=two_connections(association="field_matching",
                                                          login_only="true"))
    assert list(settings.connections) == ["wechat", "wechat-mp"]
    first, second = settings.connections.values()
    assert (first.app_id, first.app_secret) == ("wxaaaaaaaaaaaaaaa1", "secret-a")
    assert (second.app_id, second.app_secret) == ("wxbbbbbbbbbbbbbbb2", "secret-b")
    assert first.display_name == "WeChat"
    assert second.display_name == "微信公众号"
    assert (first.association, first.login_only) == ("off", False)
    assert (second.association, second.login_only) == ("field_matching", True)


def test_connections_list_replaces_the_flat_connection() -> None:
    settings = load(WECHAT_QR_CONNECTION="flat", WECHAT_QR_CONNECTIONS=two_connections())
    assert "flat" not in settings.connections
    assert APP_ID not in {c.app_id for c in settings.connections.values()}


def test_connections_may_be_a_tuple() -> None:
    assert len(load(WECHAT_QR_CONNECTIONS=tuple(two_connections())).connections) == 2


def test_duplicate_identifiers_are_refused() -> None:
    conns = two_connections(connection="wechat")
    error = refused({**BASE, "WECHAT_QR_CONNECTIONS": conns}, "WECHAT_QR_CONNECTIONS", "unique")
    assert "'wechat'" in error.problem


def test_two_dicts_without_identifier_collide_on_the_default() -> None:
    conns = [{"app_id": "wx1111111111111111", "app_secret": "a"},
             {"app_id": "wx2222222222222222", "app_secret": "b"}]
    refused({**BASE, "WECHAT_QR_CONNECTIONS": conns}, "WECHAT_QR_CONNECTIONS", "unique")


@pytest.mark.parametrize("unknown", ["appid", "secret", "WECHAT_QR_APP_ID", "identifier",
                                     "open_base_url"])
def test_unknown_keys_in_a_connection_dict_are_refused(unknown: str) -> None:
    conns = two_connections(**{unknown: "x"})
    error = refused({**BASE, "WECHAT_QR_CONNECTIONS": conns}, "WECHAT_QR_CONNECTIONS[1]",
                    "app_id", "app_secret", "connection")
    assert unknown in error.problem


@pytest.mark.parametrize("value", ["wechat", {"connection": "wechat", "app_id": APP_ID}, 42,
                                   b"wechat"])
def test_connections_that_are_not_a_list_are_refused(value: t.Any) -> None:
    refused({**BASE, "WECHAT_QR_CONNECTIONS": value}, "WECHAT_QR_CONNECTIONS", "[{")


@pytest.mark.parametrize("entry", ["wechat", None, ["connection", "wechat"]])
def test_connection_entries_must_be_dicts(entry: t.Any) -> None:
    conns = [two_connections()[0], entry]
    refused({**BASE, "WECHAT_QR_CONNECTIONS": conns}, "WECHAT_QR_CONNECTIONS[1]", "dict")


@pytest.mark.parametrize("name, value, words", [
    ("app_secret", 42, ("AppSecret",)),
    ("app_id", "12345", ("WECHAT_QR_APP_ID_CHECK",)),
    ("connection", "WeChat_MP", ("lowercase",)),
    ("association", "magic", ("field_matching",)),
    ("callback_url", "ftp://x.example.com", ("https://",)),
    ("match_fields", ("nickname",), ("unionid",)),
    ("lang", "de", ("'en'",)),
    ("login_only", "sometimes", ("True or False",)),
])
def test_errors_inside_a_connection_dict_name_the_entry_and_key(
    name: str, value: t.Any, words: tuple[str, ...]
) -> None:
    conns = two_connections(**{name: value})
    refused({**BASE, "WECHAT_QR_CONNECTIONS": conns}, f"WECHAT_QR_CONNECTIONS[1][{name!r}]",
            *words)


def test_two_connections_each_redirect_with_their_own_app_id(
    make_app: t.Callable[..., Flask],
) -> None:
    app = make_app(WECHAT_QR_CONNECTIONS=two_connections())
    client = app.test_client()
    seen = {}
    for identifier in ("wechat", "wechat-mp"):
        resp = client.get(f"/auth/{identifier}/login")
        assert resp.status_code == 302
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        seen[identifier] = query["appid"][0]
        assert query["redirect_uri"] == [f"http://localhost/auth/{identifier}/callback"]
    assert seen == {"wechat": "wxaaaaaaaaaaaaaaa1", "wechat-mp": "wxbbbbbbbbbbbbbbb2"}
    assert client.get(f"/auth/{'wechat-x'}/login").status_code == 404


# --- sandbox -------------------------------------------------------------------------


def test_sandbox_without_credentials_uses_the_sandbox_app() -> None:
    settings = load_settings({"WECHAT_QR_SANDBOX": "true"})
    conn = settings.connections["wechat"]
    assert (conn.app_id, conn.app_secret) == (SANDBOX_APP_ID, SANDBOX_APP_SECRET)
    # WeChat's own URLs left at their defaults mean "the sandbox mounted in this app".
    assert settings.open_base_url is None
    assert settings.api_base_url == in_process_origin() + "/wechat-sandbox"


def test_sandbox_keeps_configured_credentials_and_urls() -> None:
    settings = load(WECHAT_QR_SANDBOX=True, WECHAT_QR_SANDBOX_PREFIX="/sim/",
                    WECHAT_QR_OPEN_BASE_URL="http://localhost:5001",
                    WECHAT_QR_SANDBOX_PUBLIC_URL="https://sandbox.example.com/")
    assert settings.connections["wechat"].app_id == APP_ID
    assert settings.connections["wechat"].app_secret == APP_SECRET
    assert settings.sandbox_prefix == "/sim"
    assert settings.open_base_url == "http://localhost:5001"
    assert settings.api_base_url == in_process_origin() + "/sim"
    assert settings.sandbox_public_url == "https://sandbox.example.com"


def test_sandbox_does_not_complete_half_a_credential() -> None:
    conn = load_settings({"WECHAT_QR_SANDBOX": True, "WECHAT_QR_APP_ID": APP_ID}
                         ).connections["wechat"]
    assert (conn.app_id, conn.app_secret, conn.has_credentials) == (APP_ID, "", False)


def test_sandbox_credentials_are_not_used_outside_the_sandbox() -> None:
    conn = load_settings({"WECHAT_QR_SANDBOX": False}).connections["wechat"]
    assert (conn.app_id, conn.app_secret, conn.has_credentials) == ("", "", False)


@pytest.mark.parametrize("prefix", ["/", ""])
def test_sandbox_prefix_must_not_be_empty(prefix: str) -> None:
    refused({"WECHAT_QR_SANDBOX": True, "WECHAT_QR_SANDBOX_PREFIX": prefix},
            "WECHAT_QR_SANDBOX_PREFIX", "/wechat-sandbox")


@pytest.mark.parametrize("url", ["ftp://sandbox.example.com", "sandbox.example.com", "/sandbox"])
def test_bad_sandbox_public_url_is_refused(url: str) -> None:
    error = refused({**BASE, "WECHAT_QR_SANDBOX_PUBLIC_URL": url}, "WECHAT_QR_SANDBOX_PUBLIC_URL",
                    "https://")
    assert "None" not in error.fix


# --- unset means the default --------------------------------------------------------


def _outcome(config: t.Mapping[str, t.Any]) -> t.Any:
    """The settings ``config`` gives, or the key of the error it is refused with."""
    try:
        return load_settings(config)
    except ConfigurationError as error:
        return ("refused", error.key, error.problem)


@pytest.mark.parametrize("name", sorted({**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}))
def test_none_means_the_default_for_every_key(name: str) -> None:
    """An environment variable passed through unset (``None``) is the default, never "not a
    boolean" or "not a number"; AppID and AppSecret stay missing."""
    key = PREFIX + name.upper()
    for base in (BASE, {**BASE, "WECHAT_QR_SANDBOX": True}):
        without = {k: v for k, v in base.items() if k != key}
        assert _outcome({**without, key: None}) == _outcome(without), key


@pytest.mark.parametrize("name", sorted(CONNECTION_DEFAULTS))
def test_none_in_a_connection_dict_means_the_default(name: str) -> None:
    first = two_connections()[0]
    without = {k: v for k, v in first.items() if k != name}
    assert (_outcome({"WECHAT_QR_CONNECTIONS": [{**without, name: None}]})
            == _outcome({"WECHAT_QR_CONNECTIONS": [without]}))


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
def test_an_unset_boolean_is_its_default(key: str) -> None:
    """False for all but WECHAT_QR_QR_FAST_LOGIN, on as it is at WeChat."""
    default = {**CONNECTION_DEFAULTS, **GLOBAL_DEFAULTS}[key.removeprefix(PREFIX).lower()]
    assert default is (key == "WECHAT_QR_QR_FAST_LOGIN")
    assert _bool_value(load(**{key: None}), key) is default


# --- every key from text (environment variables) -------------------------------------


#: Text for every key whose value is not text, and what the settings make of it.
TEXT_VALUES: dict[str, tuple[str, t.Any]] = {
    "app_id_check": ("no", False),
    "login_only": ("yes", True),
    "qr_self_redirect": ("off", False),
    "mobile_page": ("no", False),
    "store_avatars": ("on", True),
    "qr_stylelite": ("on", True),
    "qr_fast_login": ("0", False),
    "match_fields": ("unionid,email", ("unionid", "email")),
    "sandbox": ("true", True),
    "user_foreign_key": ("no", False),
    "http_timeout": ("2.5", 2.5),
    "code_used_wait": ("0", 0.0),
    "state_ttl": ("300", 300),
    "profile_refresh_after": ("3600", 3600),
    "bind_ttl": ("120", 120),
    "bind_attempts_per_binding": ("3", 3),
    "bind_attempts_per_address": ("10", 10),
    "bind_attempts_per_account": ("7", 7),
    "bind_block_seconds": ("60.5", 61),
    "id_token_published_keys": ("/etc/site/old.pem, /etc/site/older.pem",
                                ("/etc/site/old.pem", "/etc/site/older.pem")),
    "id_token_private_key": ("/etc/site/id-token.pem", "/etc/site/id-token.pem"),
    "id_token_ttl": ("120", 120),
}


def test_every_key_type_reads_from_text() -> None:
    typed = {name for name, default in {**GLOBAL_DEFAULTS, **CONNECTION_DEFAULTS}.items()
             if default is not None and not isinstance(default, str)}
    assert typed <= set(TEXT_VALUES) | {"connections"}  # a new typed key needs a case here
    settings = load(**{PREFIX + name.upper(): text for name, (text, _) in TEXT_VALUES.items()})
    for name, (_, expected) in TEXT_VALUES.items():
        owner = settings.connections["wechat"] if name in CONNECTION_DEFAULTS else settings
        assert getattr(owner, name) == expected, name


def test_connections_as_json_text() -> None:
    settings = load(WECHAT_QR_CONNECTIONS=(
        '[{"connection": "web", "app_id": "wx1111111111111111", "app_secret": "s1"},'
        ' {"connection": "shop", "app_id": "wx2222222222222222", "app_secret": "s2",'
        '  "login_only": true,'
        '  "lang": null}]'))
    assert list(settings.connections) == ["web", "shop"]
    assert settings.connections["shop"].login_only is True
    assert settings.connections["shop"].lang is None


@pytest.mark.parametrize("text, problem", [("[not json", "is not valid JSON"),
                                           ('{"connection": "web"}', "must be a list"),
                                           ('"web"', "must be a list")])
def test_connections_text_that_is_not_a_json_list_is_refused(text: str, problem: str) -> None:
    error = refused({**BASE, "WECHAT_QR_CONNECTIONS": text}, "WECHAT_QR_CONNECTIONS", "[{")
    assert problem in error.problem


def test_one_pem_text_is_one_published_key() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB,\n-----END PUBLIC KEY-----\n"
    settings = load(WECHAT_QR_ID_TOKEN_PRIVATE_KEY="/etc/key.pem",
                    WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS=pem)
    assert settings.id_token_published_keys == (pem,)


# --- ID token settings that go together ----------------------------------------------


def test_id_token_ttl_is_at_most_an_hour() -> None:
    assert load(WECHAT_QR_ID_TOKEN_TTL=3600).id_token_ttl == 3600
    error = refused({**BASE, "WECHAT_QR_ID_TOKEN_TTL": 3600.5}, "WECHAT_QR_ID_TOKEN_TTL",
                    "at most 3600", "(default 300)")
    assert error.problem == "3601 seconds is too long"


def test_a_private_key_and_a_secret_are_refused_together() -> None:
    refused({**BASE, "WECHAT_QR_ID_TOKEN_PRIVATE_KEY": "/etc/key.pem",
             "WECHAT_QR_ID_TOKEN_SECRET": "s" * 40}, "WECHAT_QR_ID_TOKEN_SECRET",
            "ID_TOKEN_PRIVATE_KEY", "ID_TOKEN_SECRET")


def test_published_keys_need_a_private_key() -> None:
    refused({**BASE, "WECHAT_QR_ID_TOKEN_SECRET": "s" * 40,
             "WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS": ["/etc/old.pem"]},
            "WECHAT_QR_ID_TOKEN_PUBLISHED_KEYS", "WECHAT_QR_ID_TOKEN_PRIVATE_KEY")


# --- the table -----------------------------------------------------------------------


def test_the_table_gives_every_key_a_doc_and_its_derived_name() -> None:
    assert [row.name for row in SETTINGS] == [*CONNECTION_DEFAULTS, *GLOBAL_DEFAULTS]
    for row in SETTINGS:
        assert row.doc.strip() and "\n" not in row.doc, row.key
        assert row.key == PREFIX + row.name.upper()
        assert row.topic in TOPICS
    # The only attribute named apart from its key.
    assert {row.attribute for row in SETTINGS if row.attribute != row.name} == {"identifier"}


def test_apply_defaults_gives_load_settings_nothing_to_add() -> None:
    config: dict[str, t.Any] = {**BASE}
    apply_defaults(config)
    assert set(config) == {row.key for row in SETTINGS}
    assert load_settings(config) == load()


# --- config_from_env -----------------------------------------------------------------


def test_config_from_env_parses_every_known_variable() -> None:
    environ = {PREFIX + name.upper(): text for name, (text, _) in TEXT_VALUES.items()}
    environ.update(WECHAT_QR_APP_ID=f" {APP_ID} ", WECHAT_QR_APP_SECRET=APP_SECRET,
                   WECHAT_QR_CALLBACK_URL="", WECHAT_QR_LANG="  ",
                   WECHAT_QR_TEST_DATABASE_URL="postgresql://x", PATH="/bin", HOME="/root")
    config = config_from_env(environ, on_unknown=pytest.fail)
    assert config["WECHAT_QR_LOGIN_ONLY"] is True
    assert config["WECHAT_QR_STATE_TTL"] == 300
    assert config["WECHAT_QR_HTTP_TIMEOUT"] == 2.5
    assert config["WECHAT_QR_MATCH_FIELDS"] == ("unionid", "email")
    assert config["WECHAT_QR_APP_ID"] == APP_ID
    # Empty variables are unset; other prefixes and the test suite's own are not settings.
    assert set(config) == set(environ) - {"WECHAT_QR_CALLBACK_URL", "WECHAT_QR_LANG",
                                          "WECHAT_QR_TEST_DATABASE_URL", "PATH", "HOME"}
    settings = load_settings(config)
    for name, (_, expected) in TEXT_VALUES.items():
        owner = settings.connections["wechat"] if name in CONNECTION_DEFAULTS else settings
        assert getattr(owner, name) == expected, name


def test_config_from_env_reads_connections_json() -> None:
    config = config_from_env(
        {"WECHAT_QR_CONNECTIONS": f'[{{"app_id": "{APP_ID}", "app_secret": "s"}}]'})
    assert config == {"WECHAT_QR_CONNECTIONS": [{"app_id": APP_ID, "app_secret": "s"}]}


def test_config_from_env_names_unknown_variables(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"WECHAT_QR_APPID": "wx1", "WECHAT_QR_SANDBOX": "on", "WECHAT_QR_NOPE": "1",
               "WECHAT_QR_EMPTY_TYPO": ""}
    unknown: list[str] = []
    assert config_from_env(environ, on_unknown=unknown.append) == {"WECHAT_QR_SANDBOX": True}
    assert unknown == ["WECHAT_QR_APPID", "WECHAT_QR_NOPE"]
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        config_from_env(environ)
    assert "WECHAT_QR_APPID" in caplog.text and "WECHAT_QR_NOPE" in caplog.text


def test_config_from_env_suggests_the_setting_a_typo_means(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="flask_wechat_qr"):
        config_from_env({"WECHAT_QR_APPID": "wx1", "WECHAT_QR_SANDOX": "on"})
    assert "WECHAT_QR_APPID: no such setting (did you mean WECHAT_QR_APP_ID?)" in caplog.text
    assert "did you mean WECHAT_QR_SANDBOX?" in caplog.text


@pytest.mark.parametrize("name, text", [("WECHAT_QR_LOGIN_ONLY", "maybe"),
                                        ("WECHAT_QR_SANDBOX", "flase"),
                                        ("WECHAT_QR_HTTP_TIMEOUT", "soon"),
                                        ("WECHAT_QR_CONNECTIONS", "[not json")])
def test_config_from_env_refuses_a_value_that_does_not_parse(name: str, text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        config_from_env({name: text})
    assert info.value.key == name


def test_config_from_env_is_public() -> None:
    assert flask_wechat_qr.config_from_env is config_from_env
    assert "config_from_env" in flask_wechat_qr.__all__


# --- the Official Account (logins inside WeChat) ---------------------------------------

OA_APP_ID = "wxfedcba9876543210"


def test_an_official_account_is_optional_and_needs_both_keys() -> None:
    conn = load().connections["wechat"]
    assert (conn.oa_app_id, conn.oa_scope, conn.oa_verify_file) == ("", "snsapi_userinfo", None)
    assert not conn.has_official_account
    half = load(WECHAT_QR_OA_APP_ID=OA_APP_ID).connections["wechat"]
    assert not half.has_official_account
    both = load(WECHAT_QR_OA_APP_ID=OA_APP_ID, WECHAT_QR_OA_APP_SECRET="s").connections["wechat"]
    assert both.has_official_account
    assert "'s'" not in repr(both)  # the secret stays out of repr
    listed = load_settings({"WECHAT_QR_CONNECTIONS": [
        {"app_id": APP_ID, "app_secret": APP_SECRET, "oa_app_id": OA_APP_ID,
         "oa_app_secret": "s", "oa_scope": "snsapi_base"}]}).connections["wechat"]
    assert listed.has_official_account and listed.oa_scope == "snsapi_base"


def test_the_official_accounts_app_id_is_checked_like_the_websites() -> None:
    error = refused({**BASE, "WECHAT_QR_OA_APP_ID": "gh_5f3d2e1c0b9a",
                     "WECHAT_QR_OA_APP_SECRET": "s"}, "WECHAT_QR_OA_APP_ID", "服务号")
    assert "'wx' and 16 hexadecimal digits" in error.problem
    refused({**BASE, "WECHAT_QR_OA_APP_ID": SANDBOX_OA_APP_ID, "WECHAT_QR_OA_APP_SECRET": "s"},
            "WECHAT_QR_OA_APP_ID", "WECHAT_QR_SANDBOX")


def test_the_website_apps_app_id_is_not_an_official_account() -> None:
    error = refused({**BASE, "WECHAT_QR_OA_APP_ID": APP_ID, "WECHAT_QR_OA_APP_SECRET": "s"},
                    "WECHAT_QR_OA_APP_ID", "服务号")
    assert "website application's AppID" in error.problem


@pytest.mark.parametrize("scope", ["snsapi_login", "snsapi_userinfo,snsapi_base", "base"])
def test_an_unknown_official_account_scope_is_refused(scope: str) -> None:
    refused({**BASE, "WECHAT_QR_OA_SCOPE": scope}, "WECHAT_QR_OA_SCOPE", "snsapi_base")


@pytest.mark.parametrize("value", [
    "MP_verify_AbC.txt", "verify.txt=abc", "MP_verify_AbC.txt=", "MP_verify_../x.txt=abc",
    "MP_verify_AbC.txt=a b", "MP_verify_AbC.html=abc", "MP_verify_AbC.txt=<script>"])
def test_a_verify_file_that_is_not_name_equals_content_is_refused(value: str) -> None:
    refused({**BASE, "WECHAT_QR_OA_VERIFY_FILE": value}, "WECHAT_QR_OA_VERIFY_FILE",
            "MP_verify_AbC123.txt=AbC123")


def test_the_sandbox_gives_an_official_account_too() -> None:
    conn = load_settings({"WECHAT_QR_SANDBOX": "true"}).connections["wechat"]
    assert (conn.oa_app_id, conn.oa_app_secret) == (SANDBOX_OA_APP_ID, SANDBOX_OA_APP_SECRET)
    own = load_settings({"WECHAT_QR_SANDBOX": "true", "WECHAT_QR_OA_APP_ID": OA_APP_ID}
                        ).connections["wechat"]
    assert (own.oa_app_id, own.has_official_account) == (OA_APP_ID, False)
    assert not load_settings({}).connections["wechat"].oa_app_id


def test_other_login_url_is_a_path_or_a_url() -> None:
    assert load(WECHAT_QR_OTHER_LOGIN_URL="https://id.example.com/login"
                ).other_login_url == "https://id.example.com/login"
    refused({**BASE, "WECHAT_QR_OTHER_LOGIN_URL": "javascript:alert(1)"},
            "WECHAT_QR_OTHER_LOGIN_URL", "/login")
