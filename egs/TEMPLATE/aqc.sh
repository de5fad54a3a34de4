#!/usr/bin/env bash
# Shared stages of every aqc recipe; a corpus's run.sh sets its options and calls this script.
#
# Stages:
#   1. data preparation (local/data.sh) into Kaldi-style data dirs; the dirs are validated whenever
#      stage 1 is in range
#   2. MUSAN noise list (and RIR list) for the augmentation
#   3. format: 16 kHz mono audio, utt2num_samples, duration filters (training sets only), token list
#   4. SSL pre-training (data2vec-aqc; ablations by --pretrain_config), probed after each epoch on the
#      fine-tuning train and dev sets (--probe); then the upstream is exported (--ssl_select)
#   5. CTC fine-tuning through the aqc frontend
#   6. decoding and scoring into RESULTS.md
#   7. packing (only when asked: --stop_stage 7): the fine-tuned model and its upstream into one archive
#      each, and the upstream as a Hugging Face folder with a model card, in exp/packed/<asr_tag>/
#
# Options (each --name value):
#   --stage, --stop_stage    first and last stage to run (1 <= stage <= stop_stage <= 7; default 1 to 6)
#   --force (true|false)     run the stages in range even if their markers say they are done (training
#                            then starts afresh: the old experiment is moved to <expdir>/superseded)
#   --nj                     parallel jobs for data preparation, formatting and decoding
#   --ngpu                   GPUs for training (0: CPU). N > 1 starts one process per GPU (DDP, ESPnet's
#                            --multiprocessing_distributed true); with a launcher (cmd.sh) the launcher starts
#                            the ranks and each takes --ngpu GPUs (1, or 0 for CPU ranks)
#   --num_workers            data-loader workers for training (default: the training config's num_workers)
#   --dry_run (true|false)   print the commands of stages 4-6 (and the global batch they give) instead of
#                            running anything; no GPU check, nothing written
#   --pretrain_set, --finetune_set, --valid_set, --test_sets   data directory names
#   --local_data_opts        options passed to local/data.sh
#   --musan_root, --musan_subsets, --rir_root   augmentation sources (empty musan_root: no background noise)
#   --pretrain_config, --finetune_config, --decode_config
#   --pretrain_args, --finetune_args, --decode_args  extra options for the training/decoding commands
#   --token_type (char|word|bpe), --nbpe
#   --token_inventory        a fixed character list (one per line, <space> for the space) for the token list,
#                            instead of the characters of the fine-tuning text (char only)
#   --select_by (wer|loss)   the fine-tuned checkpoint stage 6 decodes: lowest dev word error rate
#                            (valid.wer_ctc.best.pth, as the reference) or lowest dev loss (valid.loss.best.pth)
#   --lm_file                an n-gram LM (ARPA, or a KenLM binary with --lexicon): stage 6 decodes a second
#                            time with it (--lm_decode_config), into decode_<config>_<lm name>/
#   --lexicon                words spelled in the model's tokens for --lm_file (default: made from the ARPA's
#                            unigrams by utils/make_lexicon.py)
#   --lm_decode_config       the decoding config of the LM pass (default conf/decode_kenlm.yaml)
#   --init_from_pretrain (true|false): false fine-tunes a randomly initialised encoder (a baseline)
#                            A fine-tuning config whose frontend is not aqc (e.g. ESPnet's log-mel "default")
#                            uses no upstream at all: stage 4 does not run for it (the log-mel baseline)
#   --finetune_seeds N       fine-tune (and decode) N times, with seeds s, s+1, ..., s+N-1 (s: the fine-tuning
#                            config's seed, ESPnet's default 0): the first is exp/asr_<asr_tag>, the others
#                            exp/asr_<asr_tag>_seed<seed>; RESULTS.md gives mean and spread over them (default 1)
#   --pretrain_seeds N       pre-train N times (stage 4), with seeds p, p+1, ..., p+N-1 (p: the pre-training
#                            config's seed, default 0), and fine-tune each --finetune_seeds times: the first is
#                            exp/ssl_<tag> -> exp/asr_<asr_tag>, the others exp/ssl_<tag>_pseed<seed> ->
#                            exp/asr_<asr_tag>_pseed<seed> (and its _seed<k> runs); RESULTS.md also pools each
#                            system over all its pre-trainings. A system without pre-training (log-mel, random
#                            initialisation) has its fine-tuning seeds only (default 1)
#   --extra_unlabelled_dir   folders of more unlabelled audio (.wav/.flac, searched recursively; several
#                            separated by spaces) pooled with --pretrain_set for pre-training only: stage 1
#                            writes data/<pretrain_set>_pooled (utils/pool_unlabelled.py)
#   --probe (true|false)     stage 4 probes the encoder after each epoch on the fine-tuning train and dev sets
#                            (aqc.espnet.training_probe; probe_conf in the pre-training config; default true)
#   --ssl_select (probe|latest|valid_loss)  the pre-training checkpoint fine-tuning starts from: by the probe
#                            (default with --probe true: the last epoch unless the probe scored it worse than
#                            its best epoch by more than one standard error), the last one (default with
#                            --probe false), or the lowest valid loss; exported after stage 4 to
#                            exp/ssl_<tag>/aqc_model.<select>.pt (aqc_model.<select>.pt.json says what was chosen;
#                            aqc_model.pt links to the latest export). Another selection exports without
#                            pre-training again; its fine-tuning is exp/asr_<config>_<tag>_<select> unless
#                            --asr_tag names it (no suffix for probe)
#   --init_upstream          continue pre-training (stage 4) from a released model: an aqc model file, an
#                            ESPnet aqc checkpoint, a Hugging Face Data2VecAudio folder or a fairseq data2vec(-aqc)
#                            checkpoint (its size must be the pre-training config's)
#   --tag                    name of the pre-training experiment, exp/ssl_<tag> (default: the config's name)
#   --asr_tag                name of the fine-tuning experiment, exp/asr_<asr_tag> (default: --finetune_name,
#                            then the tag, or "scratch" without pre-training)
#   --finetune_name          what the default --asr_tag starts with (default: the fine-tuning config's file
#                            name); compare.sh keeps a baseline's name when it has a config of its own
#   --results_notes          text placed at the top of RESULTS.md (e.g. what the WER column means here)
#   --results_file           where stage 6 writes the results (default RESULTS.md; tuning runs with their own
#                            --expdir write elsewhere so the recipe's table stays the recipe's)
#   --results_rank_by (wer|cer)  the error rate RESULTS.md's seed tables order systems by (default wer; cer for
#                            a letter recogniser whose WER sits near 100 % for every system)
#   --hf_license, --hf_language, --hf_dataset   the model card's metadata (stage 7)
#   --min_duration, --max_duration   seconds; stage 3 drops training utterances outside them (the valid
#                            and test sets are used in full: an unusable utterance there stops stage 3)
#   --dumpdir, --expdir
# Environment (the recipe's cmd.sh): pretrain_launcher, finetune_launcher, decode_launcher prefix the
# commands of stages 4, 5 and 6 (torchrun, srun, ...); empty runs them directly.
#
# Markers: a finished stage writes <dir>/.done.N holding the record of what it depended on (options,
# config contents, data files, the model it started from: utils/stage_inputs.py). A rerun skips a stage
# whose record is unchanged, and re-runs one whose inputs changed, saying which. Stage 6's marker is per
# decoding config (<asr_exp>/decode_<config>/.done.6); stages 1 and 3 of a run pooling --extra_unlabelled_dir
# keep their own (.done.N.<pretrain_set>). A training stage whose inputs changed does not
# resume the old experiment: that is moved to <expdir>/superseded/<name>.<time> and training starts
# afresh; an interrupted run with the same inputs (<dir>/.started.N) resumes. Audio contents are not
# hashed: after changing a corpus's audio in place, rerun the stages that read it with
# --stage N --force true.
set -euo pipefail

