#!/usr/bin/env bash
# End-to-end benchmark: Spooky (mio and tokio runtimes) against Caddy (HTTP/3 reverse_proxy)
# and the nginx backends measured directly, plus HTTP/3 backends, latency at half load and
# memory with 10,000 idle connections. Writes docs/benchmarks.md.
#
#   benches/e2e.sh                  # full run: 3 rounds x 10 s per system and workload (~20 min)
#   E2E_QUICK=1 benches/e2e.sh      # smoke run: 1 round x 3 s, 2,000 idle connections (~3 min)
#
# Settings (environment variables, all optional):
#   E2E_QUICK=1               quick mode (the defaults below in brackets)
#   E2E_ROUNDS                rounds; systems alternate within each round (3) [1]
#   E2E_DURATION              seconds measured per run (10) [3]
#   E2E_WARMUP                seconds of warm-up per run (2) [1]
#   E2E_BIG_REQUESTS          100 MiB downloads measured per run (8) [2]
#   E2E_IDLE_CONNECTIONS      idle QUIC connections held against Spooky (10000) [2000]
#   E2E_IDLE_HOLD             seconds they are held (5) [3]
#   E2E_WORKLOADS             subset of throughput,16k,latency,100m,h3,halfload,idle
#                             (halfload needs throughput)
#   E2E_PORT_BASE             ports used are BASE+1 .. BASE+32, all below 32768 (18000)
#   E2E_LOADGEN_CPU / E2E_SERVER_CPU   cores for loadgen / for everything else (0 / 1)
#   E2E_OUT                   report file (docs/benchmarks.md)
#   E2E_RESULTS               raw results (target/e2e/results.json)
#   E2E_KEEP_WORKDIR=1        keep the temporary directory (configs, logs)
#
# Needs: cargo, python3, taskset, nginx and caddy (installed with apt-get when missing).
# Everything listens on 127.0.0.1. Every process started is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The exact command, for the report.
command_line=""
for v in $(compgen -e | grep '^E2E_' | sort); do
    command_line+="$v=${!v} "
done
command_line+="benches/e2e.sh"
for a in "$@"; do command_line+=" $(printf '%q' "$a")"; done

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# 1. What the benchmark needs.
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin:/sbin"
if [ "$(nproc)" -lt 2 ]; then
    log "warning: $(nproc) CPU(s); loadgen and the servers will share a core"
fi

# 2. Release builds of spooky, loadgen and h3server.
log "cargo build --release -p spooky -p spooky-benches"
cargo build --release -p spooky -p spooky-benches

# 3. A temporary work directory with a fresh certificate.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/spooky-e2e.XXXXXX")
BENCH_PID=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$BENCH_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    # Whatever the orchestrator started and did not stop (it records every PID here).
    if [ -f "$WORK/pids" ]; then
        local pid name
        while read -r pid name; do
            if kill -0 "$pid" 2>/dev/null; then
                log "stopping leftover $name (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
            fi
        done < "$WORK/pids"
        sleep 0.5
        while read -r pid name; do
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        done < "$WORK/pids"
    fi
    if [ "${E2E_KEEP_WORKDIR:-0}" = "1" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 755 "$WORK"   # nginx workers run as another user and read the files here
log "work directory $WORK"
# Private copies of the binaries: other builds may replace target/release/* during the run.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$WORK/bin"
for b in spooky loadgen h3server; do
    cp "$TARGET_DIR/release/$b" "$WORK/bin/$b"
done
"$WORK/bin/spooky" gen-cert --dir "$WORK" --force

# 4-6. Backends, systems under test, workloads and the report.
E2E_WORKDIR="$WORK" E2E_BIN="$WORK/bin" E2E_COMMAND="$command_line" python3 "$ROOT/benches/e2e/bench.py" &
BENCH_PID=$!
wait "$BENCH_PID"
