"""Parley's OpenAI-compatible API through the official `openai` Python package.

Run by `api/tests/openai_sdk.rs` against a running Parley whose one model, `fake`, answers
"Hello there" with usage 7 + 2. The environment names the endpoint and the keys:
PARLEY_BASE_URL (ends in /v1), PARLEY_KEY, PARLEY_REVOKED_KEY, PARLEY_LIMITED_KEY (a key
whose per-minute limit is low enough to reach), PARLEY_SPENT_KEY (a key whose owner has a
daily token budget of 0). Exits non-zero on the first failed check.
"""

import os

import openai
from openai import OpenAI

BASE_URL = os.environ["PARLEY_BASE_URL"]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def client(key):
    # No SDK retries: every error must surface as the exception it maps to.
    return OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, timeout=30)


def models_list():
    ids = [m.id for m in client(os.environ["PARLEY_KEY"]).models.list()]
    assert ids == ["fake"], ids


def create():
    raw = client(os.environ["PARLEY_KEY"]).chat.completions.with_raw_response.create(model="fake", messages=MESSAGES)
    assert raw.headers.get("x-parley-job-id"), dict(raw.headers)
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there", completion
    assert completion.choices[0].finish_reason == "stop", completion
    assert completion.usage.prompt_tokens == 7 and completion.usage.total_tokens == 9, completion.usage


def create_streamed_with_usage():
    stream = client(os.environ["PARLEY_KEY"]).chat.completions.create(
        model="fake", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there", chunks
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks), chunks
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 9, chunks[-1]
    assert len({c.id for c in chunks}) == 1, chunks


def revoked_key_raises_authentication_error():
    try:
        client(os.environ["PARLEY_REVOKED_KEY"]).models.list()
    except openai.AuthenticationError as e:
        assert e.status_code == 401
    else:
        raise AssertionError("a revoked key was accepted")


def unknown_model_raises_not_found_error():
    try:
        client(os.environ["PARLEY_KEY"]).chat.completions.create(model="gpt-nope", messages=MESSAGES)
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.body
    else:
        raise AssertionError("an unknown model answered")


def unsupported_field_raises_bad_request_error():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    try:
        client(os.environ["PARLEY_KEY"]).chat.completions.create(model="fake", messages=MESSAGES, tools=tools)
    except openai.BadRequestError as e:
        assert e.param == "tools", e.body
    else:
        raise AssertionError("tools were accepted")


def rate_limit_raises_rate_limit_error():
    limited = client(os.environ["PARLEY_LIMITED_KEY"])
    for _ in range(100):
        try:
            limited.models.list()
        except openai.RateLimitError as e:
            assert int(e.response.headers["retry-after"]) >= 1
            return
    raise AssertionError("the key's rate limit was never reached")


def quota_raises_rate_limit_error():
    try:
        client(os.environ["PARLEY_SPENT_KEY"]).chat.completions.create(model="fake", messages=MESSAGES)
    except openai.RateLimitError as e:
        assert e.code == "quota_exceeded", e.body
        assert e.type == "insufficient_quota", e.body
        assert int(e.response.headers["retry-after"]) >= 1, dict(e.response.headers)
    else:
        raise AssertionError("a spent quota answered")


CHECKS = [
    models_list,
    create,
    create_streamed_with_usage,
    revoked_key_raises_authentication_error,
    unknown_model_raises_not_found_error,
    unsupported_field_raises_bad_request_error,
    rate_limit_raises_rate_limit_error,
    quota_raises_rate_limit_error,
]

if __name__ == "__main__":
    print(f"openai {openai.__version__}")
    for check in CHECKS:
        check()
        print(f"ok {check.__name__}")