stage=1
stop_stage=6
force=false
nj=2
ngpu=0
num_workers=
dry_run=false
pretrain_set=
finetune_set=
valid_set=
test_sets=
local_data_opts=
musan_root=
musan_subsets=noise/free-sound
rir_root=
pretrain_config=
finetune_config=
decode_config=
pretrain_args=
finetune_args=
decode_args=
token_type=char
nbpe=100
token_inventory=
select_by=wer
lm_file=
lexicon=
lm_decode_config=conf/decode_kenlm.yaml
init_from_pretrain=true
finetune_seeds=1
pretrain_seeds=1
extra_unlabelled_dir=
probe=true
ssl_select=
init_upstream=
tag=
asr_tag=
finetune_name=
results_notes=
results_file=RESULTS.md
results_rank_by=wer
hf_license=cc-by-4.0
hf_language=en
hf_dataset=
min_duration=0.1
max_duration=30
dumpdir=dump
expdir=exp

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../utils/log.sh
. "${root}/utils/log.sh"
# shellcheck source=../../utils/parse_options.sh
. "${root}/utils/parse_options.sh"
# shellcheck source=../../utils/augmentation_args.sh
. "${root}/utils/augmentation_args.sh"
# shellcheck source=../../utils/run_records.sh
. "${root}/utils/run_records.sh"

for required in pretrain_set finetune_set valid_set test_sets pretrain_config finetune_config decode_config; do
  if [ -z "${!required}" ]; then log "ERROR: --${required} is required (set it in run.sh)"; exit 1; fi
done
# A stage number that is not one would make every test below false and run nothing (or everything).
for opt in stage stop_stage; do
  if ! [[ ${!opt} =~ ^[1-7]$ ]]; then
    log "ERROR: --${opt} ${!opt}: expected a stage number from 1 to 7 (1 <= --stage <= --stop_stage <= 7)"; exit 1
  fi
done
if [ "${stop_stage}" -lt "${stage}" ]; then
  log "ERROR: --stop_stage ${stop_stage} is below --stage ${stage}: use 1 <= --stage <= --stop_stage <= 7"; exit 1
fi
for opt in force init_from_pretrain dry_run probe; do
  if [ "${!opt}" != true ] && [ "${!opt}" != false ]; then
    log "ERROR: --${opt} ${!opt}: expected true or false"; exit 1
  fi
done
case "${token_type}" in
  char|word|bpe) ;;
  *) log "ERROR: --token_type ${token_type}: expected char, word or bpe"; exit 1 ;;
esac
if [ -n "${token_inventory}" ] && [ "${token_type}" != char ]; then
  log "ERROR: --token_inventory is a character list: it needs --token_type char (not ${token_type})"; exit 1
fi
[ -n "${ssl_select}" ] || { [ "${probe}" = true ] && ssl_select=probe; } || ssl_select=latest
case "${results_rank_by}" in
  wer|cer) ;;
  *) log "ERROR: --results_rank_by ${results_rank_by}: expected wer or cer"; exit 1 ;;
esac
case "${ssl_select}" in
  probe|latest|valid_loss) ;;
  *) log "ERROR: --ssl_select ${ssl_select}: expected probe, latest or valid_loss"; exit 1 ;;
esac
if [ "${ssl_select}" = probe ] && [ "${probe}" != true ]; then
  log "ERROR: --ssl_select probe needs the probe (--probe true); with --probe false use --ssl_select latest"; exit 1
fi
case "${select_by}" in
  wer|loss) ;;
  *) log "ERROR: --select_by ${select_by}: expected wer (lowest dev word error rate) or loss"; exit 1 ;;
esac
if ! [[ ${finetune_seeds} =~ ^[1-9][0-9]*$ ]]; then
  log "ERROR: --finetune_seeds ${finetune_seeds}: expected a number of fine-tuning runs (1 or more)"; exit 1
fi
if ! [[ ${pretrain_seeds} =~ ^[1-9][0-9]*$ ]]; then
  log "ERROR: --pretrain_seeds ${pretrain_seeds}: expected a number of pre-training runs (1 or more)"; exit 1
fi
if [ "${pretrain_seeds}" -gt 1 ] && [[ " ${pretrain_args} " =~ [[:space:]]--seed[[:space:]=] ]]; then
  log "ERROR: --pretrain_seeds ${pretrain_seeds} sets each pre-training's --seed: remove --seed from --pretrain_args" \
      "(set the first seed as seed: in ${pretrain_config})"; exit 1
fi
for dir in ${extra_unlabelled_dir}; do
  if [ ! -d "${dir}" ]; then log "ERROR: --extra_unlabelled_dir ${dir}: no such folder"; exit 1; fi
done
if ! [[ ${ngpu} =~ ^[0-9]+$ ]]; then log "ERROR: --ngpu ${ngpu}: expected a number of GPUs (0: CPU)"; exit 1; fi
if [ -n "${num_workers}" ] && ! [[ ${num_workers} =~ ^[0-9]+$ ]]; then
  log "ERROR: --num_workers ${num_workers}: expected a number of data-loader workers"; exit 1
