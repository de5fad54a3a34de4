"""Multi-GPU runs (issue 15): the global batch derived from the number of ranks, one process per GPU
instead of DataParallel, spawned ranks that know aqc's plug-ins, and word error rates for selection."""
import argparse
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aqc.cli import AQCUserError
from aqc.espnet.global_batch import apply_global_batch, derive, one_process_per_gpu

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "TEMPLATE" / "conf"


def _args(**overrides) -> argparse.Namespace:
    """What ESPnet's parser gives for a config without batch settings (its own defaults)."""
    base = dict(samples_per_update=None, batch_bins_per_rank=None, updates_per_epoch=None, batch_type="numel",
                batch_bins=1000000, valid_batch_bins=None, accum_grad=1, num_iters_per_epoch=None, max_epoch=10,
                ngpu=0, multiprocessing_distributed=False, dist_world_size=None, dist_launcher=None,
                dist_backend="nccl", scheduler_conf={})
    base.update(overrides)
    return argparse.Namespace(**base)


def _from_config(name: str, **overrides) -> argparse.Namespace:
    conf = yaml.safe_load((CONF / name).read_text())
    keys = ("samples_per_update", "batch_bins_per_rank", "updates_per_epoch", "batch_type", "max_epoch",
            "scheduler_conf")
    return _args(**{**{k: conf[k] for k in keys if k in conf}, **overrides})


@pytest.mark.parametrize("ranks, accum", [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)])
def test_pretraining_keeps_the_reference_batch_and_updates_on_any_number_of_gpus(ranks, accum):
    args = _from_config("pretrain_base.yaml", ngpu=ranks, multiprocessing_distributed=ranks > 1)
    batch = apply_global_batch(args)
    assert args.batch_bins == args.valid_batch_bins == 3_800_000 * ranks
    assert args.accum_grad == accum and args.batch_bins * args.accum_grad == 60_800_000
    assert args.num_iters_per_epoch == 2500 * accum  # mini-batches; 2,500 updates each epoch
    assert batch.updates == 400_000 == args.scheduler_conf["max_steps"]
    line = batch.describe()
    assert line.startswith("global batch: 60,800,000 samples per update (63.3 min of audio at 16 kHz) = "
                           f"3,800,000 per rank x {ranks} rank(s) x accum_grad {accum}")
    assert line.endswith("= 400,000 updates (num_iters_per_epoch " + f"{2500 * accum:,})")


@pytest.mark.parametrize("config, updates", [("finetune_10min.yaml", 13000), ("finetune_1h.yaml", 13000),
                                             ("finetune_10h.yaml", 20000), ("finetune_100h.yaml", 80000)])
@pytest.mark.parametrize("ranks", [1, 2, 8])
def test_fine_tuning_keeps_the_reference_batch(config, updates, ranks):
    args = _from_config(config, ngpu=ranks, multiprocessing_distributed=ranks > 1)
    batch = apply_global_batch(args)
    assert args.batch_bins * args.accum_grad == 25_600_000 and args.batch_bins == 3_200_000 * ranks
    assert batch.updates == updates == args.scheduler_conf["max_steps"]
    assert args.num_iters_per_epoch == 1000 * args.accum_grad


def test_torchrun_ranks_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    args = _from_config("pretrain_base.yaml", ngpu=1)
    apply_global_batch(args)
    assert args.batch_bins == 15_200_000 and args.accum_grad == 4


def test_a_batch_that_cannot_be_matched_is_refused_with_the_fix():
    with pytest.raises(AQCUserError) as info:
        apply_global_batch(_from_config("pretrain_base.yaml", ngpu=3, multiprocessing_distributed=True))
    assert "60,800,000 is not a whole number of mini-batches of 3,800,000 samples x 3 rank(s)" in str(info.value)
    assert "Fix: run on 1, 2, 4, 8, 16 rank(s)" in str(info.value)
    with pytest.raises(AQCUserError, match="set --batch_bins_per_rank to a divisor of 1,000,001"):
        derive(1_000_001, 300_000, 1, None, 1)


@pytest.mark.parametrize("override, message", [
    (dict(accum_grad=4), "accum_grad 4 and --samples_per_update 60800000 are both set"),
    (dict(batch_bins=3800000), "batch_bins 3800000 and --samples_per_update"),
    (dict(num_iters_per_epoch=100), "num_iters_per_epoch 100 and --samples_per_update"),
    (dict(batch_type="sorted"), "needs batch_type numel"),
    (dict(batch_bins_per_rank=None), "needs --batch_bins_per_rank"),
    (dict(max_epoch=10), "scheduler_conf max_steps 400,000 differs from the 25,000 updates of this run"),
])
def test_settings_that_contradict_the_target_are_refused(override, message):
    with pytest.raises(AQCUserError) as info:
        apply_global_batch(_from_config("pretrain_base.yaml", **override))
    assert message in str(info.value)


