"""Recipes: every config builds (ESPnet's dry-run idea), and each recipe runs stages 1-6 on real data."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RECIPES = ["fsdd", "asterisk", "librispeech"]
CONFIGS = sorted(p for r in RECIPES + ["TEMPLATE"] for p in (REPO / "egs" / r / "conf").glob("*.yaml"))

# Small enough for CI on 2 cores: a few updates of the tiny model, a handful of test utterances.
FAST_PRETRAIN = "--max_epoch 1 --num_iters_per_epoch 6 --batch_size 4 --num_workers 0 --probe_conf ctc_steps=20"
FAST_FINETUNE = "--max_epoch 2 --num_iters_per_epoch 4 --batch_bins 64000"


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    from aqc.models import data2vec_aqc_tiny
    from aqc.models.io import save_model_file

    path = tmp_path_factory.mktemp("upstream") / "tiny.pt"
    save_model_file(data2vec_aqc_tiny(), path)
    return path


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_config_parses_and_builds(config, tiny_model_file):
    conf = yaml.safe_load(config.read_text())
    assert isinstance(conf, dict) and conf, config
    if conf.get("model") == "aqc":  # pre-training: the model and its augmentation
        from aqc.augment import build_augmentation
        from aqc.models import Data2VecAQC
        from aqc.models.io import config_from_model_conf

        model = Data2VecAQC(config_from_model_conf(conf.get("model_conf") or {}))
        assert model.config.num_layers >= model.config.top_k_layers
        aug_conf = dict(conf.get("augmentation_conf") or {})
        if aug_conf.get("background_p", 0.8) > 0:
            aug_conf["noise_scp"] = str(_noise_scp(config.parent))
        build_augmentation(aug_conf)
    elif conf.get("frontend") == "aqc":  # fine-tuning: the frontend on a real upstream
        from aqc.espnet.frontend import AQCFrontend

        frontend_conf = {**conf.get("frontend_conf", {}), "model_file": str(tiny_model_file)}
        frontend = AQCFrontend(**frontend_conf)
        assert frontend.output_size() > 0
        assert conf["model_conf"]["ctc_weight"] == 1.0
    else:  # decoding
        assert conf.get("ctc_weight", 1.0) == 1.0 and conf.get("beam_size", 1) >= 1


def _noise_scp(tmp: Path) -> Path:
    out = Path(os.environ.get("PYTEST_TMP", "/tmp")) / "aqc_test_noise"
    scp = out / "wav.scp"
    if not scp.exists():
        subprocess.run([sys.executable, str(REPO / "utils" / "make_noise_list.py"), "--musan_root",
                        str(DATA / "musan"), "--out_dir", str(out)], check=True, capture_output=True)
    return scp


# ------------------------------------------------------------------------------------- end to end
def _run_recipe(recipe_dir: Path, args, timeout=900, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    out = subprocess.run(["bash", "./run.sh", *args], cwd=recipe_dir, capture_output=True, text=True,
                         env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out


def _copy_recipe(name: str, tmp_path: Path) -> Path:
    """A recipe copy inside a scratch egs/ tree, so ../TEMPLATE and the repo's utils resolve."""
    egs = tmp_path / "repo" / "egs"
    egs.mkdir(parents=True)
    for item in ("utils", "tools", "aqc"):
        (tmp_path / "repo" / item).symlink_to(REPO / item)
    (egs / "TEMPLATE").symlink_to(REPO / "egs" / "TEMPLATE")
    # only the recipe itself, never outputs of an earlier run in the checkout
    shutil.copytree(REPO / "egs" / name, egs / name, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "RESULTS.md"))
    return egs / name


def _check_results(recipe: Path, expect_sets):
    results = (recipe / "RESULTS.md").read_text()
    assert "| test set | WER | CER" in results
    for name in expect_sets:
        assert name in results, name
    for scores in recipe.glob("exp/asr_*/decode_*/*/score/scores.json"):
        s = json.loads(scores.read_text())
        assert s["num_utts"] > 0 and s["num_missing"] == 0
        assert 0.0 <= s["wer"]["rate"] <= 100.0 + 1e-9 or s["wer"]["ins"] > 0
        # every utterance of the test set is scored, and RESULTS.md says so
        test_set = scores.parent.parent.name
        size = len((recipe / "data" / test_set / "wav.scp").read_text().splitlines())
        assert s["num_utts"] == size and s["ref"] == f"data/{test_set}/text"
        row = scores.relative_to(recipe / "exp").parent.parent
        assert f"- {row}: {size} utterances (every utterance of `data/{test_set}/text`), all decoded; " in results


