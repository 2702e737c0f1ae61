"""Per-request model options: what the job keeps (a takeover continues with them) and the
request the provider gets."""

from __future__ import annotations

from chatscale.llm import ChatMessage
from chatscale.server.chat import Options


def test_options_survive_the_jobs_metadata_and_build_the_provider_request() -> None:
    options = Options(system="Be brief.", temperature=0.5, max_tokens=12)
    meta = {"conversation_id": "c", "options": options.as_meta()}
    again = Options.from_meta(meta)
    assert again == options
    request = again.request("m", [ChatMessage("user", "hi")], continue_from="Hel")
    assert list(request.messages) == [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi"),
    ]
    assert (request.temperature, request.max_tokens, request.continue_from) == (0.5, 12, "Hel")


def test_no_options_add_nothing_and_malformed_metadata_is_ignored() -> None:
    assert Options().as_meta() == {}
    plain = Options().request("m", [ChatMessage("user", "hi")])
    assert list(plain.messages) == [ChatMessage("user", "hi")]
    assert plain.temperature is None and plain.max_tokens is None
    assert Options.from_meta({}) == Options()
    broken = {"options": {"system": 3, "temperature": "hot", "max_tokens": "many"}}
    assert Options.from_meta(broken) == Options()
    assert Options.from_meta({"options": "nope"}) == Options()
    assert Options.from_meta({"options": {"temperature": True, "max_tokens": True}}) == Options()
    # JSON stores 1 for 1.0: read back as a float.
    assert Options.from_meta({"options": {"temperature": 1}}).temperature == 1.0
