#!/bin/bash
# guest-check.sh RSTWATCH [TEST_BINARY TEST_NAME...]
#
# Runs inside a kernel-matrix guest (run.sh boots it), as root, against that kernel:
#  - two namespaces joined by a veth (198.18.7.1 <-> 198.18.7.2), a clsact qdisc and a u32
#    filter of our own on the watched side (someone else's, for rstwatch);
#  - rstwatch watching: a connect to a closed port must be reported `refused` on ingress (sent
#    by the responder, conn_state REJ), a SO_LINGER-0 close `abort` on egress (the originator,
#    RSTO), as on every kernel, with the stack's own word on it (`local`): the reason
#    TCP_STATE from 6.10 on; before, no reason and one start-up line saying so;
#  - SIGKILL: no XDP program may stay; on kernels without TCX exactly rstwatch's own filter
#    (pref 29299, handle 0x1) stays, and the next start says it removed it; SIGINT then leaves
#    nothing; after another SIGKILL `rstwatch detach` removes it; the foreign filter and the
#    clsact qdisc survive everything;
#  - then the named tests of TEST_BINARY (BPF_PROG_TEST_RUN suites; all of them when none is
#    named) run against this kernel.
# Prints `check: NAME ok` or `check: NAME FAILED: why` per check; exits 1 if any failed.
RW=$1; shift
TEST_BINARY=${1:-}; shift $(( $# > 0 ? 1 : 0 ))
A=km-$$-a; B=km-$$-b
OUT=$(mktemp -d /tmp/km-check.XXXXXX)
RWPID=""; SERVERPID=""
failed=0
cleanup() {
    [ -n "$RWPID" ] && kill -9 "$RWPID" 2>/dev/null
    [ -n "$SERVERPID" ] && { kill -9 "$SERVERPID"; wait "$SERVERPID"; } 2>/dev/null
    ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null
    rm -rf "$OUT"
}
trap cleanup EXIT

ok() { echo "check: $1 ok"; }
fail() { echo "check: $1 FAILED: $2"; failed=1; }
in_a() { ip netns exec "$A" "$@"; }
filters() { in_a tc filter show dev kmva egress; }
ours() { filters | grep -c 'pref 29299 bpf chain 0 handle 0x1 rstwatch_tc_egress'; }
foreign_intact() {
    filters | grep -q 'pref 1 u32 chain 0 fh 800::800' && in_a tc qdisc show dev kmva | grep -q 'qdisc clsact'
}
xdp_attached() { ip -n "$A" link show dev kmva | grep -q 'xdp'; }
tcx=0; [ "$(printf '%s\n' 6.6 "$(uname -r)" | sort -V | head -1)" = 6.6 ] && tcx=1
reasons=0; [ "$(printf '%s\n' 6.10 "$(uname -r)" | sort -V | head -1)" = 6.10 ] && reasons=1

# start_watch NAME [ARGS...]: rstwatch in namespace A; waits for its "watching" line (dies ->
# fails).
start_watch() {
    local name=$1; shift
    : > "$OUT/stdout"; : > "$OUT/stderr"
    # Not through a shell function: $! must be rstwatch itself (ip netns exec execs it).
    ip netns exec "$A" "$RW" watch -i kmva --format json --hold 100ms "$@" >"$OUT/stdout" 2>"$OUT/stderr" &
    RWPID=$!
    for _ in $(seq 1 600); do
        grep -q '^rstwatch: watching' "$OUT/stderr" && return 0
        kill -0 "$RWPID" 2>/dev/null || break
        sleep 0.1
    done
    fail "$name" "rstwatch did not attach: $(tr '\n' ' ' < "$OUT/stderr")"
    kill -9 "$RWPID" 2>/dev/null; wait "$RWPID" 2>/dev/null; RWPID=""
    return 1
}
sigkill() { kill -9 "$RWPID"; wait "$RWPID" 2>/dev/null; RWPID=""; }
sigint() { kill -INT "$RWPID"; wait "$RWPID"; local rc=$?; RWPID=""; return $rc; }
# wait_event PATTERN...: waits up to 20 s for a stdout line matching every pattern.
wait_event() {
    for _ in $(seq 1 200); do
        local lines; lines=$(cat "$OUT/stdout")
        for p in "$@"; do lines=$(printf '%s\n' "$lines" | grep -F -- "$p"); done
        [ -n "$lines" ] && return 0
        sleep 0.1
    done
    return 1
}

echo "== kernel $(uname -r) (TCX: $tcx); $("$RW" --version)"
set -e
ip netns add "$A"; ip netns add "$B"
ip link add kmva netns "$A" type veth peer name kmvb netns "$B"
ip -n "$A" addr add 198.18.7.1/24 dev kmva; ip -n "$B" addr add 198.18.7.2/24 dev kmvb
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set kmva up; ip -n "$B" link set kmvb up
in_a tc qdisc add dev kmva clsact
in_a tc filter add dev kmva egress prio 1 u32 match u32 0x01020304 0xffffffff at 0 classid 1:1
set +e

# A listener in B that accepts and keeps its connections open until killed.
ip netns exec "$B" python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.7.2", 8080)); s.listen(8); conns = []
while True:
    conns.append(s.accept()[0])
' & SERVERPID=$!

if start_watch attach; then
    ok attach
    grep '^rstwatch: kernel' "$OUT/stderr"
    in_a python3 -c '
import socket
s = socket.socket(); s.settimeout(5)
try:
    s.connect(("198.18.7.2", 9))
except ConnectionRefusedError:
    pass'
    if wait_event '"class":"refused"' '"direction":"ingress"' '"src_port":9,' '"sender":"responder"' '"conn_state":"REJ"'; then ok refused-ingress
    else fail refused-ingress "no refused ingress RST reported: $(tr '\n' ' ' < "$OUT/stdout")"; fi
    in_a python3 -c '
import socket, struct, time
for _ in range(50):
    try:
        s = socket.create_connection(("198.18.7.2", 8080), timeout=5); break
    except ConnectionRefusedError:
        time.sleep(0.1)
s.sendall(b"hello")
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()'
    if wait_event '"class":"abort"' '"direction":"egress"' '"dst_port":8080,' '"sender":"originator"' '"conn_state":"RSTO"'; then ok abort-egress
    else fail abort-egress "no abort egress RST reported: $(tr '\n' ' ' < "$OUT/stdout")"; fi
    degraded=0; grep -q 'tcp_send_reset has no reason' "$OUT/stderr" && degraded=1
    if [ "$reasons" = 1 ]; then
        if [ "$degraded" = 0 ] && wait_event '"direction":"egress"' '"dst_port":8080,' '"reason":"TCP_STATE"'
        then ok local-reason
        else fail local-reason "no TCP_STATE reason on the egress RST: $(tr '\n' ' ' < "$OUT/stdout") / $(tr '\n' ' ' < "$OUT/stderr")"; fi
    else
        if [ "$degraded" = 1 ] && wait_event '"direction":"egress"' '"dst_port":8080,' '"source":"sent"' '"reason":null'
        then ok local-degraded; grep 'tcp_send_reset has no reason' "$OUT/stderr"
        else fail local-degraded "expected the stack's RST without a reason and the line saying why: $(tr '\n' ' ' < "$OUT/stdout") / $(tr '\n' ' ' < "$OUT/stderr")"; fi
    fi

    sigkill
    if xdp_attached; then fail sigkill-xdp "an XDP program stayed after SIGKILL: $(ip -n "$A" link show dev kmva | tr "\n" " ")"; else ok sigkill-xdp; fi
    want=$(( tcx ? 0 : 1 ))
    if [ "$(ours)" = "$want" ]; then ok sigkill-filter
    else fail sigkill-filter "expected $want stale rstwatch filter(s): $(filters | tr '\n' ' ')"; fi

    if start_watch restart; then
        if [ "$tcx" = 1 ] || grep -q 'removed the stale bpf filter rstwatch_tc_egress' "$OUT/stderr"; then
            ok restart-removes-stale
        else fail restart-removes-stale "no line about the stale filter: $(tr '\n' ' ' < "$OUT/stderr")"; fi
        [ "$(ours)" = "$want" ] && ok restart-one-filter || fail restart-one-filter "$(filters | tr '\n' ' ')"
        if sigint && ! xdp_attached && [ "$(ours)" = 0 ]; then ok sigint-clean
        else fail sigint-clean "after SIGINT: $(filters | tr '\n' ' ')"; fi
    fi

    # XDP in generic (skb) mode this time; the first starts let the kernel choose (native).
    if start_watch detach --xdp-mode generic; then
        sigkill
        said=$(in_a "$RW" detach -i kmva 2>&1); rc=$?
        echo "   rstwatch detach: $said"
        if [ $rc = 0 ] && [ "$(ours)" = 0 ] && ! xdp_attached; then ok detach
        else fail detach "exit $rc, left: $(filters | tr '\n' ' ')"; fi
    fi
    if foreign_intact; then ok foreign-intact
    else fail foreign-intact "the test's own clsact/u32 filter was touched: $(filters | tr '\n' ' ')"; fi
fi

if [ -n "$TEST_BINARY" ]; then
    if "$TEST_BINARY" --test-threads=1 ${1:+--exact} "$@" > "$OUT/tests" 2>&1; then
        ok "kernel-tests($(grep -c '\.\.\. ok' "$OUT/tests") passed)"
    else
        cat "$OUT/tests"
        fail kernel-tests "$(grep -E 'FAILED|panicked' "$OUT/tests" | head -3 | tr '\n' ' ')"
    fi
fi
exit $failed
