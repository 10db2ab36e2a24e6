#!/usr/bin/env bash
# The full-size `paper` demo run on a lent GPU machine, stage by stage (issue 27, item 3).
# Those machines reach no network, start bare, keep files only while warm (the next call within
# 30 s) and give a session 15 minutes in all, so:
#
# Here, once (needs the package registry):   bash benchmarks/gpu_paper.sh wheels
#   writes .whl/ (git-ignored): this package's wheel (and COMMIT, the commit it was built from) and
#   the pinned (requirements.lock) wheels of what `run` imports that the device image lacks
#   (Keras, astropy, dask, with pooch for downloads); the image has JAX with CUDA, numpy, scipy,
#   pandas, h5py, scikit-learn, matplotlib, seaborn and tqdm (/work/.library/device/KINDS.md).
# There, through the device tool, carrying .whl, timeout_s 600:
#   bash benchmarks/gpu_paper.sh epoch 480   every stage at full size (22,933 spectra, n_in 2048),
#       one epoch per fit: the CPU's "Full size, one epoch per fit" run (benchmarks/README.md);
#       its stage times against the CPU's, and per-epoch costs to scale to the published epochs.
#   bash benchmarks/gpu_paper.sh paper 480   the published run; a run cut at the limit resumes
#       with its first unfinished stage when the same command comes again while the machine is
#       warm (seconds: `status`'s budget_left_s less ~90). A fresh machine starts from the demo.
# Each installs the wheels into /tmp/site, runs `carmenes-dtl run --demo --seed 1 --quiet` into
# _build/gpu-<mode>/ for at most SECONDS, then interrupts it (SIGINT, SIGKILL 30 s later: a stage
# cut midway leaves nothing that looks finished). Arguments after SECONDS go to `run`
# (`--profile tiny` tries the script on a CPU). $OUT gets the log of every call on this machine,
# stages.json (each finished stage's seconds and memory), run.json, estimates.csv and search.json
# once the run ends, and the GPU's memory and use every 10 s (gpu.csv; JAX allocates on demand).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: benchmarks/gpu_paper.sh wheels | epoch|paper [SECONDS [RUN ARGS...]]"
mode=${1:?$usage}

MISSING="keras|namex|optree|astropy|astropy-iers-data|pyerfa|dask|partd|locket|pooch|platformdirs"
# The device's Python is 3.12 on x86-64 (KINDS.md).
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
# The 286 stars of the CPU's paper-profile runs (benchmarks/README.md).
PAPER=(--profile paper --set n_stars=286)
# The CPU table's one-epoch run: the largest autoencoder only, every stage on the full set.
ONE_EPOCH=(--set 'ae.n_in_grid=[2048]' --set 'ae.l1_grid=[1e-7,1.1e-7,1.2e-7]'
  --set ae.search_epochs=1 --set ae.epochs=1 --set finetune.epochs=1 --set cnn.epochs=1)

wheels() {
  rm -rf .whl build && mkdir .whl
  python3 -m pip wheel -q --no-deps -w .whl .
  git describe --always --dirty >.whl/COMMIT
  # shellcheck disable=SC2046,SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS -d .whl $(grep -E "^($MISSING)==" requirements.lock)
  ls .whl
}

install() {
  local site=/tmp/site sum
  [ -d .whl ] || { echo "gpu_paper.sh: no .whl/: run 'wheels' here first and carry .whl" >&2; exit 2; }
  sum=$(cat .whl/*.whl | sha256sum)
  if [ "$(cat "$site/.wheels" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    echo "$sum" >"$site/.wheels"
  fi
  export PATH=$site/bin:$PATH PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
}

run() {
  local name=$1 seconds=$2 status=0 smi=""
  shift 2
  local dir=_build/gpu-$name out=${OUT:-_build/gpu-$name-out}
  local log=$dir.log
  mkdir -p "$out" _build
  install
  export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
  if command -v nvidia-smi >/dev/null; then
    export JAX_PLATFORMS=cuda  # no silent fall-back to the CPU
    nvidia-smi -L >>"$log"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 >>"$dir-gpu.csv" 2>/dev/null &
    smi=$!
  fi
  # Outside the checkout, so the installed package (with its data snapshots) is the one imported; where
  # this fails (no CUDA device, say) there is no run, and the log still comes back.
  (cd /tmp && python3 -c "import carmenes_dtl, jax, keras, numpy, scipy, pandas, sklearn, h5py, astropy
print(carmenes_dtl.__file__, *(f'{m.__name__} {m.__version__}' for m in (jax, keras, numpy, scipy, pandas, sklearn,
      h5py, astropy)), jax.devices())") >>"$log" 2>&1 || status=$?
  echo "wheel of $(cat .whl/COMMIT 2>/dev/null); start $(date -u +%FT%TZ): $name, at most $seconds s" >>"$log"
  if [ "$status" = 0 ]; then
    timeout --signal=INT --kill-after=30 "$seconds" carmenes-dtl run --demo --seed 1 --quiet --out "$dir" \
      "$@" >>"$log" 2>&1 || status=$?
  fi
  echo "end $(date -u +%FT%TZ), status $status" >>"$log"
  if [ -n "$smi" ]; then kill "$smi" 2>/dev/null || true; fi
  tail -40 "$log"  # the calls so far: versions, devices, each stage's "done in"
  cp "$log" "$out/gpu-$name.log"
  for f in "$dir-gpu.csv" "$dir/stages.json" "$dir/run.json" "$dir/estimates.csv" "$dir/models/search.json"; do
    if [ -f "$f" ]; then cp "$f" "$out/"; fi
  done
  return "$status"
}

case $mode in
  wheels) wheels ;;
  epoch) shift; run epoch "${1:-480}" "${PAPER[@]}" "${ONE_EPOCH[@]}" "${@:2}" ;;
  paper) shift; run paper "${1:-480}" "${PAPER[@]}" "${@:2}" ;;
  *) echo "gpu_paper.sh: unknown mode '$mode'; $usage" >&2; exit 2 ;;
esac
