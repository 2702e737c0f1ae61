"""Everything sessions and rate limits store stays inside the deployment prefix: an ACL user
confined to ``~<prefix>::*`` can run all of it."""

from __future__ import annotations

import secrets
from typing import Any

from chatscale.ratelimit import RateLimits
from chatscale.redis import connect
from chatscale.sessions import create_session_manager
from tests.conftest import redis_config


async def test_acl_confined_user_runs_sessions_and_limits(redis_acl: Any) -> None:
    overrides: dict[str, Any] = {
        "redis_username": redis_acl.acl_user,
        "redis_password": redis_acl.acl_password,
        "session_secret": "a" * 40,
        "chat_rate_limit": "2/minute",
        "ban_violation_limit": 2,
        "chat_concurrency_limit": 1,
    }
    config = redis_config(redis_acl.url(), prefix=redis_acl.acl_prefix, **overrides)
    from chatscale.config import load_settings

    settings = load_settings(
        use_redis=True,
        redis_uri=redis_acl.url(),
        redis_key_prefix=redis_acl.acl_prefix,
        **overrides,
    )
    conn = await connect(config)
    limits = await RateLimits.create(settings, conn)
    try:
        user = "user:" + secrets.token_hex(6)
        assert [(await limits.chat.limiter.hit(user)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        await limits.bans.violation(user)
        assert (await limits.bans.violation(user)).banned_for == settings.ban_duration
        assert await limits.bans.ban_left(user) > 0
        async with limits.generation(user) as lease:
            assert lease.running == 1
        manager = create_session_manager(settings, conn)
        opened = await manager.open([])
        opened.session["k"] = "v"
        assert await manager.commit(opened, secure=True)
        assert await manager.store.load(opened.session.id_hash) is not None
    finally:
        await limits.aclose()
        await conn.close()
