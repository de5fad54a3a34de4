#!/usr/bin/env bash
# One-shot check of aqc on a machine with one NVIDIA GPU (written for an H200: 16 CPU cores, no network).
# Run once from the repository root; it takes under 6 minutes and ends with a summary table.
#
#   bash bench/gpu_check.sh                 # the GPU check (exits non-zero if any step failed)
#   bash bench/gpu_check.sh --dry_run       # the same plumbing on the CPU at tiny sizes (a few minutes)
#
# Steps (each under `timeout`; a failed step is recorded and the next one runs):
#   1 gpu    torch sees a GPU; GPU name, torch / CUDA versions, the dtype ESPnet's --use_amp autocasts to
#   2 tests  pytest -x -q on the tests whose body mentions CUDA (bench/gpu_check_util.py cuda_tests)
#   3 train  64 synthetic speech-like 16 kHz files of 8-15 s, then 200 updates of the BASE model through
#            python -m aqc.bin.ssl_train --use_amp true (bf16 on this GPU; see below); audio s/s
#   4 ddp    the same run, 5 updates, under torchrun --standalone --nproc_per_node 1 (--ngpu 1
#            --multiprocessing_distributed false) and under ESPnet's own launcher
#            (--ngpu 1 --multiprocessing_distributed true): did each start and finish
#   5 bench  bench/bench_step.py --device cuda --dtype bf16 --config base --batch 12 --seconds 20; audio s/s
#
# bf16: ESPnet (202511) has no option for the AMP dtype. --use_amp true autocasts to bfloat16 whenever
# torch.cuda.is_bf16_supported() when espnet2.train.trainer is imported (any Ampere or newer GPU), else to
# float16; --train_dtype only offers float16/float32/float64 for the weights. Step 1 prints the dtype that
# ESPnet picked. ESPnet also keeps its GradScaler on in bf16 (harmless, not needed).
#
# Options:
#   --dry_run             CPU, tiny sizes: no GPU check, pretrain_tiny.yaml, --ngpu 0, 3 updates, no AMP,
#                         the tests and the DDP launches in their CPU form, bench_step on tiny
#   --install             run `bash tools/install.sh` first (needs the package index; not counted in the
#                         time budget), then use tools/venv/bin/python
#   --wheels DIR          offline alternative: pip-install DIR/*.whl (--no-index --no-deps) into a temp dir
#                         on PYTHONPATH, on top of a python that already has torch (e.g. a GPU image)
#   --total_s N           time budget of the steps in seconds (default 330; dry run 900)
#   --batch_bins N        samples per mini-batch of step 3 (default 1600000 = 100 s; ~8 utterances)
#   --updates N           updates of step 3 (default 200)
#   --keep true|false     keep the temp work dir (data, checkpoints) (default false)
#
# Python: tools/venv/bin/python if it exists, else `python` (or `python3`). Logs and summary.json go to
# $OUT when it is set (the device machine's output folder), else to a new temp dir; the path is printed.
# Test data: the tests read ../shared/data. If it is missing but ./shared/data exists (e.g. carried into
# the checkout), ../shared is linked to ./shared for the test step and the link is removed afterwards.
set -euo pipefail

dry_run=false
install=false
wheels=
total_s=
batch_bins=1600000
updates=200
keep=false

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry_run) dry_run=true; shift ;;
    --dry_run=*) dry_run=${1#*=}; shift ;;
    --install) install=true; shift ;;
    --wheels) wheels=${2:?--wheels needs a directory}; shift 2 ;;
    --total_s) total_s=${2:?}; shift 2 ;;
    --batch_bins) batch_bins=${2:?}; shift 2 ;;
    --updates) updates=${2:?}; shift 2 ;;
    --keep) keep=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in batch_bins updates; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --${v} ${!v}: expected a positive integer" >&2; exit 2; }
