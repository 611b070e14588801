"""Safe by default: loopback without a password, refusal elsewhere (exit 2), login and cookie flags,
bearer tokens, CSRF (Origin) checks, the Host check, throttling, headers, and the password never
logged, echoed or shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from stream.cli import main
from stream.config import WebConfig, is_loopback, parse_config, to_masked_yaml
from stream.errors import UserError
from stream.web.auth import LoginThrottle, PasswordCheck, Sessions, check_exposure, same_origin
from stream.web.serve import check_web, parse_web_address, web_config
from tests.fakes import RecordingLogHandler
from tests.web.conftest import BASE, CHEAP_HASHER, PASSWORD, Site, jpeg_bytes, login

FOREIGN = "https://evil.example"

# ---------------------------------------------------------------- exposure


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_needs_no_password(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, has_password=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "10.0.0.1"])
def test_any_other_address_needs_a_password(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UserError, match=rf"^web\.host {host}: set web\.password"):
        check_exposure(host, has_password=False)
    check_exposure(host, has_password=True)


def test_serve_refuses_a_public_address_without_a_password_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One error line, exit 2, before anything heavy is loaded (these run in-process in a second)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web:\n  host: 0.0.0.0\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: web.host 0.0.0.0: set web.password")
    cfg.write_text("outputs:\n  dir: rec\n")
    assert main(["serve", "--config", str(cfg), "--web", "0.0.0.0:8080"]) == 2
    assert main(["run", "--config", str(cfg), "--web", "[::]:8080"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --web 0.0.0.0: set web.password") and err[1].startswith("error: --web ::: set")
    assert main(["serve", "--config", str(cfg), "--web", "nonsense"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_a_password_from_the_environment_allows_a_public_address(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("web:\n  host: 0.0.0.0\n  password: ${WEB_PASSWORD}\n")
    from stream.config import load_config

    config = load_config(cfg, environ={"WEB_PASSWORD": PASSWORD})
    check_web(config.web)
    assert config.web.password is not None and config.web.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(config) and PASSWORD not in str(config.web)
    assert PASSWORD not in to_masked_yaml(config) and "password: '**********'" in to_masked_yaml(config)


def test_web_address_option() -> None:
    assert parse_web_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_web_address("[::1]:8080") == ("::1", 8080)
    assert parse_web_address("8081") == (None, 8081)
    assert parse_web_address(":8082") == (None, 8082)
    for bad in ("host", "1.2.3.4:99999", "a:b:c", ""):
        with pytest.raises(UserError, match="--web"):
            parse_web_address(bad)
    config = parse_config("web:\n  host: 127.0.0.1\n  port: 1234\n  live_fps: 5\n")
    web = web_config(config, "9000")
    assert (web.host, web.port, web.live_fps) == ("127.0.0.1", 9000, 5.0)
    with pytest.raises(UserError, match="--web bad host:80"):
        web_config(config, "bad host:80")


def test_weak_or_malformed_passwords_are_config_errors_that_do_not_echo_them() -> None:
    from stream.config import ConfigError

    with pytest.raises(ConfigError, match=r"web\.password: must be at least 8") as short:
        parse_config("web:\n  password: abc1234\n")
    assert "abc1234" not in str(short.value)
    with pytest.raises(ConfigError) as number:
        parse_config("web:\n  password: 98765432109\n")
    assert "98765432109" not in str(number.value)
    assert isinstance(WebConfig().port, int)


# ---------------------------------------------------------------- the password, sessions, throttle


def test_the_password_is_kept_only_as_an_argon2_hash() -> None:
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    assert check.verify(PASSWORD) and not check.verify("wrong") and not check.verify("")
    assert PASSWORD not in repr(vars(check))
    stored = vars(check)["_hash"]
    assert stored.startswith("$argon2id$")
    again = PasswordCheck.from_secret(stored, CHEAP_HASHER)  # a configured hash is used as is
    assert again.verify(PASSWORD)
    with pytest.raises(UserError, match="argon2 hash"):
        PasswordCheck.from_secret("$argon2id$garbage", CHEAP_HASHER)


def test_sessions_expire_and_are_revoked() -> None:
    now = [1000.0]
    sessions = Sessions(ttl_s=60, clock=lambda: now[0])
    s = sessions.issue()
    assert len(s.token) >= 43 and sessions.valid(s.token) and not sessions.valid("x" * 43) and not sessions.valid(None)
    now[0] += 61
    assert not sessions.valid(s.token)
    t = sessions.issue()
    sessions.revoke(t.token)
    assert not sessions.valid(t.token)


def test_login_throttle() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.blocked("1.2.3.4")
        throttle.failed("1.2.3.4")
    assert throttle.blocked("1.2.3.4") and not throttle.blocked("5.6.7.8")
    now[0] += 61
    assert not throttle.blocked("1.2.3.4")


@pytest.mark.parametrize(
    ("origin", "referer", "expected"),
    [
        ("http://127.0.0.1:8080", None, True),
        ("https://127.0.0.1:8080", None, True),  # a TLS proxy in front: the scheme differs, the host does not
        ("http://127.0.0.1", None, False),
        ("http://127.0.0.1:9090", None, False),
        (None, "http://127.0.0.1:8080/events?x=1", True),
        ("https://evil.example", "http://127.0.0.1:8080/", False),
        ("null", None, False),
        (None, None, None),
        ("http://127.0.0.1:8080.evil.example", None, False),
        ("http://user@127.0.0.1:8080", None, True),
    ],
)
def test_same_origin(origin: str | None, referer: str | None, expected: bool | None) -> None:
    assert same_origin(origin, referer, "127.0.0.1:8080") is expected


def test_same_origin_default_ports_and_ipv6() -> None:
    assert same_origin("https://cams.example", None, "cams.example")
    assert same_origin("https://cams.example", None, "cams.example:443")
    assert not same_origin("https://cams.example.evil", None, "cams.example")
    assert same_origin("http://[::1]:8080", None, "[::1]:8080")
    assert not same_origin("http://[::1]:8081", None, "[::1]:8080")


# ---------------------------------------------------------------- without a password


def test_no_password_cross_site_posts_are_refused(client: TestClient) -> None:
    upload = {"file": ("x.jpg", jpeg_bytes(), "image/jpeg")}
    assert client.post("/api/identify", files=upload, headers={"Origin": FOREIGN}).status_code == 403
    assert client.post("/api/identify", files=upload, headers={"Referer": FOREIGN + "/page"}).status_code == 403
    assert client.post("/api/identify", files=upload, headers={"Origin": BASE}).status_code == 200
    assert client.post("/api/identify", files=upload).status_code == 200  # curl, scripts: no Origin


def test_loopback_only_hosts_refuse_other_host_names(site: Site) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 sends Host: evil.example."""
    with site.client(loopback_only_hosts=True) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"Host": "evil.example:8080"}).status_code == 421
        assert c.get("/api/health", headers={"Host": "localhost:8080"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "[::1]:8080"}).status_code == 200


