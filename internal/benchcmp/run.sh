#!/usr/bin/env bash
# Runs every side-by-side benchmark in one process (one private redis-server, one kfake cluster)
# and rewrites BENCHMARKS.md at the repository root. Takes about 5-10 minutes on 2 cores.
#   bash internal/benchcmp/run.sh            # all
#   BENCH='Lock' bash internal/benchcmp/run.sh  # a subset (BENCHMARKS.md then lists the rest as not measured)
# One ratio's spread from round to round, each side in a fresh process: rounds.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
command -v redis-server >/dev/null || { echo "run.sh: needs redis-server and redis-benchmark (apt-get install -y redis-server redis-tools)"; exit 1; }

hp=/sys/module/haltpoll/parameters/guest_halt_poll_ns
hp0="$(cat "$hp" 2>/dev/null || echo "n/a (no haltpoll driver)")"
load0="$(cut -d" " -f1 /proc/loadavg 2>/dev/null || echo ?)"
out="$here/results.txt" # the raw output, kept so the report can be re-rendered and checked
bench="${BENCH:-.}"
benchtime="${BENCHTIME:-1s}"
go test -run '^$' -bench "$bench" -benchmem -benchtime "$benchtime" -count "${COUNT:-5}" -timeout 20m . | tee "$out"

# The single-caller benchmarks, the contended lock and the 16-caller cache reads: the rows where
# client and server take turns, which the two later passes rerun.
turns=('BenchmarkRateLimitRedis/single' 'BenchmarkCacheRedisHitKeys/.*/callers=(1|16)$' '^BenchmarkCacheRedisHit$'
       'BenchmarkLockUncontended' 'BenchmarkLockContended' 'BenchmarkGinRateLimitRedis' 'BenchmarkEventsPublishSync'
       'BenchmarkBloomRedisCallers/single')
bin="$(mktemp -d)/benchcmp.test"
trap 'rm -rf "$(dirname "$bin")"' EXIT
if [ -z "${BENCH:-}" ]; then go test -c -o "$bin" .; fi

# Second pass: those rows again with the process and its redis-server pinned to one core. On a small
# VM a lone round trip on two cores lands, run by run, in one of two modes (a wake-up that crosses to
# an idle vCPU costs ~15 µs each way), and the median of a few runs flips with it; work that
# alternates between client and server (a hand-over, a shared round trip then its callers' decoding)
# pays that wake-up every cycle. On one core every run costs what client and server spend. The
# report shows these rows ("@1cpu") under the two-core ones. ONECORE=0 skips the pass.
if [ "${ONECORE:-1}" != 0 ] && [ -z "${BENCH:-}" ] && command -v taskset >/dev/null; then
  for p in "${turns[@]}"; do
    taskset -c 0 "$bin" -test.run '^$' -test.bench "$p" -test.benchmem -test.benchtime "$benchtime" \
      -test.count "${COUNT1:-5}" -test.timeout 20m | sed 's/^\(Benchmark[^[:space:]]*\)/\1@1cpu/' | tee -a "$out"
  done
fi

# Third pass: those rows again on two cores with the guest kernel's halt polling at 200 µs, Linux's
# default. A VM booted with haltpoll.guest_halt_poll_ns=0 (this one) halts an idle vCPU at once, and
# its next wake-up goes through the hypervisor: tens of µs that a bare-metal core, or a guest that
# polls first, does not pay. The pass runs only where that knob exists, reads 0 and can be written
# (root), and puts 0 back on exit. The report shows these rows ("@haltpoll") under the others.
# HALTPOLL=0 skips the pass.
if [ "${HALTPOLL:-1}" != 0 ] && [ -z "${BENCH:-}" ] && [ -w "$hp" ] && [ "$(cat "$hp")" = 0 ]; then
  trap 'echo 0 > "$hp"; rm -rf "$(dirname "$bin")"' EXIT
  echo 200000 > "$hp"
  for p in "${turns[@]}"; do
    "$bin" -test.run '^$' -test.bench "$p" -test.benchmem -test.benchtime "$benchtime" \
      -test.count "${COUNT1:-5}" -test.timeout 20m | sed 's/^\(Benchmark[^[:space:]]*\)/\1@haltpoll/' | tee -a "$out"
  done
  echo 0 > "$hp"
fi

machine="cores: $(nproc)
$(go version)
$(redis-server --version | cut -d' ' -f1-3)
date: $(date -u +%Y-%m-%d)
guest halt polling (guest_halt_poll_ns) in the first two passes: $hp0
load average (1 min): $load0 at the start, $(cut -d" " -f1 /proc/loadavg 2>/dev/null || echo ?) at the end"
cmd="bash internal/benchcmp/run.sh   # = cd internal/benchcmp && go test -run '^\$' -bench '$bench' -benchmem -benchtime $benchtime -count ${COUNT:-5} .
#   then the single-caller benchmarks, the contended lock and the 16-caller cache reads again under taskset -c 0, -count ${COUNT1:-5} (rows marked pinned to one core)
#   and again on two cores with guest_halt_poll_ns=200000, -count ${COUNT1:-5} (rows marked guest halt polling)"
go run ./report -in "$out" -out "$root/BENCHMARKS.md" -cmd "$cmd" -machine "$machine"
echo "run.sh: wrote $root/BENCHMARKS.md"
