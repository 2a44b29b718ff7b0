#!/usr/bin/env bash
# Runs every fuzz target of the module for $FUZZTIME each (go test -fuzz takes one target at a time).
set -euo pipefail
t=${FUZZTIME:-3s}
# Minimising every new interesting input can eat a short run whole (large image seeds):
# short runs skip it; `make fuzz` keeps it.
min=${FUZZMINIMIZETIME:-0}
for dir in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs -n1 dirname | sort -u); do
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
    echo "fuzz: ./$dir $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" -fuzzminimizetime "$min" "./$dir" >/tmp/mossfs-fuzz.log 2>&1 || { cat /tmp/mossfs-fuzz.log; exit 1; }
  done
done
echo "fuzz: all targets ok"
