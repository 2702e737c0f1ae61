"""The web page in headless Chromium: an answer survives a cut connection, exactly once,
and another tab shows the answer this one started."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatscale.config import load_settings
from tests.server.helpers import ServerThread, expected
from tests.server.procs import ServeProcess
from tests.server.rig import SECRET
from tests.server.tcp_proxy import CuttableProxy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKENS = 60


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="playwright is not installed (dev extra)"
    )
    async with playwright_api.async_playwright() as playwright:
        try:
            launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:
            pytest.skip(f"chromium cannot be started ({CHROMIUM}): {exc}")
        try:
            yield launched
        finally:
            await launched.close()


async def _answer(page: Any) -> Any:
    return page.locator(".msg.assistant").last


async def test_answer_survives_a_cut_connection_exactly_once(browser: Any) -> None:
    settings = load_settings(demo_tokens_per_second=20, demo_response_tokens=TOKENS)
    with ServerThread(settings) as server:
        proxy = await CuttableProxy(server.port).start()
        try:
            context = await browser.new_context()
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{proxy.port}/")
            await page.fill("#input", "hello browser")
            await page.press("#input", "Enter")
            answer = await _answer(page)
            # Wait for part of the answer, then drop every connection twice.
            for _ in range(2):
                await page.wait_for_function(
                    "n => (document.querySelector('.msg.assistant .text')?.textContent"
                    " || '').split(' ').length > n",
                    arg=10 + 15 * proxy.cuts,
                    timeout=10_000,
                )
                proxy.cut()
            await page.wait_for_selector(".msg.assistant[data-status='done']", timeout=20_000)
            shown = await answer.locator(".text").text_content()
            assert shown == expected("hello browser", TOKENS)
            assert await page.locator(".msg.assistant").count() == 1
            assert errors == []
            # The conversation is listed and reloads from the server identically.
            await page.reload()
            await page.wait_for_selector(".msg.assistant[data-status='done']", timeout=10_000)
            reloaded = await page.locator(".msg.assistant .text").last.text_content()
            assert reloaded == shown
            assert await page.locator("#conversations li").count() == 1
            await context.close()
        finally:
            await proxy.close()


async def test_another_tab_shows_the_answer_this_one_started(browser: Any) -> None:
    settings = load_settings(demo_tokens_per_second=40, demo_response_tokens=TOKENS)
    with ServerThread(settings) as server:
        context = await browser.new_context()  # one context: one session cookie
        first = await context.new_page()
        await first.goto(server.url + "/")
        second = await context.new_page()
        await second.goto(server.url + "/")
        await asyncio.sleep(0.3)  # the second tab's event feed is open
        await first.fill("#input", "two tabs")
        await first.press("#input", "Enter")
        for page in (first, second):
            await page.wait_for_selector(".msg.assistant[data-status='done']", timeout=20_000)
            text = await page.locator(".msg.assistant .text").last.text_content()
            assert text == expected("two tabs", TOKENS)
            assert await page.locator(".msg.assistant").count() == 1
        await context.close()


@pytest.mark.slow
async def test_answer_survives_a_server_restart(
    browser: Any, redis_standalone: Any, tmp_path: Any
) -> None:
    env = {
        "USE_REDIS": "true",
        "REDIS_URI": redis_standalone.url(),
        "REDIS_KEY_PREFIX": f"b{id(tmp_path) % 10**8}",
        "SESSION_SECRET": SECRET,
        "STREAM_LEASE_TTL": "1500",
        "DEMO_TOKENS_PER_SECOND": "20",
        "DEMO_RESPONSE_TOKENS": str(TOKENS),
    }
    server = ServeProcess(env, tmp_path / "serve.log")
    await asyncio.to_thread(server.start)
    try:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(server.url + "/")
        await page.fill("#input", "restart me")
        await page.press("#input", "Enter")
        await page.wait_for_function(
            "() => (document.querySelector('.msg.assistant .text')?.textContent"
            " || '').split(' ').length > 10",
            timeout=10_000,
        )
        server.kill()  # SIGKILL mid-answer: nothing is drained or handed over
        await asyncio.to_thread(server.start)  # the same port; it takes the job over
        await page.wait_for_selector(".msg.assistant[data-status='done']", timeout=30_000)
        shown = await page.locator(".msg.assistant .text").last.text_content()
        assert shown == expected("restart me", TOKENS)
        assert await page.locator(".msg.assistant").count() == 1
        await context.close()
    finally:
        server.kill()


@pytest.mark.slow
async def test_running_answer_survives_an_emptied_redis(
    browser: Any, standalone_factory: Any
) -> None:
    redis = standalone_factory()  # this test's own Redis: FLUSHALL touches nothing else
    settings = load_settings(
        use_redis=True,
        redis_uri=redis.url(),
        session_secret=SECRET,
        demo_tokens_per_second=20,
        demo_response_tokens=TOKENS,
    )
    with ServerThread(settings) as server:
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.url + "/")
        await page.fill("#input", "forget me not")
        await page.press("#input", "Enter")
        await page.wait_for_function(
            "() => (document.querySelector('.msg.assistant .text')?.textContent"
            " || '').split(' ').length > 10",
            timeout=10_000,
        )
        assert (await asyncio.to_thread(redis.cli, "FLUSHALL")).strip() == "OK"
        # The reload's session and conversation are gone; the tab's resume token is not.
        await page.reload()
        await page.wait_for_selector(".msg.assistant[data-status='done']", timeout=30_000)
        shown = await page.locator(".msg.assistant .text").last.text_content()
        assert shown == expected("forget me not", TOKENS)
        assert await page.locator(".msg.assistant").count() == 1
        assert await page.locator(".msg.user .text").all_text_contents() == ["forget me not"]
        assert "lost this conversation's history" in (await page.text_content("#banner") or "")
        # Sending on: the lost conversation's id now answers 404 (chatscale never creates a
        # conversation under a given id), so the page starts a new conversation.
        await page.fill("#input", "still there?")
        await page.press("#input", "Enter")
        await page.wait_for_function(
            "() => document.querySelectorAll(\".msg.assistant[data-status='done']\").length == 2",
            timeout=30_000,
        )
        assert await page.locator(".msg.assistant .note").all_text_contents() == []
        assert errors == []
        await context.close()


async def test_page_works_under_its_content_security_policy(browser: Any) -> None:
    settings = load_settings(demo_tokens_per_second=200, demo_response_tokens=10)
    with ServerThread(settings) as server:
        context = await browser.new_context()
        page = await context.new_page()
        violations: list[str] = []
        page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text
                else None
            ),
        )
        await page.add_init_script(
            "document.addEventListener('securitypolicyviolation',"
            " e => console.error('Content Security Policy: ' + e.violatedDirective))"
        )
        response = await page.goto(f"{server.url}/")
        assert response is not None
        assert "script-src 'self'" in (await response.all_headers())["content-security-policy"]
        await page.fill("#input", "hello policy")
        await page.press("#input", "Enter")
        # A selector wait, not wait_for_function: that one polls with eval in the page,
        # which the policy itself forbids once the first check does not succeed at once.
        await page.wait_for_selector(".msg.assistant .text:not(:empty)", timeout=15_000)
        await context.close()
    assert violations == []