@pytest.mark.slow
def test_fsdd_recipe_end_to_end_with_comparison(tmp_path):
    recipe = _copy_recipe("fsdd", tmp_path)
    # no --musan_root: the recipe must then pre-train without background noise
    # one seed of each: the seeds' runs, names and pooled tables are tests/test_recipe_stages.py's (through
    # the template, without the trainers) and test_compare_trains_every_baseline_with_every_seed's; test
    # only (decoding dev as well, as the recipe does, is test_asterisk_recipe_end_to_end's)
    args = ["--fsdd_root", str(DATA / "fsdd"), "--local_data_opts", "--labelled_per_digit 2", "--compare", "true",
            "--finetune_seeds", "1", "--pretrain_seeds", "1", "--pretrain_args", FAST_PRETRAIN,
            "--finetune_args", FAST_FINETUNE, "--test_sets", "test"]
    _run_recipe(recipe, [*args, "--decode_args", "--batch_size 32"], timeout=2400)  # 4 pre-trainings, 6 fine-tunings
    pretrained = {"asr_finetune_pretrain_aqc": "data2vec-aqc", "asr_finetune_pretrain_data2vec": "data2vec",
                  "asr_finetune_pretrain_data2vec_a": "data2vec+A", "asr_finetune_pretrain_data2vec_aq": "data2vec+A+Q"}
    for system, method in pretrained.items():  # each pre-trained once, from its config's seed
        ssl = yaml.safe_load((recipe / "exp" / system.replace("asr_finetune_", "ssl_") / "config.yaml").read_text())
        assert ssl["seed"] == 0 and not (recipe / "exp" / f"{system.replace('asr_finetune_', 'ssl_')}_pseed1").exists()
    systems = {"asr_finetune_pretrain_aqc": "data2vec-aqc", "asr_finetune_pretrain_data2vec": "data2vec",
               "asr_finetune_pretrain_data2vec_a": "data2vec+A", "asr_finetune_pretrain_data2vec_aq": "data2vec+A+Q",
               "asr_finetune_scratch": "none (random initialisation)",
               "asr_finetune_logmel": "none (log-mel filterbank features, ESPnet's default frontend)"}
    _check_results(recipe, [f"{s}/decode_decode/test" for s in systems])
    results = (recipe / "RESULTS.md").read_text()
    one = "1 throughout (AQC_NUM_THREADS=1 repeats it)"  # OMP_NUM_THREADS=1 caps the count; nothing fixes it
    for system, method in systems.items():
        assert f"| {system} | {method}" in results, system
        # the thread counts, read from the training logs each experiment keeps
        row = next(line for line in results.splitlines() if line.startswith(f"| {system} | "))
        assert row.endswith(f"| {one if system in pretrained else '-'} / {one} |"), row
        assert "intra_op_threads=1.000" in (recipe / "exp" / system / "train.log").read_text()
        # each system's stages are timed on lines of their own
        assert f"| 5 | CTC fine-tuning (exp/{system}) |" in results
        assert f"| 6 | decoding and scoring (exp/{system}/decode_decode) |" in results
    # the baseline without pre-training fine-tuned the same architecture, untrained
    import torch

    scratch = torch.load(recipe / "exp" / "asr_finetune_scratch" / "random_init_model.pt", weights_only=False)
    aqc = torch.load(recipe / "exp" / "ssl_pretrain_aqc" / "aqc_model.pt", weights_only=False)
    assert scratch["config"] == aqc["config"]
    cnn = "feature_extractor.conv_layers.1.conv.weight"
    assert scratch["state_dict"].keys() == aqc["state_dict"].keys()
    assert not torch.equal(scratch["state_dict"][cnn], aqc["state_dict"][cnn])
    assert len((recipe / "dump" / "test" / "wav.scp").read_text().splitlines()) == 1000
    # the log-mel baseline has no upstream at all
    logmel = yaml.safe_load((recipe / "exp" / "asr_finetune_logmel" / "config.yaml").read_text())
    assert logmel["frontend"] == "default" and "model_file" not in (logmel.get("frontend_conf") or {})
    # one pre-training per method: nothing to pool
    assert "### Mean over pre-training and fine-tuning seeds" not in results and "not averaged" not in results
    # a finished recipe re-runs as a no-op: 6 stages of data2vec-aqc, 3 of each other pre-training, 2 of the
    # scratch and log-mel baselines
    again = _run_recipe(recipe, [*args, "--decode_args", "--batch_size 32"])
    assert again.stderr.count("already done") == 6 + 3 * 3 + 2 * 2 and ": done in " not in again.stderr
    # (another decoding option re-decoding each system: tests/test_recipe_stages.py, without the trainers)
    # the probe ran in each pre-training; fine-tuning started from the checkpoint it chose (issue 17)
    assert "### Pre-training probe" in results and "| 1 | 6 |" in results
    assert "| asr_finetune_pretrain_aqc | data2vec-aqc (`exp/ssl_pretrain_aqc`; update 6, chosen by the probe: " \
        "epoch 1, label error rate" in results
    # another selection re-exports the upstream without pre-training again
    again = _run_recipe(recipe, ["--fsdd_root", str(DATA / "fsdd"), "--local_data_opts", "--labelled_per_digit 2",
                                 "--pretrain_args", FAST_PRETRAIN, "--finetune_args", FAST_FINETUNE,
                                 "--test_sets", "test", "--ssl_select", "latest", "--stage", "4", "--stop_stage", "4"])
    assert "Stage 4: SSL pre-training (exp/ssl_pretrain_aqc): already done" in again.stderr
    assert "Exporting the upstream (--ssl_select latest) to exp/ssl_pretrain_aqc/aqc_model.latest.pt" in again.stderr
    ssl = recipe / "exp" / "ssl_pretrain_aqc"
    chosen = json.loads((ssl / "aqc_model.latest.pt.json").read_text())
    assert chosen["select"] == "latest" and chosen["num_updates"] == 6
    assert os.readlink(ssl / "aqc_model.pt") == "aqc_model.latest.pt"
    assert json.loads((ssl / "aqc_model.probe.pt.json").read_text())["select"] == "probe"  # kept
    # a fine-tuning setting tried on dev (egs/TEMPLATE/tune_finetune.sh): trains as the finished run did,
    # with the override, decodes the valid set only, and a second call only prints the score
    tune = ["bash", "../TEMPLATE/tune_finetune.sh", "exp/asr_finetune_pretrain_aqc", "conf/decode.yaml", "unfrozen",
            "--frontend_conf freeze_encoder_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(tune, cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    tried = recipe / "exp" / "tune_ft" / "unfrozen"
    scores = json.loads((tried / "decode" / "score" / "scores.json").read_text())
    assert scores["ref"] == "data/dev/text" and scores["num_missing"] == 0
    assert out.stdout.strip() == (f"exp/tune_ft/unfrozen\t--frontend_conf freeze_encoder_steps=0\t"
                                  f"dev WER {scores['wer']['rate']:.1f} %\tCER {scores['cer']['rate']:.1f} %\tthreads: {one}")
    conf = yaml.safe_load((tried / "config.yaml").read_text())
    base = yaml.safe_load((recipe / "exp" / "asr_finetune_pretrain_aqc" / "config.yaml").read_text())
    assert conf["frontend_conf"] == {**base["frontend_conf"], "freeze_encoder_steps": 0}
    assert (conf["max_epoch"], conf["num_iters_per_epoch"]) == (2, 4)  # the finished run's FAST_FINETUNE
    trained = torch.load(tried / "valid.loss.best.pth", map_location="cpu")
    upstream = torch.load(base["frontend_conf"]["model_file"], map_location="cpu", weights_only=False)["state_dict"]
    changed = {k for k, v in upstream.items() if f"frontend.upstream.{k}" in trained
               and not torch.equal(trained[f"frontend.upstream.{k}"], v)}
    assert changed and all(k.startswith("encoder.") or k == "mask_emb" or k.startswith("feature_projection.")
                           for k in changed)  # the transformer trained from the first update; the CNN never
    trained_at = (tried / "valid.loss.best.pth").stat().st_mtime_ns
    again = subprocess.run(tune, cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout == out.stdout
    assert (tried / "valid.loss.best.pth").stat().st_mtime_ns == trained_at
    # its record holds what it was made from, the upstream's bytes included, as a stage marker's does
    done = (tried / ".done").read_text()
    assert "upstream_model\tsha256:" in done and "decode_config\tyaml-sha256:" in done and "valid/wav.scp\t" in done
    other = recipe / "conf" / "decode_other.yaml"
    other.write_text(yaml.safe_dump({**yaml.safe_load((recipe / "conf" / "decode.yaml").read_text()), "batch_size": 7}))
    changed = subprocess.run([*tune[:3], "conf/decode_other.yaml", *tune[4:]], cwd=recipe, capture_output=True,
                             text=True, env=env, timeout=600)
    assert changed.returncode == 0 and "unfrozen: inputs changed (changed: decode_config); training again" in changed.stderr
    assert (tried / "valid.loss.best.pth").stat().st_mtime_ns != trained_at
    assert len(list(tried.parent.glob("unfrozen.superseded.*"))) == 1
    bad = subprocess.run(["bash", "../TEMPLATE/tune_finetune.sh", "exp/asr_missing", "conf/decode.yaml", "x", ""],
                         cwd=recipe, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "exp/asr_missing/config.yaml not found" in bad.stderr
    # a pre-training setting tried on dev (egs/TEMPLATE/tune_pretrain.sh): pre-trains with the overrides,
    # probes on the fine-tuning sets, exports the probe's pick; a second call only prints the scores
    name, overrides = "lr1e-3", f"{FAST_PRETRAIN} --optim_conf lr=1e-3"
    tune_pt = ["bash", "../TEMPLATE/tune_pretrain.sh", "conf/pretrain_aqc.yaml", name, overrides]
    out = subprocess.run(tune_pt, cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    tried = recipe / "exp" / "tune" / "pretrain_aqc_lr1e-3"
    conf = yaml.safe_load((tried / "config.yaml").read_text())
    assert conf["optim_conf"]["lr"] == 1e-3 and conf["max_epoch"] == 1
    assert (conf["probe_train_data"], conf["probe_dev_data"]) == ("dump/train_ft", "dump/dev")
    assert conf["augmentation_conf"]["background_p"] == 0  # no --musan_root in this run: no noise list
    assert "rir_scp" not in conf["augmentation_conf"]
    # its record holds the stage-2 lists, as stage 4's does (absent here)
    assert {"noise_list\tabsent", "rir_list\tabsent"} <= set((tried / ".done").read_text().splitlines())
    chosen = json.loads((tried / "aqc_model.probe.pt.json").read_text())
    assert chosen["select"] == "probe" and chosen["num_updates"] == 6
    probed = json.loads((tried / "probe" / "scores.jsonl").read_text().splitlines()[-1])
    assert out.stdout == (f"exp/tune/pretrain_aqc_lr1e-3\t{overrides}\tlast epoch 1: {100 * probed['best_error']:.1f} %\t"
                          f"best epoch 1: {100 * probed['best_error']:.1f} %\t"
                          f"exp/tune/pretrain_aqc_lr1e-3/aqc_model.probe.pt (update 6)\tthreads: {one}\n")
    trained_at = (tried / "aqc_model.probe.pt").stat().st_mtime_ns
    again = subprocess.run(tune_pt, cwd=recipe, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout == out.stdout
    assert (tried / "aqc_model.probe.pt").stat().st_mtime_ns == trained_at
    config = recipe / "conf" / "pretrain_aqc.yaml"
    config.write_text(config.read_text().replace("mask_prob: 0.65", "mask_prob: 0.5"))
    changed = subprocess.run(tune_pt, cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert changed.returncode == 0 and "lr1e-3: inputs changed (changed: config); training again" in changed.stderr
    assert yaml.safe_load((tried / "config.yaml").read_text())["model_conf"]["mask_prob"] == 0.5
    assert len(list(tried.parent.glob("pretrain_aqc_lr1e-3.superseded.*/aqc_model.probe.pt"))) == 1
    bad = subprocess.run(["bash", "../TEMPLATE/tune_pretrain.sh", "--dumpdir", "nowhere", "conf/pretrain_aqc.yaml",
                          name, overrides], cwd=recipe, capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "nowhere/train_pretrain/wav.scp not found: run the recipe's stages 1-3 first" \
        in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("released_as", ["hf", "fairseq"])
def test_fsdd_continues_pretraining_from_a_released_model(tmp_path, released_as):
    """./run.sh --init_upstream: stage 4 starts from a released model (a Hugging Face folder; a fairseq
    data2vec-aqc checkpoint), then fine-tunes and decodes; the run says what it loaded and reset. (That the
    weights before the first update are the file's: tests/test_warm_start.py.)"""
    import torch
    from test_interop import _fairseq_checkpoint

    from aqc.interop import export_hf
    from aqc.models import data2vec_aqc_tiny

    torch.manual_seed(11)
    released = data2vec_aqc_tiny()
    with torch.no_grad():  # as after pre-training: the teacher is not the student
        for p in released.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if released_as == "hf":
        folder = export_hf(released, tmp_path / "released_hf")
    else:
        folder = tmp_path / "checkpoint_best.pt"
        torch.save(_fairseq_checkpoint(released), folder)
    recipe = _copy_recipe("fsdd", tmp_path)
    out = _run_recipe(recipe, ["--fsdd_root", str(DATA / "fsdd"), "--local_data_opts", "--labelled_per_digit 2",
                               "--init_upstream", str(folder), "--pretrain_args", FAST_PRETRAIN,
                               "--finetune_args", FAST_FINETUNE, "--decode_args", "--batch_size 32"])
    ssl = recipe / "exp" / "ssl_pretrain_aqc"
    said = out.stdout + out.stderr
    assert f"continued pre-training from {folder}" in said
    record = (ssl / ".done.4").read_text()
    if released_as == "hf":
        assert "teacher: a copy of the student (the file has no teacher)" in said
        assert "initialised afresh: quantizer" in said and "update counter (the file was at update 0" in said
        assert "init_upstream/config.json\tsha256:" in record  # the folder is an input of stage 4
    else:
        assert "teacher: the file's EMA teacher" in said and "the file was at update 123" in said
        assert "init_upstream\tsha256:" in record
    _check_results(recipe, ["asr_finetune_pretrain_aqc/decode_decode/test"])


@pytest.mark.slow
def test_asterisk_recipe_end_to_end(tmp_path):
    recipe = _copy_recipe("asterisk", tmp_path)
    # cmd.sh's launchers prefix each stage's command (torchrun, srun ...): here one that logs and runs it
    launcher = tmp_path / "launch.sh"
    launcher.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/launched.txt\nexec "$@"\n')
    launcher.chmod(0o755)
    _run_recipe(recipe, ["--asterisk_root", str(DATA / "asterisk_en"), "--musan_root", str(DATA / "musan"),
                         "--pretrain_args", FAST_PRETRAIN,
                         "--finetune_args", FAST_FINETUNE, "--decode_args", "--batch_size 16"],
                env={f"{stage}_launcher": str(launcher) for stage in ("pretrain", "finetune", "decode")})
    _check_results(recipe, ["dev", "test"])
    launched = [line.split()[:3] for line in (tmp_path / "launched.txt").read_text().splitlines()]
    assert launched == [["python", "-m", "aqc.bin.ssl_train"], ["python", "-m", "aqc.bin.asr_train"],
                        ["python", "-m", "aqc.bin.asr_inference"], ["python", "-m", "aqc.bin.asr_inference"]]


@pytest.mark.parametrize("recipe_name", ["fsdd", "asterisk"])
def test_compare_trains_every_baseline_with_every_seed(tmp_path, recipe_name):
    """--compare true (egs/TEMPLATE/compare.sh): four pre-training methods, two seeds each, six systems,
    each pre-training fine-tuned and decoded with each seed, at the default system's fine-tuning config (the
    log-mel row: its own)."""
    recipe = _copy_recipe(recipe_name, tmp_path)
    out = _run_recipe(recipe, ["--compare", "true", "--finetune_seeds", "2", "--dry_run", "true", "--stage", "4"],
                      timeout=300)
    runs = re.findall(r"would run: (?:\S+ )*?python -m aqc\.bin\.(\w+) .*?--output_dir (\S+)", out.stderr)
    pretrainings = ("", "_pseed1")  # --compare's default --pretrain_seeds 2
    methods = ("aqc", "data2vec", "data2vec_a", "data2vec_aq")
    pretrained = {f"exp/ssl_pretrain_{m}{p}" for m in methods for p in pretrainings}
    assert {d for tool, d in runs if tool == "ssl_train"} == pretrained
    systems = [f"finetune_pretrain_{m}{p}" for m in methods for p in pretrainings]
    systems += ["finetune_scratch", "finetune_logmel"]  # no pre-training: fine-tuning seeds only
    finetuned = sorted(d for tool, d in runs if tool == "asr_train")
    assert finetuned == sorted(f"exp/asr_{s}{k}" for s in systems for k in ("", "_seed1"))
    configs = re.findall(r"python -m aqc\.bin\.asr_train --config (\S+) .*?--output_dir (\S+)", out.stderr)
    assert all((c == "conf/finetune_logmel.yaml") == ("logmel" in d) for c, d in configs)
    assert len(configs) == 2 * len(systems)
    bad = subprocess.run(["bash", "./run.sh", "--compare", "yes"], cwd=recipe, capture_output=True, text=True)
    assert bad.returncode != 0 and "--compare yes: expected true or false" in bad.stderr


def test_compare_runs_the_baselines_within_the_stages_asked_for(tmp_path):
    """compare.sh, not run.sh, decides which of the baselines' stages run: --stop_stage 7 packs the default
    system only (baselines are for RESULTS.md), --stop_stage 3 trains nothing, --stage 5 starts there."""
    recipe = _copy_recipe("fsdd", tmp_path)

    def dry(*args):
        out = _run_recipe(recipe, ["--compare", "true", "--finetune_seeds", "1", "--dry_run", "true", *args],
                          timeout=300)
        return out.stderr, re.findall(r"Stage (\d): .*?\((exp/[^)]*)\): dry run", out.stderr)

    log, stages = dry("--stage", "6", "--stop_stage", "7", "--pretrain_seeds", "1")
    assert sorted(d for n, d in stages if n == "7") == ["exp/packed/finetune_pretrain_aqc"]
    assert sorted(d for n, d in stages if n == "6") == sorted(
        f"exp/asr_{s}/decode_decode" for s in ("finetune_pretrain_aqc", "finetune_logmel", "finetune_scratch",
                                               "finetune_pretrain_data2vec", "finetune_pretrain_data2vec_a",
                                               "finetune_pretrain_data2vec_aq"))
    log, stages = dry("--stage", "2", "--stop_stage", "3")
    assert "nothing to compare" in log and not [n for n, _ in stages if int(n) >= 4]
    log, stages = dry("--stage", "5")  # with --compare's two pre-trainings of each pre-trained system
    assert {n for n, _ in stages} == {"5", "6"} and len([1 for n, _ in stages if n == "5"]) == 6 + 4


def test_compare_gives_a_baseline_its_own_finetuning_config_under_the_shared_name(tmp_path):
    """A recipe's conf/finetune_<method>.yaml is that pre-trained baseline's fine-tuning config (a setting
    tuned for data2vec-aqc is not imposed on it); the experiment keeps the shared config's name, with
    --ssl_select's suffix as any other; every other system keeps the recipe's config."""
    recipe = _copy_recipe("fsdd", tmp_path)
    own = yaml.safe_load((recipe / "conf" / "finetune.yaml").read_text())
    own["frontend_conf"]["freeze_encoder_steps"] = 7
    (recipe / "conf" / "finetune_data2vec.yaml").write_text(yaml.safe_dump(own))

    def configs(*args):
        out = _run_recipe(recipe, ["--compare", "true", "--finetune_seeds", "2", "--pretrain_seeds", "1",
                                   "--dry_run", "true", "--stage", "5", *args], timeout=300)
        return dict((d, c) for c, d in re.findall(
            r"python -m aqc\.bin\.asr_train --config (\S+) .*?--output_dir (\S+)", out.stderr))

    runs = configs()
    own_runs = {"exp/asr_finetune_pretrain_data2vec", "exp/asr_finetune_pretrain_data2vec_seed1"}
    assert {d for d, c in runs.items() if c == "conf/finetune_data2vec.yaml"} == own_runs
    assert {d for d, c in runs.items() if c == "conf/finetune.yaml"} == {
        f"exp/asr_{s}{k}" for s in ("finetune_pretrain_aqc", "finetune_pretrain_data2vec_a",
                                    "finetune_pretrain_data2vec_aq", "finetune_scratch") for k in ("", "_seed1")}
    assert len(runs) == 12  # and the log-mel row's two
    latest = configs("--ssl_select", "latest")
    assert {d for d, c in latest.items() if c == "conf/finetune_data2vec.yaml"} == {
        "exp/asr_finetune_pretrain_data2vec_latest", "exp/asr_finetune_pretrain_data2vec_latest_seed1"}
    # the name follows the default system's config, however the option is spelt
    (recipe / "conf" / "finetune_alt.yaml").write_text((recipe / "conf" / "finetune.yaml").read_text())
    alt = configs("--finetune-config", "conf/finetune_alt.yaml")
    assert {d for d, c in alt.items() if c == "conf/finetune_data2vec.yaml"} == {
        "exp/asr_finetune_alt_pretrain_data2vec", "exp/asr_finetune_alt_pretrain_data2vec_seed1"}
    assert alt["exp/asr_finetune_alt_pretrain_aqc"] == "conf/finetune_alt.yaml"


def test_asterisk_transcripts_spell_numbers_as_the_prompts_say_them(tmp_path):
    """Letter CTC has no way to emit "1" for the spoken "one": stage 1 writes numbers out."""
    sys.path.insert(0, str(REPO / "egs" / "asterisk" / "local"))
    try:
        from prepare_asterisk import normalise
    finally:
        sys.path.pop(0)
    assert normalise("Press 1 to list users, 2 to kick.") == "press one to list users two to kick"
    assert normalise("dial 500; extension 1234, password 4242") == \
        "dial five hundred extension one two three four password four two four two"
    assert normalise("28.8 kilobit") == "twenty eight eight kilobit"
    assert normalise("dial extension 8500") == "dial extension eight thousand five hundred"
    assert normalise("3D audio, H.323") == "three d audio h three two three"
    assert normalise("Press * or #, 15 or 0") == "press star or pound fifteen or zero"
    # the recipe's real prompts: after stage 1 no transcript holds a digit
    root = tmp_path / "data"
    subprocess.run([sys.executable, str(REPO / "egs" / "asterisk" / "local" / "prepare_asterisk.py"),
                    "--asterisk_root", str(DATA / "asterisk_en"), "--data_dir", str(root)], check=True,
                   capture_output=True)
    texts = (root / "train_pretrain" / "text").read_text().splitlines()
    assert len(texts) > 500 and not [t for t in texts if re.search(r"[0-9]", t.split(" ", 1)[1])]


def _asterisk_prompts():
    """(wav, upper-case LibriSpeech-style transcript) of the Asterisk prompts, in listing order."""
    prompts = []
    for line in (DATA / "asterisk_en" / "core-sounds-en.txt").read_text().splitlines():
        name, sep, text = line.partition(":")
        wav = DATA / "asterisk_en" / "wav" / f"{name.strip()}.wav"
        words = "".join(c if c.isalpha() or c in " '" else " " for c in text.upper()).split()
        if sep and words and wav.is_file() and not line.startswith(";"):
            prompts.append((wav, " ".join(words)))
    return prompts


def _librispeech_fixture(root: Path) -> tuple:
    """A small LibriSpeech + Libri-light in their own layouts, with what the real corpora hold:

    - pre-training splits train-clean-100, train-clean-360 and train-other-500 of real LibriSpeech
      utterances (../shared/data/librispeech_unlabeled, several speakers each, their real ids);
    - transcribed splits from the Asterisk prompts (real speech and text, 16 kHz flac), several speaker
      and chapter folders per split: dev/test clean and other, Libri-light 1h/0..5 and 9h, clean and other;
    - a test-other utterance longer than 30 s (13 prompts back to back), as LibriSpeech's test sets have.

    Returns (LibriSpeech root, Libri-light root, {split: number of utterances}, all transcripts)."""
    import torch
    import torchaudio.functional as AF

    prompts = iter(_asterisk_prompts())
    counts, texts = {}, []

    def write_chapter(split_dir: Path, speaker: int, chapter: int, items):
        chapter_dir = split_dir / str(speaker) / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (audio, text) in enumerate(items):
            utt = f"{speaker}-{chapter}-{i:04d}"
            sf.write(chapter_dir / f"{utt}.flac", audio, 16000)
            lines.append(f"{utt} {text}\n")
            texts.append(text)
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
        counts[str(split_dir)] = counts.get(str(split_dir), 0) + len(items)

    def take(n):
        items = []
        for wav, text in (next(prompts) for _ in range(n)):
            audio, sr = sf.read(wav, dtype="float32")
            items.append((AF.resample(torch.from_numpy(audio), sr, 16000).numpy(), text))
        return items

    libri, light = root / "LibriSpeech", root / "librispeech_finetuning"
    # pre-training audio: real LibriSpeech utterances in their own speaker/chapter folders
    unlabelled = sorted((DATA / "librispeech_unlabeled" / "train-clean-100").rglob("*.flac"))
    for split, files in (("train-clean-100", unlabelled[0:12]), ("train-clean-360", unlabelled[12:36]),
                         ("train-other-500", unlabelled[36:48])):
        for flac in files:
            speaker, chapter, _ = flac.stem.split("-")
            chapter_dir = libri / split / speaker / chapter
            chapter_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(flac, chapter_dir / flac.name)
            with open(chapter_dir / f"{speaker}-{chapter}.trans.txt", "a") as f:
                f.write(f"{flac.stem} UNTRANSCRIBED IN THIS FIXTURE\n")
            counts[str(libri / split)] = counts.get(str(libri / split), 0) + 1
    speaker = 100
    for part in [f"1h/{k}" for k in range(6)] + ["9h"]:
        for kind in ("clean", "other"):
            speaker += 1
            write_chapter(light / part / kind, speaker, 1000 + speaker, take(3 if part != "9h" else 5))
    for split in ("dev-clean", "dev-other", "test-clean", "test-other"):
        for _ in range(2):
            speaker += 1
            write_chapter(libri / split, speaker, 2000 + speaker, take(3))
    long = take(13)  # one utterance of over 30 s
    audio = np.concatenate([a for a, _ in long])
    assert len(audio) > 30 * 16000, len(audio) / 16000
    write_chapter(libri / "test-other", speaker + 1, 3000, [(audio, " ".join(t for _, t in long))])
    # a training utterance over 30 s too, which the duration filter drops from the pre-training set
    write_chapter(libri / "train-clean-360", speaker + 2, 3001, [(audio, "LONG")])
    return libri, light, {Path(k).relative_to(root).as_posix(): v for k, v in counts.items()}, texts


def _write_word_arpa(path: Path, texts) -> None:
    """A unigram+bigram ARPA over the fixture's words (an ARPA file is text: no KenLM tools needed)."""
    import math
    from collections import Counter

    unigrams = Counter(w for t in texts for w in t.split())
    total = sum(unigrams.values()) + len(texts)
    uni = [f"{math.log10(len(texts) / total):.4f}\t</s>", "-99\t<s>\t-0.3", "-6.0\t<unk>\t0.0"]
    uni += [f"{math.log10(n / total):.4f}\t{w}\t-0.3" for w, n in sorted(unigrams.items())]
    firsts = Counter(t.split()[0] for t in texts)
    bi = [f"{math.log10(n / len(texts)):.4f}\t<s> {w}" for w, n in sorted(firsts.items())]
    path.write_text("\n".join(["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:", *uni,
                               "", "\\2-grams:", *bi, "", "\\end\\", ""]))


def _lines_of(path: Path) -> list:
    return path.read_text().splitlines()


@pytest.mark.slow
def test_librispeech_recipe_stages_1_to_6_on_fixture(tmp_path):
    libri, light, counts, texts = _librispeech_fixture(tmp_path / "corpora")
    recipe = _copy_recipe("librispeech", tmp_path)
    lm = tmp_path / "corpora" / "4-gram.arpa"
    _write_word_arpa(lm, texts)
    (recipe / "conf" / "decode_kenlm_small.yaml").write_text(
        (REPO / "egs" / "TEMPLATE" / "conf" / "decode_kenlm.yaml").read_text().replace("beam_size: 1500", "beam_size: 50"))
    # stage 4 through a launcher: torchrun starts 2 CPU ranks (gloo); a wrapper logs every command
    wrapper = tmp_path / "log_and_run.sh"
    wrapper.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/launched.txt\nexec "$@"\n')
    wrapper.chmod(0o755)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {"pretrain_launcher": f"{wrapper} {torchrun} --standalone --nproc_per_node 2 --no-python",
           "finetune_launcher": str(wrapper), "decode_launcher": str(wrapper)}
    common = ["--librispeech_root", str(libri), "--librilight_root", str(light), "--musan_root", str(DATA / "musan"),
              "--pretrain_data", "360h", "--pretrain_config", "conf/pretrain_tiny.yaml",
              "--finetune_config", "conf/finetune_tiny.yaml", "--lm_file", str(lm),
              "--lm_decode_config", "conf/decode_kenlm_small.yaml", "--pretrain_args", FAST_PRETRAIN,
              "--finetune_args", FAST_FINETUNE, "--decode_args", "--batch_size 8"]
    first = _run_recipe(recipe, [*common, "--finetune_subset", "10min", "--stage", "1", "--stop_stage", "6"],
                        env=env, timeout=1500)

    # every split prepared from its own folders; 10 min = Libri-light 1h/0 (clean and other)
    sizes = {d.name: len(_lines_of(d / "wav.scp")) for d in (recipe / "data").iterdir() if (d / "wav.scp").is_file()}
    assert sizes == {"train_360h": counts["LibriSpeech/train-clean-360"], "train_10min": 6, "dev_clean": 6,
                     "dev_other": 6, "test_clean": 6, "test_other": 7}
    # the long training utterance is filtered from pre-training; the long test utterance is scored
    assert len(_lines_of(recipe / "dump" / "train_360h" / "wav.scp")) == sizes["train_360h"] - 1
    lengths = [int(line.split()[1]) for line in _lines_of(recipe / "dump" / "test_other" / "utt2num_samples")]
    assert len(lengths) == 7 and max(lengths) > 30 * 16000
    # a fixed letter inventory, not the letters the 10-minute text happens to hold
    tokens = _lines_of(recipe / "data" / "token_list" / "char" / "tokens.txt")
    assert tokens == ["<blank>", "<unk>", *_lines_of(REPO / "egs" / "librispeech" / "local" / "letters.txt"),
                      "<sos/eos>"]
    # experiment directories named after the pre-training data and the fine-tuning subset
    ssl = recipe / "exp" / "ssl_360h_pretrain_tiny"
    asr = recipe / "exp" / "asr_10min_finetune_tiny_360h_pretrain_tiny"
    assert (ssl / "aqc_model.pt").is_file() and (asr / "valid.wer_ctc.best.pth").exists()
    # the launcher started stage 4 on 2 ranks; behind a launcher ESPnet's own process spawning is off
    launched = _lines_of(tmp_path / "launched.txt")
    assert launched[0].startswith(f"{torchrun} --standalone --nproc_per_node 2 --no-python python -m aqc.bin.ssl_train")
    assert "--multiprocessing_distributed false" in launched[0] and "--ngpu 0" in launched[0]
    assert launched[1].startswith("python -m aqc.bin.asr_train") and "--multiprocessing_distributed false" in launched[1]
    assert launched[0].count("--num_workers") == 1  # FAST_PRETRAIN's only: the template adds none
    ranks = json.loads((ssl / "rank_consistency.json").read_text())["ranks"]
    assert len(ranks) == 2 and ranks[0]["student"] == ranks[1]["student"]
    # decoded twice, greedy and with the LM (lexicon made from the ARPA); every utterance of every set scored
    lm_decode = asr / "decode_decode_kenlm_small_4-gram"
    assert json.loads((lm_decode / "lexicon.json").read_text())["skipped"] == 0
    sets = ["dev_clean", "dev_other", "test_clean", "test_other"]
    _check_results(recipe, [f"{d}/{s}" for d in ("decode_decode", "decode_decode_kenlm_small_4-gram") for s in sets])
    assert len(list(recipe.glob("exp/asr_*/decode_*/*/score/scores.json"))) == 8
    assert "--kenlm_file" in " ".join(launched) and sum("aqc.bin.asr_inference" in c for c in launched) == 8

    # another fine-tuning subset: its data prepared now, the formatted pre-training set and the
    # pre-training kept, a new fine-tuning directory beside the first
    second = _run_recipe(recipe, [*common, "--finetune_subset", "1h", "--stage", "1", "--stop_stage", "6"],
                         env=env, timeout=1500)
    assert len(_lines_of(recipe / "data" / "train_1h" / "wav.scp")) == 36
    assert "dump/train_360h is up to date with data/train_360h; kept" in second.stderr
    assert "Stage 4: SSL pre-training (exp/ssl_360h_pretrain_tiny): already done" in second.stderr
    # it was probed on the 10-minute set: said, and its probe scores still choose the checkpoint
    assert "NOTE: exp/ssl_360h_pretrain_tiny was probed on dump/train_10min dump/dev_other, not on dump/train_1h" \
        in second.stderr
    assert (recipe / "exp" / "asr_1h_finetune_tiny_360h_pretrain_tiny" / ".done.5").is_file()
    assert (asr / ".done.5").is_file()  # the 10-minute experiment is still there, finished
    results = (recipe / "RESULTS.md").read_text()
    assert "asr_10min_finetune_tiny_360h_pretrain_tiny/decode_decode/test_other" in results
    assert "asr_1h_finetune_tiny_360h_pretrain_tiny/decode_decode_kenlm_small_4-gram/test_other" in results
    assert first.returncode == second.returncode == 0


def test_librispeech_names_experiments_after_the_data(tmp_path):
    recipe = _copy_recipe("librispeech", tmp_path)
    out = _run_recipe(recipe, ["--librispeech_root", str(tmp_path), "--pretrain_data", "960h", "--finetune_subset",
                               "100h", "--dry_run", "true", "--stage", "4"], timeout=300)
    assert "exp/ssl_960h_pretrain_base" in out.stderr
    assert "--output_dir exp/asr_100h_finetune_100h_960h_pretrain_base" in out.stderr
    bad = subprocess.run(["bash", "./run.sh", "--pretrain_data", "961h"], cwd=recipe, capture_output=True, text=True)
    assert bad.returncode != 0 and "--pretrain_data 961h: expected 960h, 460h, 360h or 100h" in bad.stderr


@pytest.mark.parametrize("recipe", ["fsdd", "asterisk"])
def test_a_baselines_own_finetuning_config_differs_only_in_what_was_tuned_for_it(recipe):
    """--compare true claims the same fine-tuning budget and head for every pre-trained system: a baseline's
    own conf/finetune_<method>.yaml (compare.sh) may differ from the shared config only in the frozen phase,
    the one setting tuned per system (the configs' comments)."""
    conf = REPO / "egs" / recipe / "conf"
    shared = yaml.safe_load((conf / "finetune.yaml").read_text())
    own = [p for p in conf.glob("finetune_*.yaml") if (conf / p.name.replace("finetune_", "pretrain_", 1)).exists()]
    if recipe == "asterisk":
        assert sorted(p.name for p in own) == ["finetune_data2vec.yaml", "finetune_data2vec_aq.yaml"]
    for path in own:
        config = yaml.safe_load(path.read_text())
        assert config["frontend_conf"]["freeze_encoder_steps"] != shared["frontend_conf"]["freeze_encoder_steps"]
        tuned = {"frontend_conf": {**config["frontend_conf"],
                                   "freeze_encoder_steps": shared["frontend_conf"]["freeze_encoder_steps"]}}
        assert {**config, **tuned} == shared, path.name


@pytest.mark.parametrize("recipe", ["fsdd", "asterisk"])
def test_comparison_configs_differ_only_in_the_ablation(recipe):
    """--compare true claims the same budget: the data2vec config is the aqc config minus A, Q and C."""
    conf = REPO / "egs" / recipe / "conf"
    aqc = yaml.safe_load((conf / "pretrain_aqc.yaml").read_text())
    d2v = yaml.safe_load((conf / "pretrain_data2vec.yaml").read_text())
    # each method has its own tuned schedule (EMA and learning rate, see the configs' comments); all else is
    # the same
    tuned = {"ema_decay", "ema_end_decay"}
    assert {k: v for k, v in aqc.items() if k not in ("augmentation_conf", "optim_conf")} == \
        {k: v for k, v in d2v.items() if k not in ("augmentation_conf", "optim_conf")} | {"model_conf": aqc["model_conf"]}
    assert {k: v for k, v in aqc["optim_conf"].items() if k != "lr"} == \
        {k: v for k, v in d2v["optim_conf"].items() if k != "lr"}
    ablation = {"use_quantizer": False, "use_clustering": False, "feature_penalty_weight": 0.0}
    assert {k: v for k, v in d2v["model_conf"].items() if k not in tuned} == \
        {k: v for k, v in {**aqc["model_conf"], **ablation}.items() if k not in tuned}
    assert all(d2v["augmentation_conf"][k] == 0 for k in ("gaussian_p", "reverb_p", "background_p"))
    assert all(aqc["augmentation_conf"][k] > 0 for k in ("gaussian_p", "reverb_p", "background_p"))
    # the EMA teacher's schedule spans the run (see the config's comment)
    updates = aqc["max_epoch"] * aqc["num_iters_per_epoch"] // aqc.get("accum_grad", 1)
    assert aqc["scheduler_conf"]["max_steps"] == updates == aqc["model_conf"]["ema_anneal_end_step"]
    # the ablations: +A is aqc without Q and C, +A+Q without C; everything else is aqc's
    plus_a = yaml.safe_load((conf / "pretrain_data2vec_a.yaml").read_text())
    plus_aq = yaml.safe_load((conf / "pretrain_data2vec_aq.yaml").read_text())
    # the augmentation's strength is tuned per method (noise levels); which stages fire, and how often, is not
    strength = ("gaussian_std_ratio", "noise_snr_db")

    def same_augmentation_but_strength(conf):
        return {**conf, "augmentation_conf": {**aqc["augmentation_conf"],
                                              **{k: v for k, v in conf["augmentation_conf"].items() if k in strength}}}

    # +A trains data2vec's regression-only objective: it runs data2vec's tuned EMA and learning rate
    assert same_augmentation_but_strength(plus_a) == {
        **aqc, "model_conf": {**aqc["model_conf"], **ablation, **{k: d2v["model_conf"][k] for k in tuned}},
        "optim_conf": d2v["optim_conf"]}
    # +A+Q keeps aqc's EMA; its learning rate was tuned on its own (egs/fsdd: 2.5e-4)
    assert same_augmentation_but_strength(plus_aq) == {
        **aqc, "model_conf": {**aqc["model_conf"], "use_clustering": False},
        "optim_conf": {**aqc["optim_conf"], "lr": plus_aq["optim_conf"]["lr"]}}


@pytest.mark.parametrize("recipe", ["fsdd", "asterisk"])
def test_log_mel_baseline_has_the_same_head_and_budget(recipe):
    conf = REPO / "egs" / recipe / "conf"
    aqc = yaml.safe_load((conf / "finetune.yaml").read_text())
    logmel = yaml.safe_load((conf / "finetune_logmel.yaml").read_text())
    frontend = ("frontend", "frontend_conf", "specaug", "specaug_conf", "normalize")
    assert logmel["frontend"] == "default" and aqc["frontend"] == "aqc"
    assert {k: v for k, v in logmel.items() if k not in frontend} == {k: v for k, v in aqc.items() if k not in frontend}


def _user_corpus(root: Path) -> tuple:
    """Shared data laid out as a user would have it: a nested folder of audio in two formats and rates,
    and a transcript list naming files three ways (relative to the audio folder, absolute, by id)."""
    audio = root / "my_audio"
    lines = []
    for k, wav in enumerate(sorted((DATA / "fsdd" / "recordings").glob("*.wav"))):
        digit, speaker, index = wav.stem.split("_")
        if int(index) >= 12:
            continue
        (audio / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, audio / speaker / wav.name)
        word = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][int(digit)]
        key = (f"{speaker}/{wav.name}", str(audio / speaker / wav.name), f"{speaker}-{wav.stem}")[k % 3]
        if int(index) < 6:  # half of the recordings are transcribed
            lines.append(f"{key} {word}\n")
    for flac in sorted((DATA / "librispeech_unlabeled" / "train-clean-100").rglob("*.flac"))[:10]:
        rel = flac.relative_to(DATA / "librispeech_unlabeled")
        (audio / "extra" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(flac, audio / "extra" / rel)
    (root / "transcripts.txt").write_text("".join(lines))
    return audio, root / "transcripts.txt", len(lines)


@pytest.mark.slow
def test_a_recipe_for_your_own_corpus(tmp_path):
    audio, transcripts, labelled = _user_corpus(tmp_path / "corpus")
    repo = tmp_path / "repo"
    (repo / "egs").mkdir(parents=True)
    for item in ("utils", "tools", "aqc"):
        (repo / item).symlink_to(REPO / item)
    (repo / "egs" / "TEMPLATE").symlink_to(REPO / "egs" / "TEMPLATE")
    made = subprocess.run(["bash", "egs/TEMPLATE/setup.sh", "egs/mycorpus"], cwd=repo, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    recipe = repo / "egs" / "mycorpus"
    assert sorted(p.name for p in recipe.iterdir()) == ["cmd.sh", "conf", "local", "path.sh", "run.sh"]
    again = subprocess.run(["bash", "egs/TEMPLATE/setup.sh", "egs/mycorpus"], cwd=repo, capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr
    _run_recipe(recipe, ["--audio_dir", str(audio), "--transcripts", str(transcripts), "--speaker_from", "folder",
                         "--pretrain_args", FAST_PRETRAIN, "--finetune_args", FAST_FINETUNE,
                         "--decode_args", "--batch_size 16"])
    speakers = {}
    for name in ("train_ft", "dev", "test"):
        spk = {line.split()[1] for line in _lines_of(recipe / "data" / name / "utt2spk")}
        speakers[name] = spk
    # 6 speakers: one for test, one for dev, never seen in fine-tuning
    assert len(speakers["test"]) == len(speakers["dev"]) == 1 and len(speakers["train_ft"]) == 4
    assert not (speakers["test"] | speakers["dev"]) & speakers["train_ft"]
    assert sum(len(_lines_of(recipe / "data" / n / "text")) for n in ("train_ft", "dev", "test")) == labelled
    # every audio file of the folder, both formats, nested, is pre-training audio
    assert len(_lines_of(recipe / "data" / "train_pretrain" / "wav.scp")) == len(list(audio.rglob("*.*")))
    _check_results(recipe, ["dev", "test"])


def test_prepare_corpus_names_bad_transcript_lines(tmp_path):
    audio, transcripts, _ = _user_corpus(tmp_path)
    transcripts.write_text(transcripts.read_text() + "nowhere/file.wav seven\ntheo/0_theo_0.wav\n")
    out = subprocess.run([sys.executable, str(REPO / "utils" / "prepare_corpus.py"), "--audio_dir", str(audio),
                          "--transcripts", str(transcripts), "--data_dir", str(tmp_path / "data")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and not (tmp_path / "data").exists()
    assert "'nowhere/file.wav' is neither an audio file nor the id of one under --audio_dir" in out.stderr
    assert "'theo/0_theo_0.wav' has no text" in out.stderr
    # without speakers the split is by utterance, and says so
    transcripts.write_text("".join(transcripts.read_text().splitlines(True)[:-2]))
    out = subprocess.run([sys.executable, str(REPO / "utils" / "prepare_corpus.py"), "--audio_dir", str(audio),
                          "--transcripts", str(transcripts), "--data_dir", str(tmp_path / "data")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "split by utterance (speakers unknown" in out.stderr


def test_prepare_corpus_reads_a_kaldi_dir_with_speakers(tmp_path):
    audio, transcripts, _ = _user_corpus(tmp_path)
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    rows = []
    for line in transcripts.read_text().splitlines():
        key, word = line.split()
        stem = Path(key).stem if key.endswith(".wav") else key.split("-", 1)[1]  # a path, or an id spk-stem
        path = next(audio.rglob(f"{stem}.wav"))
        rows.append((f"{path.parent.name}-{path.stem}", path, word, path.parent.name))
    rows.sort()
    (kaldi / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _, _ in rows))
    (kaldi / "text").write_text("".join(f"{u} {w}\n" for u, _, w, _ in rows))
    (kaldi / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, _, s in rows))
    out = subprocess.run([sys.executable, str(REPO / "utils" / "prepare_corpus.py"), "--audio_dir", str(audio),
                          "--labelled_dir", str(kaldi), "--data_dir", str(tmp_path / "data")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "split by speaker (6 speakers" in out.stderr
    spk = {n: {line.split()[1] for line in _lines_of(tmp_path / "data" / n / "utt2spk")} for n in ("train_ft", "dev", "test")}
    assert not (spk["dev"] | spk["test"]) & spk["train_ft"] and len(spk["train_ft"]) == 4
    for name in ("train_ft", "dev", "test"):
        check = subprocess.run([sys.executable, str(REPO / "utils" / "validate_data_dir.py"), "--no_audio",
                                str(tmp_path / "data" / name)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("recipe_name, corpus, found", [("fsdd", "fsdd", "Using FSDD found at"),
                                                        ("asterisk", "asterisk_en", "Using the Asterisk prompts found at")])
def test_a_bare_run_finds_the_corpus_beside_the_repository(tmp_path, recipe_name, corpus, found):
    """./run.sh with no corpus option (the README's first command) finds ../shared/data/<corpus>."""
    recipe = _copy_recipe(recipe_name, tmp_path)
    (tmp_path / "shared").symlink_to(DATA.parent)  # beside the scratch repository, as ../shared is beside ours
    env = {k: v for k, v in os.environ.items() if k not in ("FSDD_ROOT", "ASTERISK_ROOT")}
    out = subprocess.run(["bash", "./run.sh", "--stop_stage", "1"], cwd=recipe, capture_output=True, text=True,
                         env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{found} {tmp_path / 'shared' / 'data' / corpus} " in out.stderr
    assert len((recipe / "data" / "train_ft" / "wav.scp").read_text().splitlines()) > 100


def test_fsdd_without_a_corpus_or_network_says_what_to_fetch(tmp_path):
    recipe = _copy_recipe("fsdd", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "FSDD_ROOT"}
    # git may use no network protocol here: the download fails at once, as it would offline
    out = subprocess.run(["bash", "./run.sh", "--stop_stage", "1"], cwd=recipe, capture_output=True, text=True,
                         env={**env, "GIT_ALLOW_PROTOCOL": "file"}, timeout=300)
    assert out.returncode != 0
    assert "FSDD not found (looked in downloads/free-spoken-digit-dataset" in out.stderr
    assert "could not download FSDD. Fetch https://github.com/Jakobovski/free-spoken-digit-dataset" in out.stderr
    assert "./run.sh --fsdd_root /path/to/free-spoken-digit-dataset" in out.stderr
    assert not (recipe / "downloads" / "free-spoken-digit-dataset").exists()  # no half-made copy left to find
