# How jobs are started (sourced by run.sh). Empty: directly on this machine, the default.
# Each launcher prefixes one stage's command, "python -m aqc.bin.<tool> ...", which it receives as its
# arguments:
#   pretrain_launcher  stage 4. Several ranks on one machine (CPU: run.sh --ngpu 0; GPU: --ngpu 1, one GPU
#                      per rank):  pretrain_launcher="torchrun --no-python --standalone --nproc_per_node 4"
#                      On Slurm:   pretrain_launcher="srun --gres=gpu:4 torchrun --no-python --standalone --nproc_per_node 4"
#   finetune_launcher  stage 5 (ESPnet starts one process per GPU itself with run.sh --ngpu N), e.g. "srun --gres=gpu:1"
#   decode_launcher    stage 6, e.g. "srun --gres=gpu:1" (with run.sh --ngpu 1)
export pretrain_launcher=${pretrain_launcher:-}
export finetune_launcher=${finetune_launcher:-}
export decode_launcher=${decode_launcher:-}
