# How training jobs are started. Empty: directly on this machine. For several processes or a cluster,
# a prefix that starts the Python training command, e.g.
#   train_launcher="torchrun --nproc_per_node 4"       (then add --pretrain_args "--multiprocessing_distributed true")
#   train_launcher="srun --gres=gpu:4 torchrun --nproc_per_node 4"
export train_launcher=${train_launcher:-}
