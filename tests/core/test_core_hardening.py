"""core pieces of issue 20: the rate-limit key of a client address, the public rate limit itself, private
directories and the SQLite control plane's file modes."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from controlplane import dispose_engine, get_engine, upgrade
from core.files import private_dir
from core.ratelimit import PublicRateLimit, client_key


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_client_key_groups_ipv6_by_64():
    assert client_key("203.0.113.7") == "203.0.113.7"
    a, b = client_key("2001:db8:1:2:aaaa::1"), client_key("2001:db8:1:2:ffff:1:2:3")
    assert a == b == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != a
    assert client_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert client_key(None) == "unknown" and client_key("not an ip" * 20) == ("not an ip" * 20)[:64]


def test_public_rate_limit_per_client_and_scope():
    lim = PublicRateLimit("3/minute")
    assert [lim.check("verify", "192.0.2.1") for _ in range(3)] == [None, None, None]
    wait = lim.check("verify", "192.0.2.1")
    assert wait is not None and 1 <= wait <= 60
    assert lim.check("verify", "192.0.2.2") is None  # another client
    assert lim.check("public-key", "192.0.2.1") is None  # another route
    for i in range(3):  # a rotating IPv6 address inside one /64 is one client
        lim.check("verify", f"2001:db8::{i + 1}")
    assert lim.check("verify", "2001:db8::ffff") is not None


def test_bad_rate_limit_notation_is_a_settings_error():
    from pydantic import ValidationError

    from core.settings import load_settings

    with pytest.raises(ValidationError):
        load_settings({"JOULESTREAM_PUBLIC_RATE_LIMIT": "lots"})


def test_private_dir_tightens_ours_but_not_shared_dirs(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    private_dir(home)
    assert mode(home) == 0o700
    sticky = tmp_path / "shared"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    private_dir(sticky)
    assert mode(sticky) == 0o1777  # like /tmp: left alone
    new = tmp_path / "a" / "b"
    private_dir(new)
    assert mode(new) == 0o700


def test_sqlite_control_plane_files_are_private(tmp_path):
    path = tmp_path / "cp" / "control.db"
    path.parent.mkdir()
    # a database (and WAL) an older version left world-readable
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    for p in path.parent.iterdir():
        os.chmod(p, 0o644)
    url = f"sqlite:///{path}"
    try:
        upgrade(get_engine(url))
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        assert files["control.db"] == 0o600
        assert all(m == 0o600 for m in files.values()), files
    finally:
        con.close()
        dispose_engine(url)