done
[ -n "${total_s}" ] || { if [ "${dry_run}" = true ]; then total_s=900; else total_s=330; fi; }
[[ ${total_s} =~ ^[1-9][0-9]*$ ]] || { echo "gpu_check.sh: --total_s ${total_s}: expected seconds" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

if [ -n "${OUT:-}" ]; then
  out_dir=${OUT}
  mkdir -p "${out_dir}"
else
  out_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_out.XXXXXX")
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_work.XXXXXX")
shared_link=
cleanup() {
  if [ -n "${shared_link}" ] && [ -L "${shared_link}" ]; then rm -f "${shared_link}"; fi
  if [ "${keep}" = true ]; then echo "work dir kept: ${work}"; else rm -rf "${work}"; fi
}
trap cleanup EXIT

export PYTHONUNBUFFERED=1
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"

# ------------------------------------------------------------------------------ python environment
if [ "${install}" = true ]; then
  echo "==> bash tools/install.sh (log: ${out_dir}/install.log)"
  bash tools/install.sh > "${out_dir}/install.log" 2>&1 \
    || { tail -n 30 "${out_dir}/install.log"; echo "gpu_check.sh: tools/install.sh failed" >&2; exit 1; }
fi
if [ -x tools/venv/bin/python ]; then
  py=tools/venv/bin/python
elif command -v python > /dev/null 2>&1; then
  py=python
else
  py=python3
fi
if [ -n "${wheels}" ]; then
  echo "==> pip install ${wheels}/*.whl into ${work}/site (log: ${out_dir}/install.log)"
  "${py}" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "${work}/site" \
    "${wheels}"/*.whl >> "${out_dir}/install.log" 2>&1 \
    || { tail -n 30 "${out_dir}/install.log"; echo "gpu_check.sh: installing the wheels failed" >&2; exit 1; }
  export PYTHONPATH="${work}/site:${PYTHONPATH}"
fi

# ------------------------------------------------------------------------------ step bookkeeping
t0=${SECONDS}
deadline=$((t0 + total_s))
steps=()
statuses=()
times=()
figures=()
failed=0

record() {  # record STEP STATUS SECONDS FIGURE
  steps+=("$1"); statuses+=("$2"); times+=("$3"); figures+=("$4")
  case "$2" in ok|skipped*) ;; *) failed=$((failed + 1)) ;; esac
  echo "    -> $2 in $3 s${4:+: $4}"
}

limit=0
budget() {  # budget WANT RESERVE: seconds this step may take, keeping RESERVE for the steps after it
  local left=$((deadline - SECONDS - $2))
  limit=$(($1 < left ? $1 : left))
}

rc=0
elapsed=0
timed() {  # timed LIMIT LOG CMD...: run CMD under timeout, append its output to LOG; sets rc, elapsed
  local lim=$1 log=$2 start=${SECONDS}
  shift 2
  if [ "${lim}" -lt 5 ]; then
    echo "not run: only ${lim} s left in the budget" >> "${log}"
    rc=125; elapsed=0; return 0
  fi
  { printf '\n$ timeout %s' "${lim}"; printf ' %q' "$@"; printf '\n'; } >> "${log}"
  if timeout --kill-after=10 "${lim}" "$@" >> "${log}" 2>&1; then rc=0; else rc=$?; fi
  elapsed=$((SECONDS - start))
}

status_of() {  # status_of RC: ok / timeout / failed (rc N) / not run
  case "$1" in
    0) echo ok ;;
    124|137) echo "timeout" ;;
    125) echo "not run (no time left)" ;;
    *) echo "failed (rc $1)" ;;
  esac
}

show_tail() {  # show_tail LOG [N]: the last N lines of LOG, and aqc's one-line user errors in it
  echo "    last lines of $1:"
  tail -n "${2:-25}" "$1" | sed 's/^/    | /'
  grep -E '^ERROR: ' "$1" | tail -n 2 | sed 's/^/    error: /' || true
}

progress() {  # progress LOG: the last mini-batch range ESPnet logged, and its seconds per update
  local line
  line=$(grep -oE '[0-9]+epoch:train:[0-9]+-[0-9]+batch:.*' "$1" | tail -n 1 || true)
  [ -n "${line}" ] || return 0
  printf 'reached mini-batches %s, %s s/update' "$(sed -E 's/^[0-9]+epoch:train:([0-9]+-[0-9]+)batch:.*/\1/' <<< "${line}")" \
    "$(grep -oE 'train_time=[0-9.e+-]+' <<< "${line}" | tail -n 1 | cut -d= -f2)"
}

json_get() {  # json_get JSON KEY: one top-level value of a JSON object ("" when absent)
  "${py}" -c 'import json, sys
try:
    v = json.loads(sys.argv[1]).get(sys.argv[2])
except Exception:
    v = None
print("" if v is None else v if isinstance(v, str) else json.dumps(v))' "$1" "$2" 2> /dev/null || true
}

