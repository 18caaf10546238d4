#!/usr/bin/env bash
# The GPU check: CUDA tests, the step overhead of every balancer (fp32, --amp, --channels-last)
# with host syncs per step, the 2-process nccl run and images/s against CompressAI's step, in
# about 8 minutes on one H100/H200. benchmarks/gpu_check.py says what each stage records; this
# wrapper only picks the interpreter.
#
# Here, once:        make gpu-wheels   (the wheels the GPU machine lacks, into .gpu-wheels/)
# On the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu-wheels"],
#                         timeout_s=540)
#                     ($OUT/summary.md, $OUT/gpu-check.log and $OUT/results.json come back)
# Rehearsal here:    make gpu-rehearsal, or PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
#                    --dry-run (every stage on the CPU at tiny sizes, into gpu-check-out/)
#
# Options (gpu_check.py --help): --dry-run, --out DIR, --budget SECONDS, --stages a,b.
# PYTHON: the interpreter (default: .venv/bin/python if there, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
