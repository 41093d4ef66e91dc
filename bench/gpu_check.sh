#!/usr/bin/env bash
# The GPU path end to end, on a machine with a CUDA GPU, from the repository root:
#   bash bench/gpu_check.sh            (logs in $OUT, default gpu-check/)
# 1. the device tests (tests/test_devices.py: they skip without CUDA, run here);
# 2. the README's main command on the GPU (must end "4 of 4 jobs ok"), then evaluate.py,
#    export.py (device=cuda) and pareto.py on its runs;
# 3. the benches: harness vs plain loop on the GPU (bench/throughput.py --device cuda) and
#    the sweep one job at a time vs 4 at once on the one GPU (bench/sweep_concurrency.py).
# Each step prints its exit status and time; its output is in $OUT/<step>.log.
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export WANDB_MODE=offline PYTHONUNBUFFERED=1
nvidia-smi -L || { echo "no NVIDIA GPU here"; exit 1; }
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'" || exit 1

step() {
    local name=$1 start=$SECONDS
    shift
    timeout "${STEP_TIMEOUT:-900}" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? in $((SECONDS - start)) s"
}

sweep="$OUT/sweep"
step tests python -m pytest -q -rs tests/test_devices.py
tail -n 3 "$OUT/tests.log"
step sweep python src/train.py -m model.latent=1,10 beta=1e-5,1 "hydra.sweep.dir=$sweep"
grep -a "jobs ok" "$OUT/sweep.log" | tail -n 1
python - "$sweep" <<'PY'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(p.read_text()); m = s.get("metrics", {})
    print(f"  job {p.parent.name}: {s['status'][:80]} on {s.get('device')} in "
          f"{s.get('wall_time_s')} s, gen/acc {m.get('gen/acc')}")
PY
step evaluate python src/evaluate.py "ckpt_path=$sweep/1/checkpoints/best.ckpt"
step export python src/export.py "run=$sweep/1" device=cuda "out_dir=$OUT/deploy" \
    "targets=[host]" "~mcu" wandb.mode=disabled
step pareto python src/pareto.py "$sweep" --wandb-mode disabled
step throughput python bench/throughput.py --device cuda --epochs 5 --repeats 4
tail -n 4 "$OUT/throughput.log"
step concurrency python bench/sweep_concurrency.py --device cuda --jobs 4
tail -n 1 "$OUT/concurrency.log"