last_json() { grep -E '^\{.*\}$' "$1" | tail -n 1 || true; }

if [ "${dry_run}" = true ]; then mode="dry run (CPU, tiny)"; else mode="GPU"; fi
echo "gpu_check.sh: ${mode}; python ${py}; logs in ${out_dir}; budget ${total_s} s"

# ------------------------------------------------------------------------------ 1 gpu
log=${out_dir}/1_gpu.log
: > "${log}"
echo "==> [1/5] gpu: torch, CUDA, GPU"
budget 60 275
env_json=
if [ "${dry_run}" = true ]; then
  timed "${limit}" "${log}" "${py}" bench/gpu_check_util.py env --espnet
  env_json=$(last_json "${log}")
  if [ "${rc}" = 0 ]; then
    record gpu "skipped (dry run)" "${elapsed}" "torch $(json_get "${env_json}" torch), cuda=$(json_get "${env_json}" cuda_available)"
  else
    record gpu "$(status_of "${rc}")" "${elapsed}" "env check failed"; show_tail "${log}"
  fi
else
  timed "${limit}" "${log}" "${py}" -c 'import torch; assert torch.cuda.is_available(), "torch sees no GPU"'
  if [ "${rc}" = 0 ]; then
    timed "$((limit - elapsed))" "${log}" "${py}" bench/gpu_check_util.py env --require_cuda --espnet
  fi
  env_json=$(last_json "${log}")
  if [ "${rc}" = 0 ]; then
    record gpu ok "$((SECONDS - t0))" "$(json_get "${env_json}" gpu) ($(json_get "${env_json}" memory_gib) GiB), torch $(json_get "${env_json}" torch), CUDA $(json_get "${env_json}" cuda_runtime), ESPnet AMP $(json_get "${env_json}" espnet_amp_dtype)"
  else
    record gpu "$(status_of "${rc}")" "$((SECONDS - t0))" "no usable GPU / environment"; show_tail "${log}"
  fi
fi
[ -z "${env_json}" ] || echo "    ${env_json}"

# ------------------------------------------------------------------------------ 2 tests
log=${out_dir}/2_tests.log
: > "${log}"
echo "==> [2/5] tests that look at CUDA"
budget 150 235
t_step=${SECONDS}
mapfile -t test_ids < <("${py}" bench/gpu_check_util.py cuda_tests tests 2>> "${log}" || true)
if [ ! -e ../shared/data ] && [ ! -L ../shared ] && [ -d shared/data ] && [ -w .. ]; then
  ln -s "${root}/shared" ../shared && shared_link=$(cd .. && pwd)/shared
  echo "linked ../shared -> ${root}/shared for the tests" | tee -a "${log}"
fi
[ -e ../shared/data ] || echo "    note: ../shared/data is missing; tests that read it will error" | tee -a "${log}"
if [ "${#test_ids[@]}" = 0 ]; then
  record tests failed "$((SECONDS - t_step))" "no CUDA test found (bench/gpu_check_util.py cuda_tests)"
else
  printf '    %s\n' "${test_ids[@]}"
  timed "${limit}" "${log}" "${py}" -m pytest -x -q -p no:cacheprovider "${test_ids[@]}"
  counts=$(grep -E '^=*\s*[0-9]+ (passed|failed|skipped|error|errors|deselected)' "${log}" | tail -n 1 \
           | sed -E 's/^=+ //; s/ =+$//' || true)
  [ -n "${counts}" ] || counts="no pytest summary"
  record tests "$(status_of "${rc}")" "${elapsed}" "${counts}"
  [ "${rc}" = 0 ] || show_tail "${log}"
fi
if [ -n "${shared_link}" ]; then rm -f "${shared_link}"; shared_link=; fi

# ------------------------------------------------------------------------------ 3 train
log=${out_dir}/3_train.log
: > "${log}"
data=${work}/data
if [ "${dry_run}" = true ]; then
  config=egs/TEMPLATE/conf/pretrain_tiny.yaml
  n_train=8; n_valid=2; min_s=1; max_s=2
  steps3=3; bins=64000; workers=1; ngpu=0; amp=false; ddp_updates=2
else
  config=egs/TEMPLATE/conf/pretrain_base.yaml
  n_train=64; n_valid=4; min_s=8; max_s=15
  steps3=${updates}; bins=${batch_bins}; workers=4; ngpu=1; amp=true; ddp_updates=5