fi
if [ -n "${lm_file}" ] && [ "${dry_run}" != true ]; then
  for f in "${lm_file}" "${lm_decode_config}" ${lexicon:+"${lexicon}"}; do
    if [ ! -s "${f}" ]; then log "ERROR: ${f} not found or empty (--lm_file / --lm_decode_config / --lexicon)"; exit 1; fi
  done
fi
# Training and decoding would find out only after the data stages: say it before anything runs (a dry run
# prints the commands for another machine).
if [ "${ngpu}" -gt 0 ] && [ "${stop_stage}" -ge 4 ] && [ "${dry_run}" != true ]; then
  visible=$(python -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
  if [ "${visible}" -lt "${ngpu}" ]; then
    log "ERROR: --ngpu ${ngpu}, but PyTorch sees ${visible} GPU(s) on this machine. Fix: --ngpu ${visible}" \
        "$([ "${visible}" -eq 0 ] && echo "runs on the CPU")"
    exit 1
  fi
fi

utils=${root}/utils
# CONFIG KEY=DEFAULT ...: top-level values of a YAML config, one per line (DEFAULT without the file or the
# key; a file that is not YAML stops the run); one Python start for all the keys.
config_values() {
  python -c 'import sys, yaml
try:
    c = yaml.safe_load(open(sys.argv[1])) or {}
except OSError:
    c = {}
except yaml.YAMLError as e:
    sys.exit(f"ERROR: {sys.argv[1]} is not valid YAML: {e}")
for key, _, default in (a.partition("=") for a in sys.argv[2:]):
    v = c.get(key)
    print(default if v is None else v)' "$@"
}
values=$(config_values "${finetune_config}" frontend=aqc seed=0) || exit 2
{ read -r finetune_frontend; read -r first_seed; } <<< "${values}"
first_pretrain_seed=$(config_values "${pretrain_config}" seed=0) || exit 2
# What fine-tuning starts from: a pre-trained upstream, the same encoder untrained, or no upstream (a
# fine-tuning config with another frontend, e.g. ESPnet's log-mel features).
if [ "${finetune_frontend}" != aqc ]; then
  upstream_kind=none
elif [ "${init_from_pretrain}" = true ]; then
  upstream_kind=pretrained
else
  upstream_kind=random
fi
if [ -n "${extra_unlabelled_dir}" ]; then
  pooled_from=${pretrain_set}
  pretrain_set=${pretrain_set}_pooled
fi
[ -n "${tag}" ] || tag=$(basename "${pretrain_config}" .yaml)
ssl_exp=${expdir}/ssl_${tag}
if [ -z "${asr_tag}" ]; then
  asr_tag=${finetune_name:-$(basename "${finetune_config}" .yaml)}
  case "${upstream_kind}" in
    pretrained) asr_tag=${asr_tag}_${tag}
                [ "${ssl_select}" = probe ] || asr_tag=${asr_tag}_${ssl_select} ;;
    random) asr_tag=${asr_tag}_scratch ;;
  esac
fi
if ! [[ ${first_seed} =~ ^[0-9]+$ ]]; then
  log "ERROR: ${finetune_config}: seed ${first_seed}: expected a whole number"; exit 1
fi
if ! [[ ${first_pretrain_seed} =~ ^[0-9]+$ ]]; then
  log "ERROR: ${pretrain_config}: seed ${first_pretrain_seed}: expected a whole number"; exit 1
fi
# Pre-training run P (0 <= P < --pretrain_seeds) trains with seed first_pretrain_seed + P; run 0 is the plain
# experiment (its config's seed), the others carry the seed in their names, and so do their fine-tunings.
base_tag=${tag} base_asr_tag=${asr_tag} base_pretrain_args=${pretrain_args}
use_pretrain_run() {  # P
  if [ "$1" -eq 0 ]; then
    tag=${base_tag} asr_tag=${base_asr_tag} pretrain_args=${base_pretrain_args}
  else
    local s=$((first_pretrain_seed + $1))
    tag=${base_tag}_pseed${s} asr_tag=${base_asr_tag}_pseed${s}
    pretrain_args="${base_pretrain_args:+${base_pretrain_args} }--seed ${s}"
  fi
  ssl_exp=${expdir}/ssl_${tag}
}
pretrain_runs=1
if [ "${upstream_kind}" = pretrained ]; then
  pretrain_runs=${pretrain_seeds}
elif [ "${pretrain_seeds}" -gt 1 ]; then
  log "NOTE: --pretrain_seeds ${pretrain_seeds}: exp/asr_${asr_tag} has no pre-training; its spread is its" \
      "--finetune_seeds ${finetune_seeds} fine-tuning runs"
fi
# Fine-tuning run R (0 <= R < --finetune_seeds) trains with seed first_seed + R; run 0 is the plain
# experiment (its config's seed), the others carry the seed in their name.
use_finetune_run() {  # R
  if [ "$1" -eq 0 ]; then
    seed= asr_exp=${expdir}/asr_${asr_tag}
  else
    seed=$((first_seed + $1)) asr_exp=${expdir}/asr_${asr_tag}_seed$((first_seed + $1))
  fi
}
use_finetune_run 0
token_dir=data/token_list/${token_type}
[ "${token_type}" = bpe ] && token_dir=data/token_list/bpe${nbpe}
[ "${dry_run}" = true ] || mkdir -p "${expdir}"
stage_times=${expdir}/stage_times.tsv

all_sets() { echo "${pretrain_set} ${finetune_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | xargs; }
# The valid and test sets are used in full (no filter; unusable audio is an error); the others are training sets.
scored_sets() { echo "${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | xargs; }
is_scored_set() { [[ " $(scored_sets) " == *" $1 "* ]]; }
labelled_sets() { echo "${finetune_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | xargs; }
is_labelled_set() { [[ " $(labelled_sets) " == *" $1 "* ]]; }

# ------------------------------------------------------------------------------------------ bookkeeping
in_range() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }

stage_name() {
  case $1 in
    1) echo "data preparation" ;;
    2) echo "noise and RIR lists" ;;
    3) echo "format, filter, token list" ;;
    4) echo "SSL pre-training (${ssl_exp})" ;;
    5) echo "CTC fine-tuning (${asr_exp})" ;;
    6) echo "decoding and scoring (${decode_dir})" ;;
    7) echo "packing (${expdir}/packed/${asr_tag})" ;;
  esac
}

