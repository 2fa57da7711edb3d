#!/usr/bin/env bash
# Runs every side-by-side benchmark in one process (one private redis-server, one kfake cluster)
# and rewrites BENCHMARKS.md at the repository root. Takes about 5-10 minutes on 2 cores.
#   bash internal/benchcmp/run.sh            # all
#   BENCH='Lock' bash internal/benchcmp/run.sh  # a subset (BENCHMARKS.md then lists the rest as not measured)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
command -v redis-server >/dev/null || { echo "run.sh: needs redis-server and redis-benchmark (apt-get install -y redis-server redis-tools)"; exit 1; }

out="$here/results.txt" # the raw output, kept so the report can be re-rendered and checked
bench="${BENCH:-.}"
benchtime="${BENCHTIME:-1s}"
go test -run '^$' -bench "$bench" -benchmem -benchtime "$benchtime" -count "${COUNT:-5}" -timeout 20m . | tee "$out"

machine="cores: $(nproc)
$(go version)
$(redis-server --version | cut -d' ' -f1-3)
date: $(date -u +%Y-%m-%d)"
cmd="bash internal/benchcmp/run.sh   # = cd internal/benchcmp && go test -run '^\$' -bench '$bench' -benchmem -benchtime $benchtime -count ${COUNT:-5} ."
go run ./report -in "$out" -out "$root/BENCHMARKS.md" -cmd "$cmd" -machine "$machine"
echo "run.sh: wrote $root/BENCHMARKS.md"