def test_security_headers(client: TestClient) -> None:
    for path in ("/", "/api/health", "/events"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert client.get("/api/streams").headers["cache-control"] == "no-store"


# ---------------------------------------------------------------- with a password


@pytest.mark.parametrize(
    "path",
    [
        "/api/streams",
        "/api/events",
        "/api/events/1",
        "/api/events/1/snapshot",
        "/api/events/stream",
        "/api/snapshots/cam_e0_t1.jpg",
        "/streams/cam/live.mjpeg",
        "/streams/cam/latest.jpg",
        "/metrics",
        "/openapi.json",
    ],
)
def test_anonymous_api_requests_get_401(secured: TestClient, path: str) -> None:
    r = secured.get(path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer") and "login" in r.json()["error"]


@pytest.mark.parametrize("path", ["/", "/events?person=alice", "/docs"])
def test_anonymous_page_visits_go_to_the_login_page(secured: TestClient, path: str) -> None:
    r = secured.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2F")
    page = secured.get(path)
    assert page.status_code == 200 and 'type="password"' in page.text and "data-stream" not in page.text


def test_public_paths_with_a_password(secured: TestClient) -> None:
    assert secured.get("/api/health").status_code == 200
    assert secured.get("/static/style.css").status_code == 200
    assert secured.get("/login").status_code == 200
    r = secured.post("/api/identify", files={"file": ("x.jpg", jpeg_bytes(), "image/jpeg")})
    assert r.status_code == 401


def test_login_sets_a_strict_httponly_session_cookie(secured: TestClient) -> None:
    wrong = secured.post("/login", data={"password": "nope-nope"}, headers={"Origin": BASE}, follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers and "wrong password" in wrong.text
    r = secured.post(
        "/login", data={"password": PASSWORD, "next": "/events"}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/events"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("adaface_session=")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= flags and "samesite=strict" in cookie.lower()
    assert "secure" not in flags  # plain http on loopback; https would add it
    assert secured.get("/").status_code == 200
    assert secured.get("/api/streams").status_code == 200
    logout = secured.post("/logout", headers={"Origin": BASE}, follow_redirects=False)
    assert logout.status_code == 303
    assert secured.get("/api/streams").status_code == 401


def test_login_redirects_only_to_local_paths(secured: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)"):
        r = secured.post(
            "/login", data={"password": PASSWORD, "next": target}, headers={"Origin": BASE}, follow_redirects=False
        )
        assert r.headers["location"] == "/", target


def test_cookie_authenticated_posts_need_a_same_origin_request(secured: TestClient) -> None:
    login(secured)
    upload = {"file": ("x.jpg", jpeg_bytes(), "image/jpeg")}
    assert secured.post("/api/identify", files=upload, headers={"Origin": FOREIGN}).status_code == 403
    assert secured.post("/api/identify", files=upload).status_code == 403  # neither Origin nor Referer
    assert secured.post("/api/identify", files=upload, headers={"Origin": BASE}).status_code == 200
    assert secured.post("/api/identify", files=upload, headers={"Referer": BASE + "/"}).status_code == 200


def test_a_login_from_another_site_is_refused(secured: TestClient) -> None:
    r = secured.post("/login", data={"password": PASSWORD}, headers={"Origin": FOREIGN}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_bearer_tokens_for_the_api(site: Site) -> None:
    check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
    with site.client(password=check) as c:
        assert c.post("/api/token", data={"password": "wrong-wrong"}).status_code == 401
        r = c.post("/api/token", data={"password": PASSWORD})
        assert r.status_code == 200 and r.json()["token_type"] == "bearer"
        token = r.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/streams", headers=auth).status_code == 200
        assert c.get("/metrics", headers=auth).status_code == 200
        upload = {"file": ("x.jpg", jpeg_bytes(), "image/jpeg")}
        assert c.post("/api/identify", files=upload, headers=auth).status_code == 200  # no Origin needed
        assert c.get("/api/streams", headers={"Authorization": "Bearer " + "x" * 43}).status_code == 401
        assert c.get("/api/streams", headers={"Authorization": f"Basic {token}"}).status_code == 401
        assert "set-cookie" not in r.headers


def test_wrong_passwords_are_throttled(secured: TestClient) -> None:
    for _ in range(5):
        assert secured.post("/api/token", data={"password": "guess-guess"}).status_code == 401
    assert secured.post("/api/token", data={"password": PASSWORD}).status_code == 429
    r = secured.post("/login", data={"password": PASSWORD}, headers={"Origin": BASE}, follow_redirects=False)
    assert r.status_code == 429 and "set-cookie" not in r.headers


def test_the_password_is_never_logged_or_echoed(site: Site) -> None:
    handler = RecordingLogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    bodies: list[str] = []
    try:
        check = PasswordCheck.from_secret(PASSWORD, CHEAP_HASHER)
        with site.client(password=check) as c:
            for password in (PASSWORD + "x", PASSWORD):
                for path, headers in (("/login", {"Origin": BASE}), ("/api/token", {})):
                    r = c.post(path, data={"password": password}, headers=headers)
                    bodies.append(r.text + str(r.headers))
            for path in ("/", "/docs", "/events", "/api/streams", "/openapi.json", "/login"):
                bodies.append(c.get(path).text)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert any("wrong password" in m for m in handler.messages)  # failures are logged...
    for text in handler.messages + bodies:
        assert PASSWORD not in text  # ...never the password, right or wrong
