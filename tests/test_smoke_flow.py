from support import NICKNAME, finish_login, start_login


def test_first_login_creates_user_and_logs_in(client, wechat_api):
    state = start_login(client, next="/account")
    wechat_api.token()
    wechat_api.userinfo()
    resp = finish_login(client, state)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/account"
    assert client.get("/").get_data(as_text=True).endswith(NICKNAME)
