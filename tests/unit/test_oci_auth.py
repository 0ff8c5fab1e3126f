"""Registry credentials from DD_APM_REGISTRY_AUTH_<n>, and WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from csi_driver.oci.auth import Credentials, TokenCache, parse_challenges


def _config(auths: dict[str, object]) -> str:
    return json.dumps({"auths": auths})


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_logins_are_matched_by_registry_host() -> None:
    credentials = Credentials.from_environ({
        "DD_APM_REGISTRY_AUTH_0": _config({"gcr.io": _auth("_json_key", "p:with:colons")}),
        "DD_APM_REGISTRY_AUTH_1": _config({"https://registry.example.com:5000/v2/":
                                           {"username": "u", "password": "p"}}),
        "OTHER": _config({"quay.io": _auth("x", "y")}),
    })
    gcr = credentials.login_for("gcr.io")
    assert gcr is not None and (gcr.username, gcr.password, gcr.source) == ("_json_key", "p:with:colons",
                                                                            "DD_APM_REGISTRY_AUTH_0")
    example = credentials.login_for("registry.example.com:5000")
    assert example is not None and (example.username, example.password) == ("u", "p")
    assert credentials.login_for("quay.io") is None
    assert credentials.login_for("registry.example.com") is None  # another port is another registry
    assert credentials.registries == ("gcr.io", "registry.example.com:5000")


def test_docker_hub_names_are_one_registry() -> None:
    credentials = Credentials.from_environ({"DD_APM_REGISTRY_AUTH_0": _config({"https://index.docker.io/v1/":
                                                                               _auth("u", "p")})})
    assert credentials.login_for("docker.io") is not None
    assert credentials.login_for("registry-1.docker.io") is not None


def test_the_lowest_numbered_variable_wins_for_a_host() -> None:
    credentials = Credentials.from_environ({
        "DD_APM_REGISTRY_AUTH_10": _config({"gcr.io": _auth("ten", "p")}),
        "DD_APM_REGISTRY_AUTH_2": _config({"gcr.io": _auth("two", "p")}),
    })
    login = credentials.login_for("gcr.io")
    assert login is not None and login.username == "two"


@pytest.mark.parametrize(("value", "problem"), [
    ("not json", "is not JSON"),
    ('{"gcr.io": {}}', "has no 'auths' object"),
    (_config({"gcr.io": "text"}), "is not an object"),
    (_config({"gcr.io": {"auth": "%%%"}}), "is not base64"),
    (_config({"gcr.io": {"auth": base64.b64encode(b"nocolon").decode()}}), "no username:password"),
    (_config({"gcr.io": {"identitytoken": "t"}}), "identity token"),
    (_config({"gcr.io": {"username": "u"}}), "no credentials"),
])
def test_unusable_variables_are_reported_without_their_secrets(value: str, problem: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        credentials = Credentials.from_environ({"DD_APM_REGISTRY_AUTH_0": value,
                                                "DD_APM_REGISTRY_AUTH_1": _config({"quay.io": _auth("u", "p")})})
    assert len(credentials.problems) == 1 and problem in credentials.problems[0]
    assert "DD_APM_REGISTRY_AUTH_0" in credentials.problems[0]
    assert credentials.login_for("quay.io") is not None  # the good variable still counts
    assert "%%%" not in caplog.text and "nocolon" not in caplog.text


def test_empty_variables_are_absent_optional_secrets() -> None:
    credentials = Credentials.from_environ({"DD_APM_REGISTRY_AUTH_0": ""})
    assert credentials.problems == () and credentials.registries == ()


def test_passwords_never_show_in_representations() -> None:
    credentials = Credentials.from_environ({"DD_APM_REGISTRY_AUTH_0": _config({"gcr.io": _auth("u", "s3cret")})})
    assert "s3cret" not in repr(credentials) and "s3cret" not in repr(credentials.login_for("gcr.io"))


def test_bearer_challenge_parameters() -> None:
    [challenge] = parse_challenges(['Bearer realm="https://auth.example.com/token",service="registry.example.com",'
                                    'scope="repository:a/b:pull,push"'])
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {"realm": "https://auth.example.com/token", "service": "registry.example.com",
                                      "scope": "repository:a/b:pull,push"}


def test_several_challenges_in_one_or_more_headers() -> None:
    challenges = parse_challenges(['Basic realm="a \\"quoted\\" realm", Bearer realm=https://x/t , error=invalid',
                                   "Negotiate"])
    assert [(c.scheme, dict(c.params)) for c in challenges] == [
        ("basic", {"realm": 'a "quoted" realm'}),
        ("bearer", {"realm": "https://x/t", "error": "invalid"}),
        ("negotiate", {}),
    ]


def test_malformed_challenges_yield_what_can_be_read() -> None:
    assert parse_challenges(["", "=", '"unterminated']) == []
    assert [c.scheme for c in parse_challenges(['Bearer realm="no end'])] == ["bearer"]


def test_token_cache_forgets_refused_and_expired_tokens() -> None:
    cache = TokenCache()
    cache.put(("gcr.io", "a"), "Bearer one", 300)
    assert cache.get(("gcr.io", "a")) == "Bearer one"
    cache.drop(("gcr.io", "a"), "Bearer other")  # replaced meanwhile by another pull: kept
    assert cache.get(("gcr.io", "a")) == "Bearer one"
    cache.drop(("gcr.io", "a"), "Bearer one")
    assert cache.get(("gcr.io", "a")) is None
    cache.put(("gcr.io", "b"), "Bearer short", 5)  # within the safety margin: never served
    assert cache.get(("gcr.io", "b")) is None
