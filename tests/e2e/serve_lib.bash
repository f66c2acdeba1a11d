# Shared by the serve e2e scripts (sourced): starts `tune serve` on a free
# loopback port and stops it on exit.
#   serve_start NAME ARGS...   starts "$TUNE" serve ARGS... --port 0; sets $PORT,
#                              $URL and $SERVE_PID; its stderr goes to $work/NAME.log
#   serve_stop                 SIGTERM, then its exit status in $SERVE_RC
serve_pids=()
serve_cleanup() {
    for p in "${serve_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
serve_start() {
    local name=$1
    shift
    SERVE_LOG=$work/$name.log
    : >"$SERVE_LOG"
    "$TUNE" serve "$@" --port 0 2>"$SERVE_LOG" &
    SERVE_PID=$!
    serve_pids+=("$SERVE_PID")
    PORT=
    for _ in $(seq 1 600); do
        PORT=$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$SERVE_LOG")
        [ -n "$PORT" ] && break
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$PORT" ]; then
        echo "tune serve did not start:"
        cat "$SERVE_LOG"
        exit 1
    fi
    URL=http://127.0.0.1:$PORT
}
serve_stop() {
    kill -TERM "$SERVE_PID"
    SERVE_RC=0
    wait "$SERVE_PID" || SERVE_RC=$?
}
