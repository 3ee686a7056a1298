#!/bin/sh
# Machine instructions per request of the in-process harness (bench/inproc.py), counted by
# callgrind over the measured round only (inproc.py switches instrumentation on and off with
# callgrind_control). Deterministic to ~0.5 %, unlike timings on a shared machine; needs the
# Debian package valgrind; about a minute per configuration.
#   sh bench/instructions.sh a            # configuration (a); c and d likewise
#   N=2000 sh bench/instructions.sh c     # more requests
#   NATIVE=1 sh bench/instructions.sh a   # on the compiled modules of build/native (make native)
set -eu
variant=${1:-c}
n=${N:-1000}
cd "$(dirname "$0")/.."
if [ -n "${NATIVE:-}" ]; then
  export PYTHONPATH=build/native
fi
total=$(INPROC_CALLGRIND=1 valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file=/dev/null "${PY:-.venv/bin/python}" bench/inproc.py --only "$variant" \
  --requests "$n" --rounds 1 --warmup 300 --connections 20 ${EXTRA:-} 2>&1 \
  | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
echo "($variant) instructions per request: $((total / n))"