# Stage 6 runs once per decoding: the decode config, and the LM pass with --lm_file. use_decoding sets
# the one stage 6 works on (decode_dir, its marker's directory, is named after the config and the LM).
decodings() {
  echo plain
  if [ -n "${lm_file}" ]; then echo lm; fi
}
use_decoding() {  # plain|lm
  decoding=$1
  if [ "${decoding}" = lm ]; then
    local lm_name; lm_name=$(basename "${lm_file}"); lm_name=${lm_name%%.*}
    decoding_config=${lm_decode_config}
    decode_dir=${asr_exp}/decode_$(basename "${lm_decode_config}" .yaml)_${lm_name}
  else
    decoding_config=${decode_config}
    decode_dir=${asr_exp}/decode_$(basename "${decode_config}" .yaml)
  fi
}
use_decoding plain

# Where stage N writes its marker; for stages 4-6 it is also the experiment directory the stage fills.
stage_dir() {
  case $1 in
    1) echo data ;;
    2) echo data/augment ;;
    3) echo "${dumpdir}" ;;
    4) echo "${ssl_exp}" ;;
    5) echo "${asr_exp}" ;;
    6) echo "${decode_dir}" ;;
    7) echo "${expdir}/packed/${asr_tag}" ;;
  esac
}

# The model stage 6 decodes: ESPnet's best by dev word error rate (the fine-tuning config's
# best_model_criterion lists valid wer_ctc) or by dev loss (--select_by).
asr_model_file() {
  if [ "${select_by}" = wer ]; then echo "${asr_exp}/valid.wer_ctc.best.pth"; else echo "${asr_exp}/valid.loss.best.pth"; fi
}

# Stage N's record when finished (done) or running (started). Stages 1 and 3 of a run that pools
# --extra_unlabelled_dir keep records of their own (<dir>/.done.N.<pretrain_set>): it writes data and dump
# folders of its own beside the plain ones, so a pooled run and a plain one (each in its own --expdir) can
# alternate without either finding the other's record.
stage_marker() {  # stage_marker N [done|started]
  local suffix=
  case $1 in 1|3) [ -z "${extra_unlabelled_dir}" ] || suffix=.${pretrain_set} ;; esac
  echo "$(stage_dir "$1")/.${2:-done}.$1${suffix}"
}

# What stage N depends on (see utils/stage_inputs.py for the kinds), printed as its record.
stage_record() {
  local specs=() dset
  case $1 in
    1) specs=("opt:local_data_opts=${local_data_opts}" "opt:pretrain_set=${pretrain_set}"
              "opt:finetune_set=${finetune_set}" "opt:valid_set=${valid_set}" "opt:test_sets=${test_sets}"
              "tree:local=local")
       [ -z "${extra_unlabelled_dir}" ] || specs+=("opt:extra_unlabelled_dir=$(abs_paths ${extra_unlabelled_dir})") ;;
    2) specs=("path:musan_root=${musan_root}" "opt:musan_subsets=${musan_subsets}" "path:rir_root=${rir_root}") ;;
    3) specs=("opt:pretrain_set=${pretrain_set}" "opt:finetune_set=${finetune_set}" "opt:valid_set=${valid_set}"
              "opt:test_sets=${test_sets}" "opt:min_duration=${min_duration}" "opt:max_duration=${max_duration}"
              "opt:token_type=${token_type}")
       [ "${token_type}" = bpe ] && specs+=("opt:nbpe=${nbpe}")
       [ -z "${token_inventory}" ] || specs+=("file:token_inventory=${token_inventory}")
       for dset in $(all_sets); do specs+=("dir:data/${dset}=data/${dset}"); done ;;
    4) specs=("yaml:pretrain_config=${pretrain_config}" "opt:pretrain_args=${pretrain_args}"
              "dir:${dumpdir}/${pretrain_set}=${dumpdir}/${pretrain_set}"
              "dir:${dumpdir}/${valid_set}=${dumpdir}/${valid_set}"
              "file:noise_list=${augment_noise_list}" "file:rir_list=${augment_rir_list}"
              "opt:probe=${probe}")
       # The probe's data (the fine-tuning sets) are not inputs: another fine-tuning subset must not re-run
       # pre-training. note_probe_data says when the finished run probed on other data.
       if [ -d "${init_upstream}" ]; then specs+=("tree:init_upstream=${init_upstream}")
       elif [ -n "${init_upstream}" ]; then specs+=("file:init_upstream=${init_upstream}"); fi ;;
    5) specs=("yaml:finetune_config=${finetune_config}" "opt:finetune_args=${finetune_args}"
              "opt:token_type=${token_type}" "file:token_list=${token_dir}/tokens.txt"
              "dir:${dumpdir}/${finetune_set}=${dumpdir}/${finetune_set}"
              "dir:${dumpdir}/${valid_set}=${dumpdir}/${valid_set}" "opt:init_from_pretrain=${init_from_pretrain}")
       [ "${token_type}" = bpe ] && specs+=("file:bpe_model=${token_dir}/bpe.model")
       [ -z "${seed}" ] || specs+=("opt:seed=${seed}")
       case "${upstream_kind}" in
         pretrained) specs+=("file:upstream_model=$(upstream_file)") ;;
         # The untrained upstream is export_model's draw from the pre-training config's model_conf (seed 0):
         # that key is its whole input, so an augmentation or schedule edit does not re-run this baseline.
         random) specs+=("yamlkey:pretrain_model_conf=${pretrain_config}#model_conf") ;;
       esac ;;
    6) specs=("yaml:decode_config=${decoding_config}" "opt:decode_args=${decode_args}" "opt:select_by=${select_by}"
              "file:asr_model=$(asr_model_file)" "yaml:asr_config=${asr_exp}/config.yaml" "opt:test_sets=${test_sets}")
       if [ "${decoding}" = lm ]; then
         specs+=("stat:lm_file=${lm_file}" "file:token_list=${token_dir}/tokens.txt")
         [ -z "${lexicon}" ] || specs+=("file:lexicon=${lexicon}")
       fi
       for dset in ${test_sets}; do
         specs+=("dir:${dumpdir}/${dset}=${dumpdir}/${dset}" "file:data/${dset}/text=data/${dset}/text")
       done ;;
    7) specs=("file:asr_model=$(asr_model_file)" "yaml:asr_config=${asr_exp}/config.yaml"
              "opt:hf_card=${hf_license} ${hf_language} ${hf_dataset}" "opt:init_from_pretrain=${init_from_pretrain}")
       [ "${upstream_kind}" != pretrained ] || specs+=("file:upstream_model=$(upstream_file)") ;;
  esac
  python "${utils}/stage_inputs.py" "${specs[@]}"
}

