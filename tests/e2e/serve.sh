#!/usr/bin/env bash
# tune serve on the tiny model with curl: /v1/models, /health, /metrics, chat and
# completions streamed and not, greedy answers equal to tune generate's (and so to
# Transformers': tests/data/generate/golden.json) for the base and an adapter, stop
# strings, four concurrent clients, every kind of bad request (the server keeps
# serving), a dropped stream, --api-key, a port in use, and SIGTERM (exit 0).
set -uo pipefail
: "${TUNE:=build/tune}"
source tests/e2e/lib.bash
source "$SRC/tests/e2e/serve_lib.bash"
trap 'serve_cleanup; rm -rf "$work"' EXIT
M=$SRC/tests/data/tiny/gqa
A=$SRC/tests/data/tiny/peft_adapter
G=$SRC/tests/data/generate/golden.json

# req METHOD PATH [BODY]: the response body in out, the HTTP status in $code.
req() {
    code=$(curl -s -o out -w '%{http_code}' -X "$1" "$URL$2" ${3:+-H 'Content-Type: application/json' --data-binary "$3"})
}
# status WANT WHAT: $code is WANT.
status() {
    if [ "$code" != "$1" ]; then
        echo "FAIL: $2: HTTP $code, expected $1"
        head -c 300 out | sed 's/^/  | /'
        echo
        fails=$((fails + 1))
    fi
}
# json EXPR: evaluates the Python expression on the JSON in out (as j); fails unless true.
json() {
    if ! python3 -c 'import json,sys; j=json.load(open("out")); sys.exit(0 if eval(sys.argv[1]) else 1)' "$1" 2>/dev/null; then
        echo "FAIL: $1"
        head -c 300 out | sed 's/^/  | /'
        echo
        fails=$((fails + 1))
    fi
}
# body_of FIELD=VALUE...: a JSON body from Python literals (strings need their quotes).
body() { python3 -c 'import json,sys; print(json.dumps({k: eval(v) for k, v in (a.split("=", 1) for a in sys.argv[1:])}))' "$@"; }
golden() { python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["runs"][sys.argv[2]]["text"])' "$G" "$1"; }
prompt=$(python3 -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["prompt"]))' "$G")

serve_start tiny "$M" --adapter ex="$A" --slots 2 --queue 8 --max-body 8192
has "$SERVE_LOG" "listening on http://127.0.0.1:"

req GET /health; status 200 health; json 'j["status"] == "ok"'
req GET /v1/models; status 200 models
json '[m["id"] for m in j["data"]] == ["gqa", "ex"] and j["object"] == "list" and j["data"][1]["parent"] == "gqa"'

# Greedy completions of the golden prompt equal Transformers' text, base and adapter.
golden base >want_base
golden adapter >want_adapter
req POST /v1/completions "$(body model='"gqa"' prompt="$prompt" max_tokens=16 temperature=0)"; status 200 completion
python3 -c 'import json; open("got","w").write(json.load(open("out"))["choices"][0]["text"])'
cmp -s got want_base || { echo "FAIL: base completion differs from the golden text"; fails=$((fails + 1)); }
json 'j["object"] == "text_completion" and j["choices"][0]["finish_reason"] == "length" and j["usage"]["completion_tokens"] == 16'
req POST /v1/completions "$(body model='"ex"' prompt="$prompt" max_tokens=16 temperature=0)"; status 200 adapter completion
python3 -c 'import json; open("got","w").write(json.load(open("out"))["choices"][0]["text"])'
cmp -s got want_adapter || { echo "FAIL: adapter completion differs from the golden text"; fails=$((fails + 1)); }
# ... and streamed: the deltas put together, then [DONE].
for m in gqa ex; do
    curl -sN "$URL/v1/completions" -d "$(body model="'$m'" prompt="$prompt" max_tokens=16 temperature=0 stream=True)" >sse
    python3 - sse got <<'PY'
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n\n") if l.startswith("data: ")]
assert events[-1] == "[DONE]", events[-1]
chunks = [json.loads(e) for e in events[:-1]]
assert all(c["object"] == "text_completion" for c in chunks)
assert chunks[-1]["choices"][0]["finish_reason"] == "length"
open(sys.argv[2], "w").write("".join(c["choices"][0]["text"] for c in chunks))
PY
    want=want_base; [ $m = ex ] && want=want_adapter
    cmp -s got $want || { echo "FAIL: streamed $m completion differs from the golden text"; fails=$((fails + 1)); }
