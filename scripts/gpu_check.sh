#!/usr/bin/env bash
# The prepared GPU run, about 6 minutes on an H100/H200 (the step limits add up to 560 s, under one 600 s call).
# From the project root, on the GPU machine (after `bash ../shared/gpu-kit/prepare.sh` here, carrying .gpu/):
#     bash .gpu/setup.sh && OUT=$OUT/gpu bash scripts/gpu_check.sh     # then copy $OUT/gpu to docs/benchmarks/gpu/
# CPU smoke test (tiny sizes, Triton in its interpreter, no torchrun): SMOKE=1 bash scripts/gpu_check.sh
# Writes docs/benchmarks/gpu/ (results.md: device, driver, torch, triton; CSVs; plots; logs). Every step has its
# own time limit and a failed step does not stop the others; results.md says which steps passed.
set -u
OUT=${OUT:-docs/benchmarks/gpu}
PY=${PYTHON:-python}
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the training step runs elsewhere
SMOKE=${SMOKE:-0}
DATA=${DATA:-.gpu/datasets}
mkdir -p "$OUT"
STATUS="$OUT/steps.md"
echo "| step | status | seconds |" > "$STATUS"; echo "| --- | --- | --- |" >> "$STATUS"
step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout "$(( limit * SCALE ))" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "| $name | $([ $rc = 0 ] && echo ok || echo "failed (exit $rc, see $name.log)") | $(( $(date +%s) - t0 )) |" >> "$STATUS"
    tail -3 "$OUT/$name.log"
}
if [ "$SMOKE" = 1 ]; then
    DEV=cpu; QUICK=--quick; ITERS=2; TINY=--tiny; SCALE=4; export TRITON_INTERPRET=1  # the CPU is slower
else
    DEV=cuda; QUICK=; ITERS=200; TINY=; SCALE=1
fi

$PY - > "$OUT/environment.md" <<'PYEOF'
import platform, subprocess, torch
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = 'not installed'
print('| | |\n| --- | --- |')
print(f'| python | {platform.python_version()} |\n| torch | {torch.__version__} |\n| triton | {tv} |')
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    drv = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                         capture_output=True, text=True).stdout.strip()
    print(f'| device | {p.name}, {p.total_memory / 2**30:.0f} GiB |\n| driver | {drv} |\n| cuda | {torch.version.cuda} |')
else:
    print('| device | CPU (smoke test: no GPU numbers) |')
PYEOF

# 1. the tests (the CUDA ones run where CUDA is present; the interpreter test is skipped there)
step tests 180 $PY -m pytest -q -x tests/test_cuda.py tests/test_taylor_shift.py tests/test_taylor_shift_paths.py tests/test_taylor_swinir.py \
    tests/test_launch_light.py tests/test_precision.py tests/test_flex_form.py -k "not benchmark_quick and not interpreter"
# 2. the op: N = 576, 1024, 2304, 4096, d = 30, fp32 and bf16, forward and forward+backward, every form, SDPA, explicit
step op 120 $PY scripts/benchmark.py --device $DEV $QUICK --suites op --op-sides 24,32,48,64 --op-dims 30 \
    --dtypes float32,bfloat16 --repeats 5 --warmup 2 --out "$OUT/op"
# 3. whole models at LR 256² and 512², and the training step at the recipe's patch and batch, against SwinIR-w8
step model 100 $PY scripts/benchmark.py --device $DEV $QUICK --suites model,targets --model-sizes 256,512 \
    --repeats 3 --slow-repeats 2 --warmup 1 --out "$OUT/model"
# 4. 200 iterations x2 on an LMDB made from T91 (LR patch 48), validating on Set5, torchrun + NCCL
RUN=$(mktemp -d)
step train 120 bash -c "
    OPT=\$($PY scripts/gpu_train_check.py --t91 $DATA/T91 --set5 $DATA/Set5/HR --root $RUN --iters $ITERS $TINY | tail -1) &&
    cd $RUN && if [ $SMOKE = 1 ]; then
        PYTHONPATH=$PWD $PY -m basicsr_taylor.train -opt \$OPT --launcher none
    else
        PYTHONPATH=$PWD torchrun --nproc_per_node=1 --master_port=29517 $PWD/basicsr_taylor/train.py -opt \$OPT --launcher pytorch
    fi && grep -h 'psnr' experiments/*/train_*.log | tail -2"
# 5. fp16 / bf16 inference on a real photo: finite, within 0.1 dB of fp32
step half 40 $PY - $DEV $DATA <<'PYEOF'
import sys, cv2, numpy as np, torch
from basicsr_taylor import TaylorSwinIR
dev, data = torch.device(sys.argv[1]), sys.argv[2]
read = lambda p: torch.from_numpy(np.ascontiguousarray(cv2.imread(p)[..., ::-1].transpose(2, 0, 1))).float().div(255)[None]
lr, hr = read(f'{data}/Set5/LRbicx2/butterfly.png').to(dev), read(f'{data}/Set5/HR/butterfly.png').to(dev)
torch.manual_seed(0)
net = TaylorSwinIR(upscale=2, embed_dim=60, depths=[2, 2], num_heads=[2, 2], window_size=48, upsampler='pixelshuffle',
                   resi_connection='1conv', img_range=1.).to(dev).eval()
psnr = lambda out: float(-10 * torch.log10(((out.clamp(0, 1) - hr[..., :out.shape[-2], :out.shape[-1]]) ** 2).mean()))
with torch.no_grad():
    ref = net(lr).float()
    print(f'fp32: PSNR {psnr(ref):.3f} dB (an untrained network)')
    ok = True
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(dev.type, dtype=dtype):
            out = net(lr).float()
        finite, delta = bool(torch.isfinite(out).all()), psnr(out) - psnr(ref)
        ok &= finite and abs(delta) <= 0.1
        print(f'{dtype}: finite {finite}, PSNR {psnr(out):.3f} dB, {delta:+.3f} dB vs fp32')
sys.exit(0 if ok else 1)
PYEOF
{ echo "# GPU check"; echo; cat "$OUT/environment.md"; echo; echo "## Steps"; echo; cat "$STATUS"; echo;
  for f in op model; do [ -f "$OUT/$f/results.md" ] && { echo "## $f"; sed -n '/## Targets/,$p' "$OUT/$f/results.md"; echo; }; done
  for f in train half; do echo "## $f"; echo '```'; tail -5 "$OUT/$f.log"; echo '```'; done; } > "$OUT/results.md"
echo "wrote $OUT/results.md"
