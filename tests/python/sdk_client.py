"""Drives the gateway with the official `openai` Python SDK, one scenario per run.

Usage: sdk_client.py BASE_URL SCENARIO [EXPECTED_TEXT]

Exits 0 when the SDK saw what the scenario expects; prints what went wrong otherwise.
"""

import sys

import openai


def main() -> int:
    base_url, scenario = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=20)
    messages = [{"role": "user", "content": "Hello from the SDK"}]

    if scenario == "plain":
        completion = client.chat.completions.create(model="sdk-model", messages=messages)
        text = completion.choices[0].message.content
        assert "Hello from the SDK" in text, text
        assert completion.model, completion
        assert completion.choices[0].finish_reason == "stop", completion
        assert completion.usage.total_tokens > 0, completion.usage
        raw = client.chat.completions.with_raw_response.create(model="sdk-model", messages=messages)
        assert raw.headers.get("x-brace-provider"), dict(raw.headers)
        return 0

    if scenario == "stream":
        stream = client.chat.completions.create(
            model="sdk-model",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert "Hello from the SDK" in text, text
        assert finish == "stop", finish
        assert usage is not None and usage.total_tokens > 0, usage
        return 0

    if scenario == "restarted_stream":
        # The primary breaks after 40 words; the secondary rejects prefill, so the gateway
        # restarts the request there, checks that the new answer repeats the 40 words, and
        # streams the rest into the same stream: the SDK sees one whole answer.
        stream = client.chat.completions.create(
            model="sdk-restart",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage, ids, continued = "", None, None, set(), {}
        for chunk in stream:
            ids.add(chunk.id)
            extra = chunk.model_extra or {}
            if "x_brace_continued_by" in extra:
                continued = extra
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        expected = sys.argv[3]
        assert text == expected, f"{text!r} != {expected!r}"
        assert finish == "stop", finish
        assert len(ids) == 1, ids
        assert continued.get("x_brace_continued_by") == "secondary", continued
        assert continued.get("x_brace_continued_how") == "verified_restart", continued
        assert usage is not None and usage.completion_tokens == 60, usage
        segments = (usage.model_extra or {}).get("x_brace_segments")
        assert [s["provider"] for s in segments] == ["primary", "secondary"], segments
        return 0

    if scenario == "models":
        ids = [model.id for model in client.models.list()]
        assert ids, ids
        return 0

    if scenario == "rate_limited":
        try:
            client.chat.completions.create(model="sdk-model", messages=messages)
        except openai.RateLimitError as err:
            assert err.status_code == 429, err
            assert err.response.headers.get("retry-after") == "7", dict(err.response.headers)
            return 0
        print("expected RateLimitError")
        return 1

    if scenario == "unavailable":
        try:
            client.chat.completions.create(model="sdk-model", messages=messages)
        except openai.InternalServerError as err:
            assert err.status_code == 503, err
            assert "all providers failed" in str(err.body), err.body
            return 0
        print("expected InternalServerError (503)")
        return 1

    if scenario == "bad_request":
        try:
            client.chat.completions.create(model="sdk-model", messages=messages, temperature=9)
        except openai.BadRequestError as err:
            assert err.status_code == 400, err
            assert "temperature" in str(err.body), err.body
            return 0
        print("expected BadRequestError")
        return 1

    print(f"unknown scenario {scenario}")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as err:
        print(f"assertion failed: {err}")
        sys.exit(1)