fi
echo "==> [3/5] train: ${steps3} updates of ${config##*/}, --ngpu ${ngpu} --use_amp ${amp}, batch_bins ${bins}"
budget 40 220
timed "${limit}" "${log}" "${py}" bench/gpu_check_util.py make_data "${data}" --train "${n_train}" --valid "${n_valid}" \
  --min_seconds "${min_s}" --max_seconds "${max_s}"
data_rc=${rc}
data_s=${elapsed}
echo "    data: $(last_json "${log}") in ${data_s} s"

# Explicit batch settings: the run must be exactly ${steps3} updates whatever the config's global-batch
# options (samples_per_update etc., aqc/espnet/global_batch.py) say; those are switched off when known.
train_args() {  # train_args OUTPUT_DIR ITERS
  local a=(--config "${config}"
    --train_data_path_and_name_and_type "${data}/train/wav.scp,speech,sound"
    --train_shape_file "${data}/train/speech_shape"
    --valid_data_path_and_name_and_type "${data}/dev/wav.scp,speech,sound"
    --valid_shape_file "${data}/dev/speech_shape"
    --output_dir "$1" --ngpu "${ngpu}" --use_amp "${amp}" --seed 0
    --augmentation_conf background_p=0
    --batch_type numel --batch_bins "${bins}" --valid_batch_bins "${bins}"
    --accum_grad 1 --num_iters_per_epoch "$2" --max_epoch 1 --num_workers "${workers}"
    --use_tensorboard false --use_matplotlib false --log_interval 25 --keep_nbest_models 1)
  if grep -rqs -- '"--samples_per_update"' aqc/; then
    a+=(--samples_per_update none --batch_bins_per_rank none --updates_per_epoch none)
  fi
  printf '%s\n' "${a[@]}"
}
mapfile -t args3 < <(train_args "${work}/exp_train" "${steps3}")

budget 180 130
train_json=
if [ "${data_rc}" != 0 ]; then
  record train "$(status_of "${data_rc}")" "${data_s}" "making the data failed"; show_tail "${log}"
else
  timed "${limit}" "${log}" "${py}" -m aqc.bin.ssl_train "${args3[@]}"
  train_rc=${rc}
  train_wall=${elapsed}
  if [ "${train_rc}" = 0 ]; then
    timed 30 "${log}" "${py}" bench/gpu_check_util.py run_figures "${work}/exp_train"
    train_json=$(last_json "${log}")
  fi
  if [ "${train_rc}" = 0 ] && [ -n "${train_json}" ]; then
    ran=$(json_get "${train_json}" mini_batches_run)
    if [ "${ran}" = "${steps3}" ]; then st=ok; else st="failed (${ran} of ${steps3} mini-batches)"; fi
    record train "${st}" "${train_wall}" "$(json_get "${train_json}" summary)"
    echo "    ${train_json}"
  else
    prog=$(progress "${log}")
    record train "$(status_of "${train_rc}")" "${train_wall}" "training did not finish${prog:+; ${prog}}"
    show_tail "${log}" 40
  fi
fi

# ------------------------------------------------------------------------------ 4 ddp
log=${out_dir}/4_ddp.log
: > "${log}"
echo "==> [4/5] ddp: ${ddp_updates} updates under torchrun (1 process) and ESPnet's launcher"
ddp_jsons=()
ddp_one() {  # ddp_one NAME WANT RESERVE LAUNCHER... : the launch command precedes the training options
  local name=$1 want=$2 reserve=$3 exp=${work}/exp_$1
  shift 3
  echo "--- ${name}" >> "${log}"
  budget "${want}" "${reserve}"
  local a
  mapfile -t a < <(train_args "${exp}" "${ddp_updates}")
  timed "${limit}" "${log}" "$@" "${a[@]}"
  local run_rc=${rc} run_s=${elapsed} started=no j=
  [ ! -f "${exp}/config.yaml" ] || started=yes  # ESPnet writes it once the run is set up
  if [ "${run_rc}" = 0 ]; then
    timed 30 "${log}" "${py}" bench/gpu_check_util.py run_figures "${exp}"
    j=$(last_json "${log}")
  fi
  ddp_jsons+=("\"${name}\": ${j:-null}")
  if [ "${run_rc}" = 0 ] && [ -n "${j}" ]; then
    record "${name}" ok "${run_s}" "started, finished: $(json_get "${j}" mini_batches_run) updates, distributed=$(json_get "${j}" distributed)"
  else
    record "${name}" "$(status_of "${run_rc}")" "${run_s}" "started=${started}, finished=no"; show_tail "${log}" 30
  fi
}
if [ "${data_rc}" != 0 ]; then
  record ddp_torchrun "not run (no data)" 0 ""; record ddp_espnet_mp "not run (no data)" 0 ""