done

# Chat: the same text as tune generate through the chat template, streamed or not.
q='=SUM(A1:A10) 합계는?'
"$TUNE" generate "$M" --adapter "$A" --prompt "$q" --max_new_tokens 12 >want_chat 2>/dev/null
req POST /v1/chat/completions "$(body model='"ex"' messages="[{'role': 'user', 'content': '$q'}]" max_tokens=12 temperature=0)"
status 200 chat
python3 -c 'import json; open("got","w").write(json.load(open("out"))["choices"][0]["message"]["content"])'
cmp -s got want_chat || { echo "FAIL: chat answer differs from tune generate's"; fails=$((fails + 1)); }
json 'j["object"] == "chat.completion" and j["choices"][0]["message"]["role"] == "assistant" and j["usage"]["total_tokens"] == j["usage"]["prompt_tokens"] + 12'
curl -sN "$URL/v1/chat/completions" -d "$(body model='"ex"' messages="[{'role': 'user', 'content': '$q'}]" max_tokens=12 temperature=0 stream=True stream_options="{'include_usage': True}")" >sse
python3 - sse got <<'PY'
import json, sys
events = [l[6:] for l in open(sys.argv[1]).read().split("\n\n") if l.startswith("data: ")]
assert events[-1] == "[DONE]"
chunks = [json.loads(e) for e in events[:-1]]
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
assert chunks[-2]["choices"][0]["finish_reason"] == "length", chunks[-2]
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12, chunks[-1]
open(sys.argv[2], "w").write("".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]))
PY
cmp -s got want_chat || { echo "FAIL: streamed chat answer differs from tune generate's"; fails=$((fails + 1)); }

# A stop string ends the text before it, with finish_reason stop.
req POST /v1/completions "$(body model='"gqa"' prompt="$prompt" max_tokens=16 temperature=0 stop="[' d']")"
json 'j["choices"][0]["text"] == open("want_base").read().split(" d")[0] and j["choices"][0]["finish_reason"] == "stop"'

# Four clients at once (two slots, the others queued) all get the golden text.
clients=()
for i in 1 2 3 4; do
    m=gqa; [ $((i % 2)) = 0 ] && m=ex
    curl -s "$URL/v1/completions" -d "$(body model="'$m'" prompt="$prompt" max_tokens=16 temperature=0)" >par$i &
    clients+=($!)
done
wait "${clients[@]}"
for i in 1 2 3 4; do
    want=want_base; [ $((i % 2)) = 0 ] && want=want_adapter
    python3 -c 'import json,sys; open("got","w").write(json.load(open(sys.argv[1]))["choices"][0]["text"])' par$i
    cmp -s got $want || { echo "FAIL: concurrent client $i got another text"; fails=$((fails + 1)); }
done

# Sampling with a seed is reproducible.
s='model="gqa" prompt="x" max_tokens=8 temperature=0.9 top_k=40 seed=7'
req POST /v1/completions "$(body $s)"; cp out s1
req POST /v1/completions "$(body $s)"
python3 -c 'import json; a, b = (json.load(open(f))["choices"][0]["text"] for f in ("s1", "out")); assert a == b' ||
    { echo "FAIL: seeded sampling differs"; fails=$((fails + 1)); }

