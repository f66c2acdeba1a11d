#!/usr/bin/env bash
# tune serve with the official OpenAI Python client (pip install openai; skipped
# without it): models.list, chat and completions streamed and not, the adapter by
# name, four clients at once, the client's typed errors for bad requests, and
# --api-key. Greedy answers equal tune generate's.
set -uo pipefail
: "${TUNE:=build/tune}"
if ! python3 -c 'import openai' 2>/dev/null; then
    echo "serve_openai: skipped (the openai Python package is not installed; pip install openai)"
    exit 0
fi
source tests/e2e/lib.bash
source "$SRC/tests/e2e/serve_lib.bash"
trap 'serve_cleanup; rm -rf "$work"' EXIT
M=$SRC/tests/data/tiny/gqa
A=$SRC/tests/data/tiny/peft_adapter
q='=SUM(A1:A10) 합계는?'
"$TUNE" generate "$M" --prompt "$q" --max_new_tokens 12 >want_base 2>/dev/null
"$TUNE" generate "$M" --adapter "$A" --prompt "$q" --max_new_tokens 12 >want_adapter 2>/dev/null
"$TUNE" generate "$M" --raw --prompt "$q" --max_new_tokens 12 >want_raw 2>/dev/null

serve_start openai "$M" --adapter excel="$A" --api-key test-key --slots 2
if ! python3 - "$URL" "$q" <<'PY'; then
import concurrent.futures, sys
import openai
from openai import OpenAI

url, q = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
want = {m: open(f"want_{m}").read() for m in ("base", "adapter", "raw")}

assert [m.id for m in client.models.list()] == ["gqa", "excel"]

def chat(model, stream):
    kw = dict(model=model, messages=[{"role": "user", "content": q}], max_tokens=12, temperature=0)
    if not stream:
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12, r
        return r.choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

for stream in (False, True):
    assert chat("gqa", stream) == want["base"], ("base", stream)
    assert chat("excel", stream) == want["adapter"], ("adapter", stream)

r = client.completions.create(model="gqa", prompt=q, max_tokens=12, temperature=0)
assert r.choices[0].text == want["raw"], r
text = "".join(c.choices[0].text for c in client.completions.create(model="gqa", prompt=q, max_tokens=12,
                                                                    temperature=0, stream=True))
assert text == want["raw"], text

# Four clients at once, base and adapter mixed.
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    models = ["gqa", "excel", "gqa", "excel"]
    got = list(pool.map(lambda m: chat(m, True), models))
assert got == [want["base"] if m == "gqa" else want["adapter"] for m in models], got

def fails_with(kind, **kw):
    try:
        client.chat.completions.create(**{"model": "gqa", "messages": [{"role": "user", "content": "hi"}], **kw})
    except kind as e:
        assert e.body and e.body.get("message"), e.body
        return
    raise AssertionError(f"{kw} did not raise {kind.__name__}")

fails_with(openai.NotFoundError, model="no-such-model")
fails_with(openai.BadRequestError, max_tokens=-1)
fails_with(openai.BadRequestError, max_tokens=10**9)
fails_with(openai.BadRequestError, temperature="hot")
fails_with(openai.BadRequestError, messages=[])
fails_with(openai.BadRequestError, n=3)
try:
    OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass
assert chat("excel", False) == want["adapter"]
print("openai client: ok")
PY
    fails=$((fails + 1))
fi
serve_stop
[ "$SERVE_RC" = 0 ] || { echo "FAIL: tune serve exited $SERVE_RC after SIGTERM"; fails=$((fails + 1)); }
finish serve_openai