else
  ddp_one ddp_torchrun 75 95 "${py}" -m torch.distributed.run --standalone --nproc_per_node 1 \
    -m aqc.bin.ssl_train --multiprocessing_distributed false
  ddp_one ddp_espnet_mp 75 60 "${py}" -m aqc.bin.ssl_train --multiprocessing_distributed true
fi

# ------------------------------------------------------------------------------ 5 bench
log=${out_dir}/5_bench.log
: > "${log}"
if [ "${dry_run}" = true ]; then
  bench=(--device cpu --dtype fp32 --config tiny --batch 2 --seconds 1 --repeats 2 --warmup 1 --threads 1
         --no-memory --no-breakdown)
else
  bench=(--device cuda --dtype bf16 --config base --batch 12 --seconds 20)
fi
echo "==> [5/5] bench: bench/bench_step.py ${bench[*]}"
budget 120 0
timed "${limit}" "${log}" "${py}" bench/bench_step.py "${bench[@]}"
# the table row of the aqc step: | name | median | min | [CPU] | audio s/s | memory |
bench_aqc=$(awk -F'|' '/^\| aqc step \(fwd\+bwd\+EMA\)/ {gsub(/ /, "", $(NF-2)); print $(NF-2); exit}' "${log}")
bench_hf=$(awk -F'|' '/^\| HF Data2VecAudioModel/ {gsub(/ /, "", $(NF-2)); print $(NF-2); exit}' "${log}")
if [ "${rc}" = 0 ] && [ -n "${bench_aqc}" ]; then
  record bench ok "${elapsed}" "${bench_aqc} audio s/s aqc step (HF fwd+bwd ${bench_hf:-?})"
  sed -n '/^###/,$p' "${log}" | sed 's/^/    /'
else
  [ "${rc}" != 0 ] || rc=1
  record bench "$(status_of "${rc}")" "${elapsed}" "no table"; show_tail "${log}"
fi

# ------------------------------------------------------------------------------ summary
total=$((SECONDS - t0))
summary_txt=${out_dir}/summary.txt
{
  echo
  echo "gpu_check.sh summary (${mode}; ${total} s; logs: ${out_dir})"
  printf '%-14s | %-24s | %5s | %s\n' step status s figure
  printf '%s\n' "---------------+--------------------------+-------+--------------------------------------------"
  for i in "${!steps[@]}"; do
    printf '%-14s | %-24s | %5s | %s\n' "${steps[$i]}" "${statuses[$i]}" "${times[$i]}" "${figures[$i]}"
  done
  if [ "${failed}" = 0 ]; then echo "all steps passed"; else echo "${failed} step(s) failed"; fi
} | tee "${summary_txt}"

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "${s}"; }
{
  printf '{"mode": %s, "dry_run": %s, "total_s": %s, "failed_steps": %s, "python": %s,\n' \
    "$(json_str "${mode}")" "${dry_run}" "${total}" "${failed}" "$(json_str "${py}")"
  printf ' "env": %s,\n "train": %s,\n' "${env_json:-null}" "${train_json:-null}"
  printf ' "ddp": {%s},\n' "$(IFS=,; echo "${ddp_jsons[*]:-}")"
  printf ' "bench_audio_s_per_s": %s, "bench_hf_audio_s_per_s": %s,\n' \
    "$(json_str "${bench_aqc:-}")" "$(json_str "${bench_hf:-}")"
  printf ' "steps": ['
  for i in "${!steps[@]}"; do
    [ "${i}" = 0 ] || printf ','
    printf '\n  {"step": %s, "status": %s, "seconds": %s, "figure": %s}' "$(json_str "${steps[$i]}")" \
      "$(json_str "${statuses[$i]}")" "${times[$i]}" "$(json_str "${figures[$i]}")"
  done
  printf '\n]}\n'
} > "${out_dir}/summary.json"
[ "${failed}" = 0 ]