def test_without_a_target_the_batch_is_left_as_set():
    args = _args(batch_bins=123, accum_grad=3, num_iters_per_epoch=9)
    assert apply_global_batch(args) is None
    assert (args.batch_bins, args.accum_grad, args.num_iters_per_epoch) == (123, 3, 9)
    with pytest.raises(AQCUserError, match="--updates_per_epoch is set but --samples_per_update is not"):
        apply_global_batch(_args(updates_per_epoch=5))


def test_ngpu_n_starts_one_process_per_gpu_not_data_parallel(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = _args(ngpu=4)
    assert "one training process per GPU" in one_process_per_gpu(args) and args.multiprocessing_distributed
    for ngpu in (0, 1):
        args = _args(ngpu=ngpu)
        assert one_process_per_gpu(args) is None and not args.multiprocessing_distributed
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun/srun started the ranks already
    args = _args(ngpu=1)
    assert one_process_per_gpu(args) is None and not args.multiprocessing_distributed


SPAWNED_RANK = r"""
import pickle, sys
for payload in sys.stdin.buffer.read().split(b"--next--"):
    pickle.loads(payload)  # what torch.multiprocessing's spawn does with the process target
from espnet2.tasks import asr, ssl
from espnet2.train import trainer
assert "aqc" in asr.frontend_choices.classes, "frontend: aqc unknown in the spawned rank"
import aqc.espnet.checkpoint_io as io
assert isinstance(trainer.torch, io._TorchWithSafeCheckpoints), "aqc's checkpoint rules missing in the rank"
print("ok")
"""


def test_a_spawned_rank_knows_the_aqc_plugins():
    """ESPnet's --multiprocessing_distributed spawns a fresh interpreter per GPU that imports only the
    task's module: with ESPnet's ASRTask that rank had no frontend: aqc."""
    from aqc.espnet.asr_task import AQCASRTask
    from aqc.espnet.ssl import AQCSSLTask

    payload = pickle.dumps(AQCASRTask.main_worker) + b"--next--" + pickle.dumps(AQCSSLTask.main_worker)
    out = subprocess.run([sys.executable, "-c", SPAWNED_RANK], input=payload, capture_output=True, timeout=300)
    assert out.returncode == 0 and out.stdout.decode().strip().endswith("ok"), out.stderr.decode()[-3000:]


def test_ctc_word_error_rate_for_each_token_type():
    from aqc.espnet.asr_task import CTCWordErrorRate

    chars = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]
    wer = CTCWordErrorRate(chars, blank_id=0)
    # frames "A A _ B <space> C" -> "AB C"; reference "AB CC" -> 1 of 2 words wrong
    hat = torch.tensor([[3, 3, 0, 4, 2, 5, 0, 0]])
    ref = torch.tensor([[3, 4, 2, 5, 5, -1]])
    assert wer(hat, ref) == pytest.approx(0.5)
    assert wer(hat, torch.tensor([[3, 4, 2, 5, -1, -1]])) == 0.0
    bpe = ["<blank>", "<unk>", "\u2581A", "B", "\u2581C", "<sos/eos>"]
    assert CTCWordErrorRate(bpe)(torch.tensor([[2, 3, 4]]), torch.tensor([[2, 3, 4]])) == 0.0
    assert CTCWordErrorRate(bpe)(torch.tensor([[2, 4]]), torch.tensor([[2, 3, 4]])) == pytest.approx(0.5)
    words = ["<blank>", "<unk>", "seven", "two", "<sos/eos>"]
    word_wer = CTCWordErrorRate(words, word_tokens=True)
    assert word_wer(torch.tensor([[2, 0, 3]]), torch.tensor([[2, 3]])) == 0.0
    assert word_wer(torch.tensor([[2, 2]]), torch.tensor([[2, 3]])) == pytest.approx(0.5)
    assert wer(hat, torch.tensor([[-1, -1]])) is None  # no reference words: nothing to report


def test_a_batch_set_by_hand_is_described_as_it_is():
    from aqc.espnet.global_batch import describe_by_hand

    args = _args(batch_bins=160000, accum_grad=2, num_iters_per_epoch=50, max_epoch=10)
    assert describe_by_hand(args, 1) == ("global batch: set by hand: batch_bins 160,000 (numel) x accum_grad 2 = "
                                         "320,000 samples per update, split over 1 rank(s); 25 updates per epoch "
                                         "x 10 epochs = 250 updates")
    args = _args(batch_type="sorted", batch_size=8, accum_grad=1)
    assert describe_by_hand(args, 2) == ("global batch: set by hand: batch_size 8 utterances (sorted) x accum_grad "
                                         "1 = 8 utterances per update, split over 2 rank(s)")