# A finished stage N whose inputs are what they would be now; else stop, saying which changed.
require_up_to_date() {
  local n=$1 marker record
  marker=$(stage_marker "${n}")
  record=$(stage_record "${n}")
  if [ "$(cat "${marker}")" != "${record}" ]; then
    log "ERROR: stage ${n} ($(stage_name "${n}")) is out of date ($(record_diff "${marker}" "${record}")):" \
        "run from stage ${n} (--stage ${n})"
    exit 1
  fi
}

# Stage N ran to the end with the inputs it would have now; a later stage checks this before using its output.
require_done() {
  local n=$1 marker
  marker=$(stage_marker "${n}")
  if [ ! -f "${marker}" ]; then
    log "ERROR: stage ${n} ($(stage_name "${n}")) has not finished (no ${marker}): run it first (--stage ${n})"
    exit 1
  fi
  require_up_to_date "${n}"
}

# Stages before --stage do not run, but what they made is used, also by stages that are done and skipped:
# a finished one must match the options given now. (One without a marker is checked where its output is
# needed; data dirs made without local/data.sh are fine: stage 3 records their contents.)
check_earlier_stages() {
  [ "${dry_run}" != true ] || return 0
  local k
  for ((k = 1; k < stage; k++)); do
    if [ "${k}" -eq 4 ] && [ "${upstream_kind}" != pretrained ]; then continue; fi
    if [ -f "$(stage_marker "${k}")" ]; then require_up_to_date "${k}"; fi
  done
}

# A training or decoding stage that runs again must not continue an experiment made from other inputs
# (ESPnet's --resume true would): that experiment is moved aside, never deleted.
supersede_stale_experiment() {  # N record
  local n=$1 record=$2 dir why
  dir=$(stage_dir "${n}")
  [ -d "${dir}" ] || return 0
  if [ "${force}" = true ]; then
    why="--force true"
  elif [ -f "${dir}/.done.${n}" ]; then
    why="its inputs changed"
  elif [ -f "${dir}/.started.${n}" ]; then
    if [ "$(cat "${dir}/.started.${n}")" = "${record}" ]; then
      log "Stage ${n}: resuming the interrupted run in ${dir} (same inputs)"
      return 0
    fi
    why="an interrupted run with other inputs ($(record_diff "${dir}/.started.${n}" "${record}"))"
  elif [ -z "$(ls -A "${dir}")" ]; then
    return 0
  else
    why="no record of the inputs it was made with"
  fi
  local rel=${dir#"${expdir}"/} dest
  dest=$(move_aside "${dir}" "${expdir}/superseded/${rel//\//.}.$(date +%Y%m%dT%H%M%S)")
  log "Stage ${n}: moved ${dir} to ${dest} (${why}); starting afresh"
}

record_stage_time() {  # N name seconds: one row per stage and name; a re-run replaces its row in place
  touch "${stage_times}"
  local tmp; tmp=$(mktemp "${stage_times}.XXXXXX")  # its own file: systems trained side by side share the table
  STAGE_N=$1 STAGE_NAME=$2 STAGE_ROW=$(printf '%s\t%s\t%s' "$1" "$2" "$3") awk -F'\t' '
    $1 == ENVIRON["STAGE_N"] && $2 == ENVIRON["STAGE_NAME"] { if (!done) print ENVIRON["STAGE_ROW"]; done = 1; next }
    { print }
    END { if (!done) print ENVIRON["STAGE_ROW"] }' "${stage_times}" > "${tmp}"
  chmod --reference="${stage_times}" "${tmp}"  # mktemp's file is private; the table keeps its permissions
  mv "${tmp}" "${stage_times}"
}

# run_stage N: run stage N (functions stageN_check, then stageN) if it is in range and not already done
# with the same inputs. The marker is written only after the stage succeeded.
run_stage() {
  local n=$1 name dir record marker started
  in_range "${n}" || return 0
  name=$(stage_name "${n}"); dir=$(stage_dir "${n}")
  if [ "${dry_run}" = true ]; then
    log "Stage ${n}: ${name}: dry run"
    [ "${n}" -lt 4 ] || "stage${n}"
    return 0
  fi
  marker=$(stage_marker "${n}"); started=$(stage_marker "${n}" started)
  record=$(stage_record "${n}")
  if [ -f "${marker}" ] && [ "${force}" != true ]; then
    if [ "$(cat "${marker}")" = "${record}" ]; then
      log "Stage ${n}: ${name}: already done (${marker}); skipping"
      return 0
    fi
    log "Stage ${n}: ${name}: inputs differ from the finished run's ($(record_diff "${marker}" "${record}"));" \
        "running it again"
  fi
  "stage${n}_check"
  if [ "${n}" -ge 4 ]; then supersede_stale_experiment "${n}" "${record}"; fi
  log "Stage ${n}: ${name}"
  mkdir -p "${dir}"
  rm -f "${marker}"
  printf '%s\n' "${record}" > "${started}"
  local start=${SECONDS}
  "stage${n}"
  mkdir -p "${dir}"  # local/data.sh may have re-created data/
  printf '%s\n' "${record}" > "${marker}"
  rm -f "${started}"
  record_stage_time "${n}" "${name}" "$((SECONDS - start))"
  log "Stage ${n}: ${name}: done in $((SECONDS - start)) s"
}

# --------------------------------------------------------------------------------------------- checks
# Every data dir the recipe reads, tables only (cheap); transcripts required where they are used.
validate_data_dirs() {
  local dset failed=()
  for dset in $(all_sets); do
    local require=()
    is_labelled_set "${dset}" && require=(--require text)
    python "${utils}/validate_data_dir.py" --no_audio "${require[@]+"${require[@]}"}" "data/${dset}" \
      || failed+=("data/${dset}")
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    log "ERROR: ${failed[*]}: problems listed above. Fix them (utils/fix_data_dir.py DIR sorts the files and keeps" \
        "the utterances present in all of them) and rerun: local/data.sh does not run again unless its options" \
        "or scripts change"
    exit 1
  fi
}

check_dump_dir() {  # DIR FILE...: a stage-3 output with these files besides wav.scp, keys agreeing
  local dir=$1; shift
  local file
  for file in wav.scp "$@"; do
    if [ ! -f "${dir}/${file}" ]; then log "ERROR: ${dir}/${file} not found: run stage 3 (--stage 3)"; exit 1; fi
  done
  local require; require=$(IFS=,; echo "$*")
  if ! python "${utils}/validate_data_dir.py" --no_audio ${require:+--require "${require}"} "${dir}"; then
    log "ERROR: ${dir}: problems listed above; rerun stage 3 (--stage 3 --force true) to rebuild it"
    exit 1
  fi
}

check_file() {  # FILE what-makes-it
  if [ ! -s "$1" ]; then log "ERROR: $1 not found or empty: $2"; exit 1; fi
}

stage1_check() { :; }
stage2_check() { :; }
stage3_check() { validate_data_dirs; }

stage4_check() {
  require_done 2
  require_done 3
  check_file "${pretrain_config}" "--pretrain_config names no file"
  if [ -n "${init_upstream}" ] && [ ! -e "${init_upstream}" ]; then
    log "ERROR: --init_upstream ${init_upstream}: no such file or folder"; exit 1
  fi
  check_dump_dir "${dumpdir}/${pretrain_set}" utt2num_samples
  check_dump_dir "${dumpdir}/${valid_set}" utt2num_samples
}

stage5_check() {
  require_done 3
  check_file "${finetune_config}" "--finetune_config names no file"
  check_file "${token_dir}/tokens.txt" "stage 3 makes it (--stage 3)"
  [ "${token_type}" != bpe ] || check_file "${token_dir}/bpe.model" "stage 3 makes it (--stage 3)"
  case "${upstream_kind}" in
    pretrained) require_done 4
                check_file "$(upstream_file)" "exported after stage 4 (--stage 4)" ;;
    random) check_file "${pretrain_config}" "--pretrain_config names no file (its model_conf shapes the untrained encoder)" ;;
  esac
  check_dump_dir "${dumpdir}/${finetune_set}" text utt2num_samples
  check_dump_dir "${dumpdir}/${valid_set}" text utt2num_samples
}

