#!/usr/bin/env bash
# The full-size `paper` run on one GPU, stage by stage, resuming where the last call stopped
# (issue 27, item 3). GPU time is scarce and the lent machines reach no network, so:
#
# Here, once (needs the package registry):   bash benchmarks/gpu_paper.sh wheels
#   writes .whl/ (git-ignored): this package's wheel and the pinned (requirements.lock) wheels of
#   what the device image lacks; it already has JAX with CUDA, numpy, scipy, pandas, h5py,
#   scikit-learn, matplotlib, seaborn, tqdm (/work/.library/device/KINDS.md).
# There, through the device tool:   bash benchmarks/gpu_paper.sh run 540     (carry .whl)
#   installs the wheels into /tmp/site, then runs
#   `carmenes-dtl run --demo --profile paper --seed 1 --out _build/gpu-paper` for at most 540 s
#   (then SIGINT: the stage in progress is abandoned, finished ones are kept). _build/ is ignored,
#   so it stays on the machine while that is warm: the same call again resumes with the first
#   unfinished stage. Extra arguments after the seconds go to `run` (e.g. --profile tiny to try
#   the script on a CPU). $OUT gets the log, run.json once the run ends, and the GPU's memory
#   and use every 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: benchmarks/gpu_paper.sh wheels | run [SECONDS [RUN ARGS...]]}

# Installed by the lock, absent from the device image (keras, astropy, dask and pooch with their needs).
MISSING="keras|namex|optree|astropy|astropy-iers-data|pyerfa|dask|partd|locket|pooch|platformdirs"
# The device's Python is 3.12 on x86-64 (KINDS.md).
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

wheels() {
  rm -rf .whl && mkdir .whl
  python3 -m pip wheel -q --no-deps -w .whl .
  # shellcheck disable=SC2046,SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS -d .whl $(grep -E "^($MISSING)==" requirements.lock)
  ls .whl
}

run() {
  local seconds=${1:-540}
  shift || true
  local out=${OUT:-_build/gpu-paper-out} site=/tmp/site
  mkdir -p "$out"
  if [ ! -x "$site/bin/carmenes-dtl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  fi
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} KERAS_BACKEND=jax PYTHONUNBUFFERED=1
  # Outside the checkout, so the installed package (with its data snapshots) is the one imported.
  (cd /tmp && python3 -c "import carmenes_dtl, jax, keras, numpy; print(carmenes_dtl.__file__, 'jax', jax.__version__,
      'keras', keras.__version__, 'numpy', numpy.__version__, jax.devices())") | tee -a "$out/gpu-paper.log"
  date -u +"start %FT%TZ" | tee -a "$out/gpu-paper.log"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L | tee -a "$out/gpu-paper.log"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 >>"$out/gpu.csv" &
  fi
  local status=0
  # Progress bars go to the log only; each stage's "[carmenes-dtl] <stage> done in <s> s" line also here.
  timeout --signal=INT --kill-after=30 "$seconds" "$site/bin/carmenes-dtl" run --demo --profile paper --seed 1 \
    --out _build/gpu-paper "$@" 2>>"$out/gpu-paper.log" | tee -a "$out/gpu-paper.log" || status=$?
  date -u +"end %FT%TZ, status $status" | tee -a "$out/gpu-paper.log"
  if [ -f _build/gpu-paper/run.json ]; then cp _build/gpu-paper/run.json "$out/"; fi
  return "$status"
}

case $mode in
  wheels) wheels ;;
  run) shift; run "$@" ;;
  *) echo "gpu_paper.sh: unknown mode '$mode'; use wheels or run" >&2; exit 2 ;;
esac
