"""Role tokens: from settings and from a tokens file that is re-read when it changes (rotation
without a restart), looked up by fingerprint; what each role may do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from orderwatch.errors import ConfigError
from orderwatch.streams.console.access import ROLES, TokenRegistry, bearer_token, fingerprint
from orderwatch.streams.settings import Settings


def _write(path: Path, body: str, *, bump: int = 0) -> None:
    path.write_text(body)
    # a rewrite within the same clock tick must still be seen as a change
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000))


def _entry(name: str, roles: str, token: str) -> str:
    return f'[[tokens]]\nname = "{name}"\nroles = [{roles}]\ntoken = "{token}"\n'


def test_role_tokens_from_settings() -> None:
    reg = TokenRegistry(
        Settings(
            viewer_token=SecretStr("v" * 20),
            operator_token=SecretStr("o" * 20),
            approver_token=SecretStr("a" * 20),
            api_token=SecretStr("x" * 20),
        )
    )
    found = {t: reg.lookup(t * 20) for t in "voax"}
    assert {t: (p.name if p else None) for t, p in found.items()} == {
        "v": "viewer",
        "o": "operator",
        "a": "approver",
        "x": "api",
    }
    assert [found["v"].can(p) for p in ("read", "work", "approve")] == [True, False, False]  # type: ignore[union-attr]
    assert [found["o"].can(p) for p in ("read", "work", "approve")] == [True, True, False]  # type: ignore[union-attr]
    assert [found["a"].can(p) for p in ("read", "work", "approve")] == [True, False, True]  # type: ignore[union-attr]
    assert [found["x"].can(p) for p in ("read", "work", "approve")] == [True, True, True]  # type: ignore[union-attr]
    assert reg.lookup("v" * 19) is None
    assert reg.lookup("") is None
    assert reg.lookup("v" * 100_000) is None  # refused before hashing
    assert not TokenRegistry(Settings()).configured


def test_a_tokens_file_rotates_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    old, new = "old-token-" + "1" * 20, "new-token-" + "2" * 20
    _write(
        path,
        _entry("ana", '"operator"', old)
        + '[[tokens]]\nname = "lee"\nroles = ["approver", "viewer"]\n'
        + f'sha256 = "{fingerprint("lee-secret-0123456789")}"\n',
    )
    reg = TokenRegistry(Settings(tokens_file=str(path)))
    ana = reg.lookup(old)
    assert ana is not None and (ana.name, ana.roles) == ("ana", frozenset({"operator"}))
    lee = reg.lookup("lee-secret-0123456789")
    assert lee is not None and lee.roles == frozenset({"approver", "viewer"})
    assert reg.by_fingerprint(ana.fingerprint) == ana

    _write(path, _entry("ana", '"operator"', new), bump=5)
    assert reg.lookup(old) is None
    assert reg.lookup(new) is not None
    assert reg.by_fingerprint(ana.fingerprint) is None  # a session opened with the old token ends
    assert reg.lookup("lee-secret-0123456789") is None

    # a broken edit keeps the last good tokens (and the worker running)
    _write(path, "[[tokens]\nname = ", bump=10)
    assert reg.lookup(new) is not None
    _write(path, _entry("ana", '"root"', new), bump=15)
    assert reg.lookup(new) is not None
    path.unlink()
    assert reg.lookup(new) is not None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[[tokens]\n", "tokens file"),
        (_entry("a b", '"viewer"', "t" * 20), "name: expected 1 to 64"),
        (_entry("ana", '"root"', "t" * 20), "roles: expected a non-empty list of viewer, operator, approver"),
        (_entry("ana", "", "t" * 20), "roles"),
        (_entry("ana", '"viewer"', "short"), "token (16 to 512 characters)"),
        ('[[tokens]]\nname = "ana"\nroles = ["viewer"]\nsha256 = "xyz"\n', "sha256 (64 hex digits)"),
        ('[[tokens]]\nname = "ana"\nroles = ["viewer"]\npassword = "x"\n', "expected the keys"),
        ("[users]\nx = 1\n", "expected only [[tokens]]"),
    ],
)
def test_a_wrong_tokens_file_stops_start_up_with_a_message(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        TokenRegistry(Settings(tokens_file=str(path)))
    assert expected in str(err.value)
    assert str(path) in str(err.value)
    assert "t" * 20 not in str(err.value)


def test_a_missing_tokens_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        TokenRegistry(Settings(tokens_file=str(tmp_path / "nope.toml")))


def test_every_role_reads() -> None:
    assert all("read" in perms for perms in ROLES.values())


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""), ("Bearer", ""), ("", ""), ("abc", "")],
)
def test_the_bearer_token_of_an_authorization_header(header: str, token: str) -> None:
    assert bearer_token({"Authorization": header} if header else {}) == token
