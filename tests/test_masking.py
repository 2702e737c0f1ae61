"""Credentials never appear in what chatscale prints or logs (chatscale.masking)."""

from __future__ import annotations

import io
import logging

import pytest

from chatscale.masking import install_log_masking, mask_text, mask_uri

SECRET = "s3cr3t-X"


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (f"redis://u:pa/{SECRET}@h/6", "redis://u:***@h/6"),
        (f"redis://u:p@{SECRET}@h/6", "redis://u:***@h/6"),
        (f"redis://u:{SECRET}#x@h:1", "redis://u:***@h:1"),
        (f"redis://{SECRET}@h:1", "redis://***@h:1"),
        (f"u:{SECRET}@h:6379", "***@h:6379"),
        (
            f"redis://a:{SECRET}@h:1,redis://b:/{SECRET}@h:2",
            "redis://a:***@h:1,redis://b:***@h:2",
        ),
        (f"rediss+sentinel://u:{SECRET}@h1:1,h2:2/m", "rediss+sentinel://u:***@h1:1,h2:2/m"),
        (f"https://key:{SECRET}@api.example/v1", "https://key:***@api.example/v1"),
        ("redis://h:1,redis://h:2", "redis://h:1,redis://h:2"),
    ],
)
def test_mask_uri_hides_every_part_of_the_password(value: str, masked: str) -> None:
    assert mask_uri(value) == masked
    assert SECRET not in mask_uri(value) and "pa/" not in mask_uri(value)


def test_mask_text_masks_urls_inside_sentences_only() -> None:
    line = f"POST http://u:{SECRET}@127.0.0.1:9/v1/chat 'redis://:{SECRET}@h:1' to bob@example"
    assert mask_text(line) == (
        "POST http://u:***@127.0.0.1:9/v1/chat 'redis://:***@h:1' to bob@example"
    )


def test_log_records_are_masked_whatever_the_handler() -> None:
    install_log_masking()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.masking")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("HTTP Request: POST %s", f"http://u:{SECRET}@127.0.0.1:1/v1")
        try:
            raise RuntimeError(f"cannot reach redis://u:{SECRET}@h:1")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    assert "http://u:***@127.0.0.1:1/v1" in output and "RuntimeError" in output
    assert SECRET not in output