stage6_check() {
  require_done 3
  require_done 5
  check_file "${decoding_config}" "no such decoding config"
  check_file "${asr_exp}/config.yaml" "stage 5 writes it (--stage 5)"
  if [ ! -e "$(asr_model_file)" ]; then
    local why="run stage 5 (--stage 5)"
    [ "${select_by}" = loss ] || why="the fine-tuning config's best_model_criterion must list [valid, wer_ctc, min] (or use --select_by loss)"
    log "ERROR: no $(asr_model_file) (--select_by ${select_by}): ${why}"; exit 1
  fi
  local dset
  for dset in ${test_sets}; do
    check_file "data/${dset}/text" "the reference transcripts of test set ${dset} (stage 1)"
    check_file "${token_dir}/coverage/${dset}.json" "stage 3 writes it (--stage 3)"
    check_dump_dir "${dumpdir}/${dset}" text
  done
}

stage7_check() {
  require_done 5
  check_file "$(asr_model_file)" "stage 5 writes it (--stage 5)"
  check_file "${results_file}" "stage 6 writes it (--stage 6)"
  [ "${upstream_kind}" != pretrained ] || check_file "$(upstream_file)" "exported after stage 4 (--stage 4)"
}

# ---------------------------------------------------------------------------------------------- stages
# launch LAUNCHER LOG CMD...: run a training or decoding command (behind the stage's launcher); a dry run
# prints it instead. With a LOG file (a training's <exp>/train.log), its output and error streams are also
# appended there, after a line with the time and the command: the experiment keeps its own record (losses,
# thread counts, warnings) through resumes, not only the terminal that started it.
launch() {
  local launcher=$1 logfile=$2; shift 2
  if [ "${dry_run}" = true ]; then
    log "would run: ${launcher:+${launcher} }$(printf '%q ' "$@")"
  elif [ -n "${logfile}" ]; then
    mkdir -p "$(dirname "${logfile}")"
    echo "# $(date '+%Y-%m-%dT%H:%M:%S') ${launcher:+${launcher} }$(printf '%q ' "$@")" >> "${logfile}"
    # Each stream through its own tee (a pipeline, so both have finished when the stage goes on); the
    # status is the command's (pipefail).
    # shellcheck disable=SC2086
    { { PYTHONUNBUFFERED=1 ${launcher} "$@" 2>&1 1>&3 3>&- | tee -a "${logfile}" >&2; } 3>&1 | tee -a "${logfile}"; }
  else
    # shellcheck disable=SC2086
    ${launcher} "$@"
  fi
}

# How a training command uses the GPUs. Under a launcher every process is one rank (ESPnet's own process
# spawning off); otherwise --ngpu N > 1 spawns one process per GPU (DDP), never one DataParallel process.
# Data-loader workers come from the config unless --num_workers is given.
train_args() {  # LAUNCHER
  local args=(--ngpu "${ngpu}")
  if [ -n "$1" ]; then
    args+=(--multiprocessing_distributed false)
  elif [ "${ngpu}" -gt 1 ]; then
    args+=(--multiprocessing_distributed true)
  fi
  [ -z "${num_workers}" ] || args+=(--num_workers "${num_workers}")
  echo "${args[@]}"
}

# The global batch a training config gives on the ranks of this run (a dry run shows it; the training
# command prints it itself when it starts).
show_global_batch() {  # TOOL CONFIG LAUNCHER EXTRA_ARGS
  if [ -n "$3" ]; then log "global batch: the launcher decides the number of ranks; the training command prints it"; return 0; fi
  if ! grep -q '^samples_per_update:' "$2" 2>/dev/null && [[ $4 != *--samples_per_update* ]]; then
    log "global batch: set by hand in $2 (batch_bins/batch_size, accum_grad): the same on any number of ranks"; return 0
  fi
  # shellcheck disable=SC2086
  python -m aqc.espnet.global_batch --task "$1" --ranks "$(( ngpu > 1 ? ngpu : 1 ))" --config "$2" $4 || exit 1
}

abs_paths() { local p; for p in "$@"; do (cd "${p}" && pwd); done | xargs; }
# A path as the training processes need it: absolute (a relative --expdir is under the recipe folder).
abs_file() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$(pwd)/$1" ;; esac; }