# Bad requests: the right status and an OpenAI error object, and the server goes on.
bad() { # STATUS PATH BODY [PARAM]
    req POST "$2" "$3"
    status "$1" "$3"
    json "j['error']['message'] and j['error']['type'] and ('${4:-}' == '' or j['error']['param'] == '${4:-}')"
}
chat='"messages": [{"role": "user", "content": "hi"}]'
bad 400 /v1/chat/completions '{"model": "gqa", "messages": [{"role": "user", "content": "hi"}'
bad 400 /v1/chat/completions '[1, 2]'
bad 400 /v1/chat/completions '{"model": "gqa"}' messages
bad 400 /v1/chat/completions '{"model": "gqa", "messages": "hi"}' messages
bad 400 /v1/chat/completions '{"model": "gqa", "messages": [{"role": "wizard", "content": "hi"}]}' messages
bad 400 /v1/chat/completions '{"model": "gqa", "messages": [{"role": "user", "content": 5}]}' messages
bad 400 /v1/chat/completions "{\"model\": 7, $chat}" model
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"temperature\": \"hot\"}" temperature
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"stream\": \"yes\"}" stream
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"max_tokens\": -5}" max_tokens
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"max_tokens\": 1e12}" max_tokens
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"max_tokens\": 60}" max_tokens
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"n\": 2}" n
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"top_p\": 0}" top_p
bad 400 /v1/chat/completions "{\"model\": \"gqa\", $chat, \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}" stop
bad 400 /v1/completions '{"model": "gqa"}' prompt
bad 404 /v1/chat/completions "{\"model\": \"gpt-4\", $chat}" model
json 'j["error"]["code"] == "model_not_found"'
python3 -c 'import json; print(json.dumps({"model": "gqa", "prompt": "x" * 9000}))' >big
code=$(curl -s -o out -w '%{http_code}' "$URL/v1/completions" --data-binary @big); status 413 "a body over --max-body"
code=$(curl -s -o out -w '%{http_code}' "$URL/v1/completions" -H 'Transfer-Encoding: chunked' --data-binary @big)
status 413 "a chunked body over --max-body"
req GET /v1/chat/completions; status 405 "GET on a POST route"
req GET /v1/nothing; status 404 "an unknown route"
# A client that leaves in the middle of a stream.
python3 - "$PORT" "$prompt" <<'PY'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
body = json.dumps({"model": "gqa", "prompt": sys.argv[2], "max_tokens": 40, "stream": True}).encode()
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
s.recv(64)
s.close()
PY
req GET /health; status 200 "health after the bad requests"
req POST /v1/completions "$(body model='"gqa"' prompt="$prompt" max_tokens=16 temperature=0)"
status 200 "a good request after the bad ones"

req GET /metrics; status 200 metrics
has out 'tune_requests_total{endpoint="completions",status="200"}'
has out 'tune_requests_total{endpoint="chat_completions",status="400"}'
has out 'tune_request_duration_seconds_bucket{le="+Inf"}'
has out 'tune_time_to_first_token_seconds_count'
has out 'tune_generation_tokens_total'
req GET /; status 200 "the chat page"
has out '/v1/chat/completions'

# Another server on the same port: refused, exit 1.
expect 1 "$TUNE" serve "$M" --port "$PORT"
has err "cannot listen on 127.0.0.1:$PORT"
serve_stop
[ "$SERVE_RC" = 0 ] || { echo "FAIL: tune serve exited $SERVE_RC after SIGTERM"; fails=$((fails + 1)); }
has "$SERVE_LOG" "SIGTERM: finishing the requests in flight"

# --api-key: /v1/ needs the bearer token; /health does not.
serve_start key "$M" --api-key s3cret
req GET /v1/models; status 401 "no key"
json 'j["error"]["code"] == "invalid_api_key"'
code=$(curl -s -o out -w '%{http_code}' -H 'Authorization: Bearer wrong' "$URL/v1/models"); status 401 "a wrong key"
code=$(curl -s -o out -w '%{http_code}' -H 'Authorization: Bearer s3cret' "$URL/v1/models"); status 200 "the key"
req GET /health; status 200 "health without a key"
serve_stop

# Bad arguments: exit 2.
expect 2 "$TUNE" serve "$M" --adapter noequals
expect 2 "$TUNE" serve "$M" --adapter gqa="$A"
expect 2 "$TUNE" serve "$M" --port 70000
expect 2 "$TUNE" serve "$M" --host localhost.invalid
expect 2 "$TUNE" serve "$M" --adapter x=/nonexistent
finish serve
