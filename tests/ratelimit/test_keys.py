"""The rate-limit keys: one hash slot per identity, untrusted ids escaped."""

from __future__ import annotations

from redis.crc import key_slot

from chatscale.redis.keys import KeySpace


def test_a_users_limit_keys_share_one_slot() -> None:
    keys = KeySpace("app")
    for user in ["alice", "anon-x_Y", "ip:10.0.0.1", "{evil}:*"]:
        names = [keys.concurrency(user), keys.violations(user), keys.ban(user)]
        assert len({key_slot(n.encode()) for n in names}) == 1
        assert all(n.startswith("app::conc:{") for n in names)
    assert keys.ban("{evil}:*") == "app::conc:{%7Bevil%7D%3A%2A}:ban"
    assert keys.violations("u") == "app::conc:{u}:violations"
