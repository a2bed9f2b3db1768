"""`mathrl serve` as users reach it: through the official `openai` Python client, bad requests
included. A bad field is a 400 naming it, the server stays up, and `stream=True` streams."""

import re
import subprocess
import sys

import openai
import pytest

pytestmark = pytest.mark.slow  # end-to-end: servers and whole commands (make test-fast skips)

MESSAGES = [{"role": "user", "content": "Compute $3 + 4$."}]


@pytest.fixture(scope="module")
def client():
    command = [
        sys.executable,
        "-m",
        "mathrl.cli",
        "serve",
        "--model",
        "tiny",
        "--port",
        "0",
        "--max-n",
        "8",
        "--max-tokens",
        "128",
        "--max-prompt-tokens",
        "200",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", process.stdout.readline())
    assert match, process.stderr.read()
    yield openai.OpenAI(
        base_url=f"http://127.0.0.1:{match[1]}/v1", api_key="none", max_retries=0, timeout=120
    )
    process.kill()
    _, stderr = process.communicate()
    assert "Traceback" not in stderr, stderr  # no request ever crashed a handler


def test_chat_and_completions_work_through_the_openai_client(client):
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=48, temperature=0, n=2)
    assert len(chat.choices) == 2 and chat.choices[0].message.content == chat.choices[1].message.content
    assert "\\boxed" in chat.choices[0].message.content and chat.usage.completion_tokens > 0
    text = client.completions.create(model="tiny", prompt="12 + 7 =", max_tokens=8, temperature=0)
    assert text.choices[0].finish_reason in ("stop", "length") and text.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    "field, extra",
    [
        ("max_tokens", {"max_tokens": -3}),
        ("max_tokens", {"max_tokens": 100_000}),  # past --max-tokens 128
        ("max_tokens", {"max_tokens": "many"}),
        ("n", {"n": 0}),
        ("n", {"n": 50}),  # past --max-n 8
        ("temperature", {"temperature": -1}),
        ("temperature", {"temperature": "hot"}),
        ("top_p", {"top_p": 0}),
        ("seed", {"seed": 1.5}),
        ("stop", {"stop": [1, 2]}),
        ("messages", {"messages": [{"role": "robot", "content": "hi"}]}),
        ("messages", {"messages": [{"role": "user", "content": "x " * 400}]}),  # past --max-prompt-tokens 200
    ],
)
def test_a_bad_field_is_a_400_that_names_it_and_the_server_stays_up(client, field, extra):
    request = {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert f"'{field}" in caught.value.message, caught.value.message
    ok = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4)
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_bad_completions_prompts_are_400s(client):
    for prompt in ([10**9], [], [True]):
        with pytest.raises(openai.BadRequestError, match="'prompt'"):
            client.completions.create(model="tiny", prompt=prompt, max_tokens=4)


@pytest.mark.parametrize("temperature, seed", [(0, None), (1.0, 7)])
def test_stream_yields_the_same_text_as_a_plain_request(client, temperature, seed):
    settings = dict(model="tiny", messages=MESSAGES, max_tokens=48, temperature=temperature, seed=seed)
    plain = client.chat.completions.create(**settings)
    chunks = list(client.chat.completions.create(**settings, stream=True))
    assert len(chunks) >= 2
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    text = client.completions.create(model="tiny", prompt="3 + 4 =", max_tokens=6, temperature=0)
    streamed = client.completions.create(
        model="tiny", prompt="3 + 4 =", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text
