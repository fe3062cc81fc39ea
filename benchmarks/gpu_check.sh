#!/usr/bin/env bash
# The one prepared GPU check, run on a CUDA machine: the gpu-marked tests, then benchmarks/gpu.py at
# real sizes in 32-true (the precision the targets are for), bf16-mixed and 16-mixed.
#
#   OUT=/some/dir benchmarks/gpu_check.sh        (OUT defaults to ./out; PY to python3)
#
# What lands in $OUT (8 files at most, what the GPU machine hands back):
#   summary.txt                     date, GPU, versions, and each stage's exit status and duration
#   pytest.txt, junit.xml           pytest -m gpu tests/gpu
#   gpu_32-true.json, gpu_bf16-mixed.json, gpu_16-mixed.json   one benchmark report each
#   bench_stderr.log                what the benchmark runs wrote to stderr
#
# Time on an H100, estimated from the step counts: the tests ~1-2 min (tiny fits of a few dozen steps,
# CUDA start-up, one `gpu.py --quick` subprocess); 32-true ~1 min (5 rounds x 3 implementations of
# 2200 tiny-MLP steps at ~0.3-0.6 ms and 110 compute-bound steps at ~11 ms, plus imports and Trainer
# set-up); bf16-mixed and 16-mixed ~40 s each (3 rounds). About 4 minutes in all, well under 8.
# Each stage runs under `timeout` (530 s together at most, inside a 10-minute command limit), and a
# failed stage does not stop the next: the script exits non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./out}"
PY="${PY:-python3}"
mkdir -p "$OUT"
# lightning_lib is imported from this checkout: the GPU machine has torch and pytorch_lightning only.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$PY" -c 'import torch, pytorch_lightning as p; print("torch", torch.__version__, "cuda", torch.version.cuda, "pytorch_lightning", p.__version__)' 2>&1
} >"$OUT/summary.txt"

stage() { # stage NAME SECONDS COMMAND...: run COMMAND under a time limit and record how it ended
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s" >>"$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
}

stage tests 180 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider --junitxml="$OUT/junit.xml" \
    >"$OUT/pytest.txt" 2>&1
tail -n 25 "$OUT/pytest.txt"

stage bench-32-true 150 "$PY" benchmarks/gpu.py --precision 32-true \
    >"$OUT/gpu_32-true.json" 2>>"$OUT/bench_stderr.log"
for precision in bf16-mixed 16-mixed; do
    stage "bench-$precision" 100 "$PY" benchmarks/gpu.py --precision "$precision" --repeats 3 \
        >"$OUT/gpu_$precision.json" 2>>"$OUT/bench_stderr.log"
done

# The headline figures, so the end of this script's output says how it went.
"$PY" - "$OUT"/gpu_*.json <<'EOF'
import json, sys
for path in sys.argv[1:]:
    try:
        report = json.load(open(path))
    except ValueError:
        print(path, "holds no JSON report")
        continue
    for name, case in report["cases"].items():
        print(report["precision"], name, "ms/step", case["ms_per_step"], "vs raw", case["vs_raw"],
              "target", case["target_lightning_lib_vs_raw"], "peak MiB", case["peak_memory_mib"])
EOF
cat "$OUT/summary.txt"
exit "$status"