stage1() {
  # shellcheck disable=SC2086
  local/data.sh ${local_data_opts}
  if [ -n "${extra_unlabelled_dir}" ]; then
    # shellcheck disable=SC2046
    python "${utils}/pool_unlabelled.py" --data_dir "data/${pooled_from}" --out_dir "data/${pretrain_set}" \
      --audio_dir $(abs_paths ${extra_unlabelled_dir})
  fi
}

stage2() {
  mkdir -p data/augment
  # A list left from an earlier run would otherwise be picked up by stage 4.
  rm -rf data/augment/noise data/augment/rir
  if [ -n "${musan_root}" ]; then
    python "${utils}/make_noise_list.py" --musan_root "${musan_root}" --subsets "${musan_subsets}" \
      --out_dir data/augment/noise
  else
    log "No --musan_root: pre-training runs without background noise"
  fi
  if [ -n "${rir_root}" ]; then
    python "${utils}/make_rir_list.py" --rir_dir "${rir_root}" --out_dir data/augment/rir
  fi
}

token_coverage() {  # TEXT OUT_JSON NAME
  python "${utils}/token_coverage.py" --text "$1" --out "$2" --name "$3" --token_type "${token_type}" \
    --token_list "${token_dir}/tokens.txt" $([ "${token_type}" = bpe ] && echo --bpemodel "${token_dir}/bpe.model")
}

stage3() {
  local dset
  for dset in $(all_sets); do
    # A set formatted from the same data dir with the same filter is kept (a new fine-tuning subset does
    # not re-read 960 h of pre-training audio; --force true re-reads all); dump/<set>/.formatted holds
    # what it was made from.
    local filter="--require_all true" record
    is_scored_set "${dset}" || filter="--min_duration ${min_duration} --max_duration ${max_duration}"
    record=$(python "${utils}/stage_inputs.py" "dir:data/${dset}=data/${dset}" "opt:filter=${filter}")
    if [ "${force}" != true ] && [ -f "${dumpdir}/${dset}/.formatted" ] && [ "$(cat "${dumpdir}/${dset}/.formatted")" = "${record}" ]; then
      log "Stage 3: ${dumpdir}/${dset} is up to date with data/${dset}; kept"
      continue
    fi
    rm -f "${dumpdir}/${dset}/.formatted"
    # shellcheck disable=SC2086
    python "${utils}/format_wav_scp.py" --in_dir "data/${dset}" --out_dir "${dumpdir}/${dset}" --nj "${nj}" ${filter}
    printf '%s\n' "${record}" > "${dumpdir}/${dset}/.formatted"
  done
  python "${utils}/make_token_list.py" --text "${dumpdir}/${finetune_set}/text" --token_type "${token_type}" \
    --nbpe "${nbpe}" --bpe_model_prefix "${token_dir}/bpe" --output "${token_dir}/tokens.txt" \
    ${token_inventory:+--inventory "${token_inventory}"}
  # ESPnet maps a token outside the list to <unk> without a word: count them here, where it is cheap.
  for dset in $(scored_sets); do
    token_coverage "${dumpdir}/${dset}/text" "${token_dir}/coverage/${dset}.json" "${dset}"
  done
}

stage4() {
  [ "${dry_run}" != true ] || show_global_batch ssl "${pretrain_config}" "${pretrain_launcher:-}" "${pretrain_args}"
  # shellcheck disable=SC2046,SC2086
  launch "${pretrain_launcher:-}" "${ssl_exp}/train.log" python -m aqc.bin.ssl_train --config "${pretrain_config}" \
    --train_data_path_and_name_and_type "${dumpdir}/${pretrain_set}/wav.scp,speech,sound" \
    --train_shape_file "${dumpdir}/${pretrain_set}/utt2num_samples" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
    --valid_shape_file "${dumpdir}/${valid_set}/utt2num_samples" \
    --output_dir "${ssl_exp}" $(train_args "${pretrain_launcher:-}") --resume true \
    ${init_upstream:+--init_upstream "$(cd "$(dirname "${init_upstream}")" && pwd)/$(basename "${init_upstream}")"} \
    $(augmentation_args) $(probe_args) ${pretrain_args}
}

probe_args() {
  [ "${probe}" = true ] || return 0
  echo --probe_train_data "${dumpdir}/${finetune_set}" --probe_dev_data "${dumpdir}/${valid_set}"
}

# A finished pre-training probed on the fine-tuning sets of the run that made it; say so when they are not
# this run's (its checkpoint choice by the probe stands; --stage 4 --force true probes on these instead).
note_probe_data() {
  [ "${probe}" = true ] && [ "${dry_run}" != true ] && [ -f "${ssl_exp}/config.yaml" ] || return 0
  local probed
  probed=$(config_values "${ssl_exp}/config.yaml" probe_train_data= probe_dev_data= | paste -sd ' ')
  if [ "${probed}" != "${dumpdir}/${finetune_set} ${dumpdir}/${valid_set}" ]; then
    log "NOTE: ${ssl_exp} was probed on ${probed:-nothing}, not on ${dumpdir}/${finetune_set} ${dumpdir}/${valid_set};" \
        "--ssl_select ${ssl_select} uses those scores (--stage 4 --force true pre-trains and probes again)"
  fi
}

# The upstream fine-tuning starts from: the pre-training checkpoint --ssl_select picks.
upstream_file() { echo "${ssl_exp}/aqc_model.${ssl_select}.pt"; }

# Exported after a stage-4 run (the marker is newer than the export), and when another --ssl_select asks
# for a file not made yet; no re-training. aqc_model.pt links to the latest export.
export_upstream() {
  local model; model=$(upstream_file)
  if [ "${dry_run}" = true ]; then
    log "would export ${model}: python -m aqc.bin.export_model --ssl_exp ${ssl_exp} --select ${ssl_select}"
    return 0
  fi
  [ -f "${ssl_exp}/.done.4" ] || return 0  # stage 4 has not run: stage 5's check says so
  if [ ! -f "${model}" ] || [ "${ssl_exp}/.done.4" -nt "${model}" ]; then
    log "Exporting the upstream (--ssl_select ${ssl_select}) to ${model}"
    python -m aqc.bin.export_model --ssl_exp "${ssl_exp}" --select "${ssl_select}" --output "${model}"
  fi
  ln -sfn "$(basename "${model}")" "${ssl_exp}/aqc_model.pt"
}

