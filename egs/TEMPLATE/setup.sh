#!/usr/bin/env bash
# Create a recipe for your own corpus: a folder of unlabelled audio plus a few transcribed files.
#
#   egs/TEMPLATE/setup.sh egs/<name> [--size tiny|base]
#   cd egs/<name> && ./run.sh --audio_dir /data/my_audio --transcripts /data/transcripts.txt
#
# The new egs/<name>/ holds run.sh, path.sh, cmd.sh, conf/ (links to the TEMPLATE's tiny configs, CPU-sized,
# or its base configs, the paper's, for GPUs) and local/data.sh, whose stage 1 runs utils/prepare_corpus.py:
# every audio file under --audio_dir (any format soundfile reads, any rate, nested folders) for
# pre-training; the transcript list (<file or id> <text> per line, or a Kaldi data dir with
# --labelled_dir) split into fine-tuning, dev and test sets, by speaker when speakers are known
# (--speaker_from folder: the folder holding each file). Edit conf/ (copy a link before changing it).
set -euo pipefail
size=tiny
target=
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --*) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) [ -z "${target}" ] || { echo "setup.sh: one recipe directory, please (got ${target} and $1)" >&2; exit 1; }
       target=$1; shift ;;
  esac
done
template=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
egs=$(dirname "${template}")
if [ -z "${target}" ]; then echo "setup.sh: usage: egs/TEMPLATE/setup.sh egs/<name> [--size tiny|base]" >&2; exit 1; fi
case "${size}" in tiny|base) ;; *) echo "setup.sh: --size ${size}: expected tiny (CPU) or base (GPU)" >&2; exit 1 ;; esac
if [ -e "${target}" ]; then echo "setup.sh: ${target} exists; choose a new name (nothing was changed)" >&2; exit 1; fi
mkdir -p "$(dirname "${target}")"
if [ "$(cd "$(dirname "${target}")" && pwd)" != "${egs}" ]; then
  echo "setup.sh: ${target} must be a folder directly under ${egs} (the recipe finds ../TEMPLATE and the repo's utils from there)" >&2
  exit 1
fi
name=$(basename "${target}")
mkdir -p "${target}/conf" "${target}/local"
finetune=finetune_tiny.yaml
[ "${size}" = tiny ] || finetune=finetune_10h.yaml
ln -s "../../TEMPLATE/conf/pretrain_${size}.yaml" "${target}/conf/pretrain.yaml"
ln -s "../../TEMPLATE/conf/${finetune}" "${target}/conf/finetune.yaml"
ln -s ../../TEMPLATE/conf/decode_greedy.yaml "${target}/conf/decode.yaml"
ln -s ../../TEMPLATE/conf/decode_kenlm.yaml "${target}/conf/decode_kenlm.yaml"

cat > "${target}/path.sh" <<'EOF'
# Sourced by run.sh: the aqc environment and the repository's utils/ on PATH.
AQC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1091
. "${AQC_ROOT}/tools/activate_python.sh"
export PATH=${AQC_ROOT}/utils:${PATH}
export PYTHONUNBUFFERED=1
# Threads: each aqc entry point chooses its own (aqc/cpu_threads.py); AQC_NUM_THREADS=N fixes the count.
EOF
cat > "${target}/cmd.sh" <<'EOF'
# How jobs are started (sourced by run.sh). Empty: directly on this machine, the default.
# Each launcher prefixes one stage's command ("python -m aqc.bin.<tool> ..."), e.g.
#   pretrain_launcher="torchrun --no-python --standalone --nproc_per_node 4"   (4 ranks; run.sh --ngpu 1 or 0)
#   finetune_launcher="srun --gres=gpu:1"   decode_launcher="srun --gres=gpu:1"
export pretrain_launcher=${pretrain_launcher:-}
export finetune_launcher=${finetune_launcher:-}
export decode_launcher=${decode_launcher:-}
EOF

cat > "${target}/local/data.sh" <<'EOF'
#!/usr/bin/env bash
# Stage 1: data/{train_pretrain,train_ft,dev,test} from your audio folder and transcripts
# (utils/prepare_corpus.py --help says what each option does).
set -euo pipefail
audio_dir=
transcripts=
labelled_dir=
speaker_from=none
dev_share=0.1
test_share=0.2
exclude_test_from_pretrain=false
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"
if [ -z "${audio_dir}" ] || { [ -z "${transcripts}" ] && [ -z "${labelled_dir}" ]; }; then
  log "ERROR: give --audio_dir DIR and --transcripts FILE (or --labelled_dir KALDI_DIR) to run.sh"; exit 1
fi
python "${root}/utils/prepare_corpus.py" --audio_dir "${audio_dir}" \
  ${transcripts:+--transcripts "${transcripts}"} ${labelled_dir:+--labelled_dir "${labelled_dir}"} \
  --speaker_from "${speaker_from}" --dev_share "${dev_share}" --test_share "${test_share}" \
  --exclude_test_from_pretrain "${exclude_test_from_pretrain}" --data_dir data
EOF
chmod +x "${target}/local/data.sh"

cat > "${target}/run.sh" <<EOF
#!/usr/bin/env bash
# ${name}: data2vec-aqc pre-training on your unlabelled audio, CTC fine-tuning (letters) on your transcripts.
# Made by egs/TEMPLATE/setup.sh (--size ${size}).
#   ./run.sh --audio_dir DIR (--transcripts FILE | --labelled_dir KALDI_DIR) [--speaker_from folder]
#            [--musan_root DIR] [template options: ../TEMPLATE/aqc.sh --help]
EOF
cat >> "${target}/run.sh" <<'EOF'
set -euo pipefail
audio_dir=
transcripts=
labelled_dir=
speaker_from=none
musan_root=
. ./path.sh
. ./cmd.sh
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --audio_dir|--audio-dir) audio_dir=$(cd "$2" && pwd); shift 2 ;;
    --transcripts) transcripts=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    --labelled_dir|--labelled-dir) labelled_dir=$(cd "$2" && pwd); shift 2 ;;
    --speaker_from|--speaker-from) speaker_from=$2; shift 2 ;;
    --musan_root|--musan-root) musan_root=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done

../TEMPLATE/aqc.sh --pretrain_set train_pretrain --finetune_set train_ft --valid_set dev --test_sets "dev test" \
  --local_data_opts "--audio_dir ${audio_dir} ${transcripts:+--transcripts ${transcripts}} ${labelled_dir:+--labelled_dir ${labelled_dir}} --speaker_from ${speaker_from}" \
  --musan_root "${musan_root}" --pretrain_config conf/pretrain.yaml --finetune_config conf/finetune.yaml \
  --decode_config conf/decode.yaml --token_type char "${opts[@]+"${opts[@]}"}"
EOF
chmod +x "${target}/run.sh"
echo "setup.sh: made ${target} (${size} configs). Next: cd ${target} && ./run.sh --audio_dir DIR --transcripts FILE"
