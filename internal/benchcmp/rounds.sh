#!/usr/bin/env bash
# Alternating rounds of two benchmarks: each round runs A and B, each in a fresh process (A first
# in odd rounds, B first in even ones), and prints the ratio of one metric (A ÷ B), then the
# median over the rounds. One run.sh pass runs A's counts, then B's, in a process that ran
# everything before them: drift on a small VM (another tenant, the host's frequency, the heap the
# earlier benchmarks left) lands on one side. Rounds spread it over both, and show how far a
# ratio swings from round to round.
#   bash internal/benchcmp/rounds.sh A B [METRIC]
#   ROUNDS=16 BENCHTIME=40x bash internal/benchcmp/rounds.sh \
#     'EventsConsumeOverhead/surge-c8$' 'EventsConsumeOverhead/kgo-group$' events/s
# A and B are -test.bench patterns that match one benchmark each; METRIC is a unit the
# benchmark reports (default ns/op). For throughput metrics a ratio above 1 favours A; for
# times, below 1.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 2; }
a="$1" b="$2" metric="${3:-ns/op}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
bin="$(mktemp -d)/benchcmp.test"
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" .

# value prints the metric of the one benchmark the pattern matches, from a run of the binary.
value() {
  "$bin" -test.run '^$' -test.bench "$1" -test.benchtime "${BENCHTIME:-1s}" |
    awk -v m="$metric" '/^Benchmark/ { for (i = 3; i < NF; i++) if ($(i+1) == m) { print $i; n++ } }
      END { if (n != 1) { print "rounds.sh: " n+0 " benchmarks reported " m > "/dev/stderr"; exit 1 } }'
}

ratios=()
for i in $(seq 1 "${ROUNDS:-8}"); do
  if (( i % 2 )); then # A first in odd rounds, B first in even ones: a drift favours neither
    va="$(value "$a")"; vb="$(value "$b")"
  else
    vb="$(value "$b")"; va="$(value "$a")"
  fi
  r="$(awk -v x="$va" -v y="$vb" 'BEGIN { printf "%.3f", x / y }')"
  ratios+=("$r")
  echo "round $i: A $va, B $vb $metric, A/B $r"
done
printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END {
  m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
  printf "A/B over %d rounds: median %.3f, range %.3f-%.3f\n", NR, m, v[1], v[NR] }'