stage5() {
  local upstream_args=()
  case "${upstream_kind}" in
    pretrained) upstream_args=(--frontend_conf "model_file=$(abs_file "$(upstream_file)")") ;;
    random)  # the "no pre-training" baseline: the same encoder, untrained
      upstream_args=(--frontend_conf "model_file=$(abs_file "${asr_exp}/random_init_model.pt")")
      [ "${dry_run}" = true ] || python -m aqc.bin.export_model --random_init true --config "${pretrain_config}" \
        --output "$(abs_file "${asr_exp}/random_init_model.pt")" ;;
  esac
  [ "${dry_run}" != true ] || show_global_batch asr "${finetune_config}" "${finetune_launcher:-}" "${finetune_args}"
  # shellcheck disable=SC2046,SC2086
  launch "${finetune_launcher:-}" "${asr_exp}/train.log" python -m aqc.bin.asr_train --config "${finetune_config}" \
    --token_type "${token_type}" --token_list "${token_dir}/tokens.txt" \
    $([ "${token_type}" = bpe ] && echo --bpemodel "${token_dir}/bpe.model") \
    --train_data_path_and_name_and_type "${dumpdir}/${finetune_set}/wav.scp,speech,sound" \
    --train_data_path_and_name_and_type "${dumpdir}/${finetune_set}/text,text,text" \
    --train_shape_file "${dumpdir}/${finetune_set}/utt2num_samples" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/text,text,text" \
    --valid_shape_file "${dumpdir}/${valid_set}/utt2num_samples" \
    --output_dir "${asr_exp}" $(train_args "${finetune_launcher:-}") --resume true \
    "${upstream_args[@]+"${upstream_args[@]}"}" ${seed:+--seed "${seed}"} ${finetune_args}
}

stage6() {
  local model lm_args=()
  model=$(asr_model_file)
  if [ "${decoding}" = lm ]; then
    local lex=${lexicon}
    if [ -z "${lex}" ] && [ "${dry_run}" != true ]; then  # the LM's words spelled in the model's tokens
      lex=${decode_dir}/lexicon.txt
      python "${utils}/make_lexicon.py" --arpa "${lm_file}" --token_list "${token_dir}/tokens.txt" --out "${lex}" \
        --report "${decode_dir}/lexicon.json"
    fi
    lm_args=(--kenlm_file "${lm_file}" --lexicon "${lex:-${decode_dir}/lexicon.txt}")
  fi
  [ "${dry_run}" = true ] || cp "${decoding_config}" "${decode_dir}/config.yaml"  # what decoded, beside the results
  local dset
  for dset in ${test_sets}; do
    local out=${decode_dir}/${dset}
    # shellcheck disable=SC2086
    launch "${decode_launcher:-}" "" python -m aqc.bin.asr_inference --config "${decoding_config}" \
      --ngpu "$(( ngpu > 0 ? 1 : 0 ))" --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model}" \
      --data_path_and_name_and_type "${dumpdir}/${dset}/wav.scp,speech,sound" \
      --key_file "${dumpdir}/${dset}/wav.scp" --output_dir "${out}" "${lm_args[@]+"${lm_args[@]}"}" ${decode_args}
    [ "${dry_run}" != true ] || continue
    # Scored against the whole set as prepared (stage 3 drops nothing from it); a missing hypothesis stops here.
    python -m aqc.bin.score --ref "data/${dset}/text" --hyp "${out}/1best_recog/text" --out_dir "${out}/score" \
      --require_all true
    # stage 3 counted the set's tokens outside the token list (the set is whole, the list the model's)
    cp "${token_dir}/coverage/${dset}.json" "${out}/score/token_coverage.json"
  done
}

stage7() {
  local dir; dir=$(stage_dir 7)
  [ "${dry_run}" != true ] || { log "would pack into ${dir}"; return 0; }
  python -m aqc.bin.pack --asr_exp "${asr_exp}" --model_file "$(asr_model_file)" --results "${results_file}" \
    --out "${dir}/asr_${asr_tag}.zip"
  if [ "${upstream_kind}" = pretrained ]; then
    python -m aqc.bin.pack --ssl_exp "${ssl_exp}" --model_file "$(upstream_file)" --results "${results_file}" --out "${dir}/ssl_${tag}.zip" \
      --hf_dir "${dir}/hf_ssl_${tag}" --license "${hf_license}" --language "${hf_language}" \
      ${hf_dataset:+--dataset "${hf_dataset}"}
  fi
}

write_results() {
  # One table over every fine-tuned model of this recipe (so baselines run with other options appear
  # too); a decoding whose stage 6 did not finish (no .done.6) is left out.
  local rows=() decode scores
  for decode in "${expdir}"/asr_*/decode_*; do
    [ -f "${decode}/.done.6" ] || continue
    for scores in "${decode}"/*/score/scores.json; do
      [ -f "${scores}" ] || continue
      local rel=${scores#"${expdir}"/}
      rows+=(--test_set "${rel%%/score/scores.json}" "${scores}")
    done
  done
  python -m aqc.bin.make_results --exp_dir "${expdir}" --out "${results_file}" --stage_times "${stage_times}" \
    --rank_by "${results_rank_by}" ${results_notes:+--notes "${results_notes}"} "${rows[@]+"${rows[@]}"}"
  log "Wrote ${results_file}"
}

check_earlier_stages
run_stage 1
# Validated whenever stage 1 is in range, also when the preparation is already done: a rerun after the
# user fixed a data dir (utils/fix_data_dir.py) checks the fixed dir instead of rebuilding the broken one.
if in_range 1 && [ "${dry_run}" != true ]; then validate_data_dirs; fi
run_stage 2
run_stage 3
for ((prun = 0; prun < pretrain_runs; prun++)); do
  use_pretrain_run "${prun}"
  case "${upstream_kind}" in
    pretrained) run_stage 4
                if in_range 4 || in_range 5; then note_probe_data; export_upstream; fi ;;
    none) if in_range 4; then log "Stage 4: ${finetune_config} uses frontend ${finetune_frontend}, no upstream: no pre-training"; fi ;;
  esac
  for ((run = 0; run < finetune_seeds; run++)); do
    use_finetune_run "${run}"
    use_decoding plain
    run_stage 5
    for d in $(decodings); do
      use_decoding "${d}"
      run_stage 6
    done
  done
done
use_pretrain_run 0  # stage 7 packs the first run
use_finetune_run 0
use_decoding plain
# RESULTS.md is rewritten whenever stage 6 is in range (cheap), so it includes stage 6's time and every
# system decoded so far.
if in_range 6 && [ "${dry_run}" != true ]; then write_results; fi
run_stage 7
log "Finished stages ${stage}..${stop_stage}"
