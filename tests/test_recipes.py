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
FAST_PRETRAIN = "--max_epoch 1 --num_iters_per_epoch 6 --batch_size 4 --num_workers 0"
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
    args = ["--fsdd_root", str(DATA / "fsdd"), "--local_data_opts", "--labelled_per_digit 2", "--compare", "true",
            "--pretrain_args", FAST_PRETRAIN, "--finetune_args", FAST_FINETUNE]
    _run_recipe(recipe, [*args, "--decode_args", "--batch_size 32"])
    systems = {"asr_finetune_pretrain_aqc": "data2vec-aqc", "asr_finetune_pretrain_data2vec": "data2vec",
               "asr_finetune_scratch": "none (random initialisation)"}
    _check_results(recipe, [f"{s}/decode_decode/test" for s in systems])
    results = (recipe / "RESULTS.md").read_text()
    for system, method in systems.items():
        assert f"| {system} | {method}" in results, system
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
    # a finished recipe re-runs as a no-op: 6 stages of data2vec-aqc, 3 of data2vec, 2 of the scratch baseline
    again = _run_recipe(recipe, [*args, "--decode_args", "--batch_size 32"])
    assert again.stderr.count("already done") == 11 and ": done in " not in again.stderr
    # another decoding option re-runs decoding only, of each system; the old decodings are moved aside
    again = _run_recipe(recipe, [*args, "--decode_args", "--batch_size 16"])
    assert again.stderr.count("already done") == 8
    assert sorted(re.findall(r"Stage (\d): .*: done in", again.stderr)) == ["6", "6", "6"]
    assert again.stderr.count("changed: decode_args") == 3
    assert len(list((recipe / "exp" / "superseded").glob("asr_*.decode_decode.*"))) == 3
    _check_results(recipe, [f"{s}/decode_decode/test" for s in systems])
    assert "superseded" not in (recipe / "RESULTS.md").read_text()


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


def _librispeech_fixture(root: Path) -> tuple[Path, Path]:
    """Asterisk prompts (real speech, real transcripts) laid out like LibriSpeech and Libri-light."""
    import torch
    import torchaudio.functional as AF

    listing = (DATA / "asterisk_en" / "core-sounds-en.txt").read_text().splitlines()
    prompts = []
    for line in listing:
        name, sep, text = line.partition(":")
        wav = DATA / "asterisk_en" / "wav" / f"{name.strip()}.wav"
        words = "".join(c if c.isalpha() or c in " '" else " " for c in text.upper()).split()
        if sep and words and wav.is_file() and not line.startswith(";"):
            prompts.append((wav, " ".join(words)))
    prompts = prompts[:120]

    def write(split_dir: Path, speaker: int, chapter: int, items):
        chapter_dir = split_dir / str(speaker) / str(chapter)
        chapter_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, (wav, text) in enumerate(items):
            audio, sr = sf.read(wav, dtype="float32")
            audio = AF.resample(torch.from_numpy(audio), sr, 16000).numpy()
            utt = f"{speaker}-{chapter}-{i:04d}"
            sf.write(chapter_dir / f"{utt}.flac", audio, 16000)
            lines.append(f"{utt} {text}\n")
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))

    libri, light = root / "LibriSpeech", root / "librispeech_finetuning"
    write(libri / "train-clean-100", 19, 198, prompts[:60])
    write(light / "1h" / "0" / "clean", 103, 1240, prompts[60:84])
    for k, split in enumerate(["dev-clean", "dev-other", "test-clean", "test-other"]):
        write(libri / split, 1272 + k, 128104, prompts[84 + 9 * k: 93 + 9 * k])
    return libri, light


@pytest.mark.slow
def test_librispeech_recipe_stages_1_to_6_on_fixture(tmp_path):
    libri, light = _librispeech_fixture(tmp_path / "corpora")
    recipe = _copy_recipe("librispeech", tmp_path)
    _run_recipe(recipe, ["--librispeech_root", str(libri), "--librilight_root", str(light),
                         "--musan_root", str(DATA / "musan"), "--rir_root", str(DATA / "rir"),
                         "--pretrain_data", "100h", "--finetune_subset", "10min",
                         "--pretrain_config", "conf/pretrain_tiny.yaml", "--finetune_config", "conf/finetune_tiny.yaml",
                         "--stage", "1", "--stop_stage", "6", "--pretrain_args", FAST_PRETRAIN,
                         "--finetune_args", FAST_FINETUNE, "--decode_args", "--batch_size 16"])
    for split in ("train_100h", "train_10min", "dev_clean", "dev_other", "test_clean", "test_other"):
        assert (recipe / "data" / split / "text").is_file(), split
    assert len((recipe / "data" / "train_10min" / "wav.scp").read_text().splitlines()) == 24
    assert (recipe / "data" / "augment" / "noise" / "wav.scp").is_file()
    assert (recipe / "data" / "augment" / "rir" / "wav.scp").is_file()
    _check_results(recipe, ["dev_clean", "dev_other", "test_clean", "test_other"])
    assert (recipe / "exp" / "ssl_pretrain_tiny" / "aqc_model.pt").is_file()


def test_fsdd_comparison_configs_differ_only_in_the_ablation():
    """--compare true claims the same budget: the data2vec config is the aqc config minus A, Q and C."""
    aqc = yaml.safe_load((REPO / "egs" / "fsdd" / "conf" / "pretrain_aqc.yaml").read_text())
    d2v = yaml.safe_load((REPO / "egs" / "fsdd" / "conf" / "pretrain_data2vec.yaml").read_text())
    assert {k: v for k, v in aqc.items() if k != "augmentation_conf"} == \
        {k: v for k, v in d2v.items() if k != "augmentation_conf"} | {"model_conf": aqc["model_conf"]}
    ablation = {"use_quantizer": False, "use_clustering": False, "feature_penalty_weight": 0.0}
    assert d2v["model_conf"] == {**aqc["model_conf"], **ablation}
    assert all(d2v["augmentation_conf"][k] == 0 for k in ("gaussian_p", "reverb_p", "background_p"))
    assert all(aqc["augmentation_conf"][k] > 0 for k in ("gaussian_p", "reverb_p", "background_p"))
    # the EMA teacher's schedule spans the run (see the config's comment)
    updates = aqc["max_epoch"] * aqc["num_iters_per_epoch"] // aqc.get("accum_grad", 1)
    assert aqc["scheduler_conf"]["max_steps"] == updates == aqc["model_conf"]["ema_anneal_end_step"]
