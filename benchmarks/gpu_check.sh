#!/usr/bin/env bash
# The GPU check of issue 21, ready for the day a GPU is lent: one script, under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU (and torch's CUDA build)
#   bash benchmarks/gpu_check.sh --dry-run  # here, CPU only: the same steps at toy size, under a minute
#
# What it measures on a GPU, in order, each with its wall time; then one table:
#   1. tests/gpu (pytest -m gpu): forward + backward of the paper's network (base 32, 5 levels,
#      2x256x256x48) under bf16 and fp16 autocast; sliding-window inference on the device against the
#      CPU; one DDP step over an NCCL group of one process; `rrcunet predict --device cuda` on two
#      phantoms against the CPU.
#   2. the training step of the paper's configuration: `benchmarks/train_speed.py --gpu --steps 5`
#      (seconds per step, peak memory, with and without activation checkpointing, fp32 and bf16).
#   3. throughput: 41 full-size phantom CTs written as DICOM series (the paper's cohort: 41 CTs in
#      under 3 minutes), predicted with `rrcunet predict --device cuda --workers 4` (DICOM in, NIfTI +
#      SEG out; 4 threads prepare the next cases, since the GPU would otherwise wait for the CPU
#      stages; predict's default is 1, for memory); CTs per minute, and the stage timings summed
#      from the case JSONs by `rrcunet cohort`.
# Dry run: step 1 skips (no CUDA), step 2 is the CPU table at the recipe size with one step, step 3
# predicts 2 small phantoms on the CPU. The GPU's numbers go into docs/inference.md by hand.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
WORK=$(mktemp -d -t rrcunet_gpu_check.XXXXXX)
export THP_MEM_ALLOC_ENABLE=1 OMP_WAIT_POLICY=PASSIVE
declare -a ROWS
now() { date +%s.%N; }
row() { ROWS+=("| $1 | $2 | $(printf '%.1f' "$(echo "$4 - $3" | bc -l)") |"); }

echo "# rrcunet GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), work folder $WORK"
echo "# CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "# GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
python -c "import torch; print(f'# torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"

t0=$(now)
python -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs > "$WORK/pytest.txt" 2>&1
status=$(tail -n 1 "$WORK/pytest.txt")
row "1. tests/gpu" "$status" "$t0" "$(now)"

t0=$(now)
if [[ $DRY == 1 ]]; then
    python benchmarks/train_speed.py --steps 1 --warmup 0 --cpu-shape 48 48 32 > "$WORK/train.txt" 2>&1
else
    python benchmarks/train_speed.py --gpu --steps 5 > "$WORK/train.txt" 2>&1
fi
step=$(grep -m1 '^| RRc-UNet' "$WORK/train.txt" | awk -F'|' '{print $(NF-3)" s/step"}')
row "2. training step ($( [[ $DRY == 1 ]] && echo "CPU, 48x48x32" || echo "paper size, first row"))" "${step:-see $WORK/train.txt}" "$t0" "$(now)"

N=41; SIZE=full; DEVICE=cuda
[[ $DRY == 1 ]] && { N=2; SIZE=small; DEVICE=cpu; }
t0=$(now)
rrcunet phantoms -n "$N" --seed 41 --size "$SIZE" --dicom --val-fraction 0 -o "$WORK/cohort" > "$WORK/phantoms.txt" 2>&1
row "3a. write $N $SIZE phantoms as DICOM" "$(ls "$WORK/cohort/dicom" 2>/dev/null | wc -l) series" "$t0" "$(now)"
t0=$(now)
rrcunet predict "$WORK/cohort/dicom" -o "$WORK/pred" --device "$DEVICE" --workers 4 --no-progress > "$WORK/predict.txt" 2>&1
t1=$(now)
rrcunet cohort "$WORK/pred" > "$WORK/cohort.txt" 2>&1
rate=$(echo "$N * 60 / ($t1 - $t0)" | bc -l)
row "3b. predict $N CTs on $DEVICE" "$(tail -n 1 "$WORK/predict.txt" | sed 's/^.*: //'); $(printf '%.1f' "$rate") CTs/min" "$t0" "$t1"
stages=$(python - "$WORK/pred" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(f"{sys.argv[1]}/cohort.csv")) if r["status"] == "done"]
print(", ".join(f"{k} {sum(float(r[k + '_s'] or 0) for r in rows):.1f} s" for k in ("read", "lungmask", "model", "write")))
PY
)
ROWS+=("| 3c. stage totals | $stages | |")

echo
echo "| step | result | seconds |"
echo "|---|---|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "# details: $WORK/{pytest,train,phantoms,predict,cohort}.txt"
