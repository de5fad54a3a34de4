"""utils/parse_options.sh, utils/log.sh, utils/augmentation_args.sh and utils/tuning_runs.sh, and the
torchaudio-augmentations shim."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def script(tmp_path):
    path = tmp_path / "demo.sh"
    path.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # Demo: prints its options.
        # Usage: demo.sh [--nj N] [--stop_stage N] [--musan_root DIR] [args]
        set -euo pipefail
        nj=4
        stop_stage=100
        musan_root=
        . {REPO}/utils/log.sh
        . {REPO}/utils/parse_options.sh
        echo "nj=$nj stop_stage=$stop_stage musan_root=$musan_root rest=$*"
        log "hello"
        """))
    return path


def run(script, *args):
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_augmentation_args_point_at_the_recipes_stage_2_lists(tmp_path):
    """Stage 4 and tune_pretrain.sh share it: no noise list means no background noise; a RIR list is used."""
    def args():
        out = subprocess.run(["bash", "-c", f". {REPO}/utils/augmentation_args.sh && augmentation_args"],
                             cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert args() == ["--augmentation_conf", "background_p=0"]
    for kind in ("noise", "rir"):
        (tmp_path / "data" / "augment" / kind).mkdir(parents=True)
        (tmp_path / "data" / "augment" / kind / "wav.scp").write_text("a /x.wav\n")
    assert args() == ["--augmentation_conf", f"noise_scp={tmp_path}/data/augment/noise/wav.scp",
                      "--augmentation_conf", f"rir_scp={tmp_path}/data/augment/rir/wav.scp"]


def test_tuning_runs_train_resume_report_or_supersede(tmp_path):
    """tune_pretrain.sh and tune_finetune.sh share it: a new setting trains; a finished one with the same
    record is only reported; an interrupted one with the same record resumes in place; other inputs keep
    the old run aside (finished or not) and say which input changed."""
    env = {**os.environ, "AQC_ROOT": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def begin(record, finish=True):
        # the "trainer" appends to a log, as the tuning scripts' trainers resume into their train.log
        body = (f'. {REPO}/utils/tuning_runs.sh; if tuning_run_begin out "$1" lr; then echo train >> out/log; '
                + ('tuning_run_end out "$1"; ' if finish else '') + 'echo trained; else echo reported; fi')
        out = subprocess.run(["bash", "-c", body, "tune.sh", record], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip(), out.stderr

    def aside():
        return sorted(tmp_path.glob("out.superseded.*"))

    a, b = "config\tsha256:aa\nlr\t1e-3", "config\tsha256:bb\nlr\t1e-3"
    assert begin(a) == ("trained", "")
    assert (tmp_path / "out" / ".done").read_text() == "config\tsha256:aa\nlr\t1e-3\n"
    assert not (tmp_path / "out" / ".started").exists()
    assert begin(a) == ("reported", "") and (tmp_path / "out" / "log").read_text() == "train\n"
    said, err = begin(b, finish=False)  # changed, then interrupted
    assert said == "trained" and "tune.sh: lr: inputs changed (changed: config); training again" in err
    assert len(aside()) == 1 and (tmp_path / "out" / ".started").read_text().startswith("config\tsha256:bb")
    assert not (tmp_path / "out" / ".done").exists()
    assert begin(b) == ("trained", "")  # the same inputs: resumed in place, nothing moved
    assert (tmp_path / "out" / "log").read_text() == "train\ntrain\n" and len(aside()) == 1
    kept = next(tmp_path.glob("out.superseded.*"))
    assert (kept / ".done").read_text().startswith("config\tsha256:aa")  # the finished run, kept
    assert begin(a, finish=False)[0] == "trained" and len(aside()) == 2
    said, err = begin(b)  # interrupted with other inputs: kept aside, not resumed (nothing was finished)
    assert said == "trained" and err == "" and len(aside()) == 3
    assert (tmp_path / "out" / "log").read_text() == "train\n"
    assert sorted((old / "log").read_text() for old in tmp_path.glob("out.superseded.*")) == \
        ["train\n", "train\n", "train\ntrain\n"]  # moved within one second: none inside another


def test_space_and_equals_forms_and_dash_underscore(script):
    out = run(script, "--nj", "8", "--stop-stage=3", "--musan_root", "/a b/c", "x", "y")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "nj=8 stop_stage=3 musan_root=/a b/c rest=x y"


def test_defaults_kept_and_double_dash_ends_options(script):
    out = run(script, "--", "--nj")
    assert out.stdout.splitlines()[0] == "nj=4 stop_stage=100 musan_root= rest=--nj"


def test_unknown_option_is_an_error_naming_it(script):
    out = run(script, "--nj", "2", "--bogus-opt", "1")
    assert out.returncode != 0
    assert "unknown option --bogus-opt" in out.stderr
    # environment variables are not options
    out = run(script, "--path", "/tmp")
    assert out.returncode != 0 and "unknown option --path" in out.stderr


def test_missing_value_is_an_error(script):
    out = run(script, "--nj")
    assert out.returncode != 0 and "--nj needs a value" in out.stderr


def test_help_prints_header_comment(script):
    out = run(script, "--help")
    assert out.returncode == 0
    assert out.stdout == "Demo: prints its options.\nUsage: demo.sh [--nj N] [--stop_stage N] [--musan_root DIR] [args]\n"


def test_log_prints_time_file_and_line(script):
    out = run(script)
    line = out.stderr.strip().splitlines()[-1]
    assert "(demo.sh:11:main) hello" in line
    assert line[:4].isdigit() and "T" in line.split()[0]


def test_torchaudio_augmentations_through_shim():
    from aqc.compat import import_torchaudio_augmentations

    taa = import_torchaudio_augmentations()
    torch.manual_seed(0)
    x = torch.sin(torch.linspace(0, 100, 16000)).unsqueeze(0)
    noisy = taa.Noise(min_snr=0.5, max_snr=0.5)(x)
    assert noisy.shape == x.shape
    assert (noisy - x).std().item() == pytest.approx(0.5 * x.std().item(), rel=0.05)
    always = taa.RandomApply([taa.Gain(min_gain=-6, max_gain=-6)], p=1.0)
    never = taa.RandomApply([taa.Gain(min_gain=-6, max_gain=-6)], p=0.0)
    chain = taa.Compose([always, never])
    torch.testing.assert_close(chain(x), x * 10 ** (-6 / 20), rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError, match="sox"):
        taa.Reverb(sample_rate=16000)(x)
