"""The shared stage script's bookkeeping: markers written only after success and keyed on what the stage
depended on (issues 9 and 14), checks before each stage, test sets kept whole."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs" / "TEMPLATE" / "aqc.sh"
DATA = REPO.parent / "shared" / "data"


def _recipe(tmp_path: Path) -> Path:
    """A recipe whose local/data.sh fails until a flag file exists, and counts its runs."""
    recipe = tmp_path / "recipe"
    (recipe / "local").mkdir(parents=True)
    wav = sorted((DATA / "fsdd" / "recordings").glob("*_theo_*.wav"))[:3]
    lines = "".join(f"theo-{i} {p}\\n" for i, p in enumerate(wav))
    texts = "".join(f"theo-{i} zero\\n" for i in range(len(wav)))
    spk = "".join(f"theo-{i} theo\\n" for i in range(len(wav)))
    (recipe / "local" / "data.sh").write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        set -euo pipefail
        echo run >> runs.txt
        [ -f allow ] || {{ echo "simulated failure" >&2; exit 3; }}
        mkdir -p data/all
        printf '{lines}' > data/all/wav.scp
        printf '{texts}' > data/all/text
        printf '{spk}' > data/all/utt2spk
        echo "theo $(cut -d' ' -f1 data/all/utt2spk | xargs)" > data/all/spk2utt
        """))
    (recipe / "local" / "data.sh").chmod(0o755)
    return recipe


def _run_stage1(recipe: Path):
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(TEMPLATE), "--stage", "1", "--stop_stage", "1", "--pretrain_set", "all", "--finetune_set", "all",
         "--valid_set", "all", "--test_sets", "all", "--pretrain_config", "p.yaml", "--finetune_config", "f.yaml",
         "--decode_config", "d.yaml"], cwd=recipe, capture_output=True, text=True, env=env)


def test_failed_stage_leaves_no_marker_and_is_redone_then_skipped(tmp_path):
    recipe = _recipe(tmp_path)
    failed = _run_stage1(recipe)
    assert failed.returncode != 0 and "simulated failure" in failed.stderr
    assert not (recipe / "data" / ".done.1").exists()

    (recipe / "allow").touch()
    ok = _run_stage1(recipe)
    assert ok.returncode == 0, ok.stderr
    assert (recipe / "data" / ".done.1").exists()
    assert (recipe / "runs.txt").read_text().count("run") == 2
    times = (recipe / "exp" / "stage_times.tsv").read_text().splitlines()
    assert len(times) == 1 and times[0].startswith("1\tdata preparation\t")

    again = _run_stage1(recipe)
    assert again.returncode == 0
    assert "already done" in again.stderr
    assert (recipe / "runs.txt").read_text().count("run") == 2  # the finished stage did not run again


def test_missing_required_option_is_named(tmp_path):
    out = subprocess.run(["bash", str(TEMPLATE), "--stage", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "--pretrain_set is required" in out.stderr


def test_unknown_template_option_is_named(tmp_path):
    out = subprocess.run(["bash", str(TEMPLATE), "--stgae", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown option --stgae" in out.stderr


# ------------------------------------------------------------------------------------------------------
# Input records (issue 14): utils/stage_inputs.py
# ------------------------------------------------------------------------------------------------------
STAGE_INPUTS = REPO / "utils" / "stage_inputs.py"


def _record(*specs, cwd=None):
    out = subprocess.run([sys.executable, str(STAGE_INPUTS), *map(str, specs)], capture_output=True, text=True,
                         cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _diff(old: str, new: str, tmp_path: Path) -> str:
    (tmp_path / "old").write_text(old)
    (tmp_path / "new").write_text(new)
    out = subprocess.run([sys.executable, str(STAGE_INPUTS), "--diff", tmp_path / "old", tmp_path / "new"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_record_is_sorted_and_yaml_is_compared_by_content(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "other" / "b.yaml"
    b.parent.mkdir()
    a.write_text("# tuned on dev\nbatch_size: 4\nmodel_conf: {layers: 2}\n")
    b.write_text("model_conf:\n    layers: 2   # the same, formatted otherwise\nbatch_size: 4\n")
    rec = _record("opt:z_opt=a\tb", f"yaml:config={a}", "path:root=rel/dir", "path:empty=", cwd=tmp_path)
    lines = rec.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["config", "empty", "root", "z_opt"]
    assert "z_opt\ta\\tb" in lines and f"root\t{tmp_path / 'rel' / 'dir'}" in lines and "empty\t" in lines
    assert _record(f"yaml:config={a}") == _record(f"yaml:config={b}")  # another path, same content
    b.write_text("model_conf: {layers: 3}\nbatch_size: 4\n")
    assert _record(f"yaml:config={a}") != _record(f"yaml:config={b}")
    assert _record(f"yaml:config={tmp_path / 'none.yaml'}") == "config\tabsent\n"


def test_yamlkey_records_one_key_only(tmp_path):
    # A random-init baseline reads only its pre-training config's model_conf: an edit elsewhere in the file
    # (augmentation, schedule) is not its input, an edit of model_conf is, and so is the key appearing.
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text("model_conf: {layers: 2}\nmax_epoch: 24\n")
    spec = f"yamlkey:arch={cfg}#model_conf"
    before = _record(spec)
    assert before.startswith("arch\tyaml-sha256:")
    cfg.write_text("# tuned\nmax_epoch: 48\nmodel_conf:\n    layers: 2\naugmentation_conf: {gaussian_p: 0.5}\n")
    assert _record(spec) == before
    cfg.write_text("model_conf: {layers: 3}\nmax_epoch: 48\n")
    assert _diff(before, _record(spec), tmp_path) == "changed: arch"
    cfg.write_text("max_epoch: 48\n")
    assert _record(spec) not in (before, "arch\tabsent\n")  # no model_conf: the defaults, another input
    assert _record(f"yamlkey:arch={tmp_path / 'none.yaml'}#model_conf") == "arch\tabsent\n"
    no_model_conf = _record(spec)  # the file as last written above: max_epoch only
    cfg.write_text("# no settings at all\n")  # an empty file has no model_conf either: the same input
    assert _record(spec) == no_model_conf
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    out = subprocess.run([sys.executable, str(STAGE_INPUTS), f"yamlkey:arch={listing}#model_conf"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "is not a YAML mapping" in out.stderr
    for bad in (f"yamlkey:arch={cfg}", f"yamlkey:arch={cfg}#"):
        out = subprocess.run([sys.executable, str(STAGE_INPUTS), bad], capture_output=True, text=True)
        assert out.returncode != 0 and "PATH#KEY" in out.stderr


def test_record_of_files_and_data_dirs(tmp_path):
    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("u1 /a.wav\n")
    (d / "text").write_text("u1 hello\n")
    (d / "notes.txt").write_text("not a Kaldi file\n")
    rec = _record(f"dir:test={d}", f"file:noise={tmp_path / 'noise.scp'}", f"dir:gone={tmp_path / 'nothing'}")
    names = [line.split("\t")[0] for line in rec.splitlines()]
    assert names == ["gone", "noise", "test/text", "test/wav.scp"]
    assert "gone\tabsent" in rec and "noise\tabsent" in rec
    (d / "notes.txt").write_text("changed\n")
    assert _record(f"dir:test={d}") == _record(f"dir:test={d}")
    before = _record(f"dir:test={d}")
    (d / "text").write_text("u1 hello there\n")
    assert _diff(before, _record(f"dir:test={d}"), tmp_path) == "changed: test/text"


def test_diff_names_what_changed(tmp_path):
    old = "a\t1\nb\t2\nc\t3\n"
    assert _diff(old, old, tmp_path) == ""
    assert _diff(old, "a\t1\nb\t9\nd\t4\n", tmp_path) == "changed: b; new: d; gone: c"
    assert "no record of its inputs" in _diff("", old, tmp_path)  # an empty marker of an older aqc


def test_bad_spec_and_bad_yaml_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    for spec, expect in ((f"yaml:config={bad}", f"{bad} is not valid YAML"), ("nonsense", "KIND:NAME=VALUE")):
        out = subprocess.run([sys.executable, str(STAGE_INPUTS), spec], capture_output=True, text=True)
        assert out.returncode != 0 and expect in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------
# The template's stages, on real audio, with stand-ins for the trainers and the decoder
# ------------------------------------------------------------------------------------------------------
# Stages 4-6 start ESPnet's trainers and decoder through the launchers of cmd.sh (pretrain_launcher, ...).
# Here the launcher does not run them but writes what they leave behind (a model file, config.yaml, a
# checkpoint, hypotheses), with contents that change when their inputs change, and logs each call. All
# else is the template's own code: records, markers, superseding, checks, export, scoring, RESULTS.md.
# Real training runs in tests/test_recipes.py (slow).
FAKE_LAUNCHER = r'''#!/usr/bin/env python3
import hashlib, json, os, sys
from pathlib import Path

tool, args = sys.argv[3].rsplit(".", 1)[1], sys.argv[4:]
opt = lambda name: args[args.index(name) + 1]
out = Path(opt("--output_dir"))
found = sorted(p.name for p in out.iterdir()) if out.is_dir() else None
with open("launched.jsonl", "a") as f:
    f.write(json.dumps({"tool": tool, "output_dir": str(out), "found": found, "args": args}) + "\n")
out.mkdir(parents=True, exist_ok=True)
print(f"fake {tool}: to stdout", flush=True)
print(f"fake {tool}: to stderr", file=sys.stderr, flush=True)
if os.path.exists(f"interrupt_{tool}"):
    (out / "checkpoint.pth").write_text("half an epoch")
    sys.exit(3)
digest = hashlib.sha256()  # what the real tool's output depends on: its options and the files they name
for a in args:
    digest.update(a.encode())
    for part in a.replace("=", ",").split(","):
        if os.path.isfile(part):
            digest.update(Path(part).read_bytes())
if tool == "ssl_train":
    import torch
    from aqc.models import data2vec_aqc_tiny
    from aqc.models.io import save_model_file

    torch.manual_seed(int(digest.hexdigest()[:8], 16))
    save_model_file(data2vec_aqc_tiny(), out / "1epoch.pth")
    if not (out / "latest.pth").exists():
        (out / "latest.pth").symlink_to("1epoch.pth")
    (out / "config.yaml").write_text(f"config: {opt('--config')}\n")
    if "--probe_train_data" in args:  # the probe's score of the one epoch
        (out / "probe").mkdir(exist_ok=True)
        (out / "probe" / "scores.jsonl").write_text(json.dumps(
            {"epoch": 1, "task": "ctc", "metric": "character error rate", "layer_errors": [0.9, 0.8],
             "best_layer": 1, "best_error": 0.8, "chance": 1.0, "train_utterances": 4, "dev_utterances": 2,
             "seconds": 1.0, "num_updates": 0, "share_of_time": 0.1}) + "\n")
elif tool == "asr_train":
    if "--frontend_conf" in args:
        model_file = opt("--frontend_conf").split("=", 1)[1]
        frontend = f"frontend: aqc\nfrontend_conf: {{model_file: {model_file}}}\n"
    else:  # a config with ESPnet's log-mel frontend
        frontend = "frontend: default\n"
    (out / "config.yaml").write_text(f"config: {opt('--config')}\n{frontend}token_list: {opt('--token_list')}\n")
    (out / "valid.loss.best.pth").write_text(digest.hexdigest())
    (out / "valid.wer_ctc.best.pth").write_text("by wer " + digest.hexdigest())
else:
    keys = [line.split()[0] for line in open(opt("--key_file")) if line.strip()]
    skip = set(Path("skip_hyps").read_text().split()) if os.path.exists("skip_hyps") else set()
    (out / "1best_recog").mkdir(exist_ok=True)
    (out / "1best_recog" / "text").write_text("".join(f"{k} hello world\n" for k in keys if k not in skip))
'''
LIBRI = sorted((DATA / "librispeech_unlabeled" / "train-clean-100").rglob("*.flac"))
SETS = {"train": LIBRI[0:4], "dev": LIBRI[4:6], "test": LIBRI[6:9]}
TEXTS = {"train": "hello world", "dev": "hello world", "test": "hello there world"}


def _write_set(recipe: Path, name: str, wavs) -> None:
    """corpus/<set>/: what local/data.sh copies into data/<set>; utterance ids sorted."""
    d = recipe / "corpus" / name
    d.mkdir(parents=True, exist_ok=True)
    utts = {f"{name}-{i:02d}": w for i, w in enumerate(wavs)}
    (d / "wav.scp").write_text("".join(f"{u} {w}\n" for u, w in sorted(utts.items())))
    (d / "text").write_text("".join(f"{u} {TEXTS[name]}\n" for u in sorted(utts)))


def _full_recipe(tmp_path: Path, sets=None) -> Path:
    recipe = tmp_path / "recipe"
    (recipe / "local").mkdir(parents=True)
    (recipe / "conf").mkdir()
    for name, wavs in (sets or SETS).items():
        _write_set(recipe, name, wavs)
    (recipe / "local" / "data.sh").write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        set -euo pipefail
        echo run >> runs.txt
        for src in corpus/*/; do
          s=$(basename "${src}"); mkdir -p "data/${s}"
          cp "${src}/wav.scp" "${src}/text" "data/${s}/"
          awk '{print $1, "spk"}' "data/${s}/wav.scp" > "data/${s}/utt2spk"
          echo "spk $(cut -d' ' -f1 "data/${s}/wav.scp" | xargs)" > "data/${s}/spk2utt"
        done
        """))
    (recipe / "local" / "data.sh").chmod(0o755)
    (recipe / "conf" / "pretrain.yaml").write_text("# pre-training\nmax_epoch: 1\n")
    (recipe / "conf" / "finetune.yaml").write_text("max_epoch: 2\n")
    (recipe / "conf" / "decode.yaml").write_text("beam_size: 1\n")
    (recipe / "conf" / "decode_other.yaml").write_text("beam_size: 1\n")
    launcher = recipe / "fake_launcher.py"
    launcher.write_text(FAKE_LAUNCHER)
    launcher.chmod(0o755)
    return recipe


def _template(recipe: Path, *args: str):
    launcher = str(recipe / "fake_launcher.py")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "pretrain_launcher": launcher, "finetune_launcher": launcher, "decode_launcher": launcher}
    return subprocess.run(
        ["bash", str(TEMPLATE), "--pretrain_set", "train", "--finetune_set", "train", "--valid_set", "dev",
         "--test_sets", "test", "--pretrain_config", "conf/pretrain.yaml", "--finetune_config", "conf/finetune.yaml",
         "--decode_config", "conf/decode.yaml", "--token_type", "word", *args],
        cwd=recipe, capture_output=True, text=True, env=env, timeout=600)


def _ok(out):
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out


def _ran(out) -> list:
    """Stage numbers that ran to the end, in order."""
    return [int(m) for m in re.findall(r"Stage (\d): .*: done in \d+ s", out.stderr)]


def _skipped(out) -> list:
    return [int(m) for m in re.findall(r"Stage (\d): .*: already done", out.stderr)]


def _launched(recipe: Path) -> list:
    path = recipe / "launched.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _long_recording(tmp_path: Path, seconds: float = 35.0) -> Path:
    """A real recording longer than --max_duration (30 s): three LibriSpeech utterances back to back."""
    audio = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in (LIBRI[0], LIBRI[2], LIBRI[7])])
    path = tmp_path / "long.wav"
    sf.write(path, audio[: int(seconds * 16000)], 16000)
    return path


def _lines(path: Path) -> list:
    return path.read_text().splitlines()


def test_reruns_redo_exactly_the_stages_whose_inputs_changed(tmp_path):
    long_wav = _long_recording(tmp_path)
    recipe = _full_recipe(tmp_path, {"train": SETS["train"] + [long_wav], "dev": SETS["dev"],
                                     "test": SETS["test"] + [long_wav]})
    first = _ok(_template(recipe))
    assert _ran(first) == [1, 2, 3, 4, 5, 6]
    asr = recipe / "exp" / "asr_finetune_pretrain"
    # Training sets are filtered (the 35 s utterance is over --max_duration); the test set is kept whole
    # and scored whole.
    assert "train-04" not in (recipe / "dump" / "train" / "wav.scp").read_text()
    assert [line.split()[0] for line in _lines(recipe / "dump" / "test" / "wav.scp")] == \
        ["test-00", "test-01", "test-02", "test-03"]
    scores = json.loads((asr / "decode_decode" / "test" / "score" / "scores.json").read_text())
    assert scores["num_utts"] == len(_lines(recipe / "data" / "test" / "wav.scp")) == 4
    # words of the test set that the token list (from the fine-tuning text) lacks: warned and reported
    assert "WARNING: test: 4 of 12 words (33.33 %) are not in the token list" in first.stderr
    results = (recipe / "RESULTS.md").read_text()
    assert ("- asr_finetune_pretrain/decode_decode/test: 4 utterances (every utterance of `data/test/text`), "
            "all decoded; 4 of 12 words (33.33 %) are not in the token list") in results

    # the same options: nothing runs
    again = _ok(_template(recipe))
    assert _ran(again) == [] and _skipped(again) == [1, 2, 3, 4, 5, 6]
    # a comment-only (and formatting) edit of a config is not a change
    (recipe / "conf" / "pretrain.yaml").write_text("# pre-training, reformatted\nmax_epoch:    1  # one epoch\n")
    assert _ran(_ok(_template(recipe))) == []

    # another decoding config content: only stage 6 runs, and the old decoding is moved aside
    (recipe / "conf" / "decode.yaml").write_text("beam_size: 2\n")
    out = _ok(_template(recipe))
    assert _ran(out) == [6] and _skipped(out) == [1, 2, 3, 4, 5]
    assert "changed: decode_config" in out.stderr
    old = list((recipe / "exp" / "superseded").glob("asr_finetune_pretrain.decode_decode.*"))
    assert len(old) == 1 and (old[0] / "test" / "score" / "scores.json").is_file() and (old[0] / ".done.6").is_file()
    # a second decoding config decodes into its own directory; the first stays done
    out = _ok(_template(recipe, "--decode_config", "conf/decode_other.yaml"))
    assert _ran(out) == [6]
    assert (asr / "decode_decode_other" / ".done.6").is_file() and (asr / "decode_decode" / ".done.6").is_file()
    assert _ran(_ok(_template(recipe))) == []
    results = (recipe / "RESULTS.md").read_text()
    assert "decode_decode/test" in results and "decode_decode_other/test" in results and "superseded" not in results

    # a decoder that leaves an utterance out stops stage 6, naming it; no marker, no row in RESULTS.md
    (recipe / "skip_hyps").write_text("test-01\n")
    out = _template(recipe, "--stage", "6", "--force", "true")
    assert out.returncode != 0
    assert "1 of 4 reference utterances of data/test/text have no hypothesis: test-01" in out.stderr
    assert not (asr / "decode_decode" / ".done.6").exists()
    (recipe / "skip_hyps").unlink()
    assert _ran(_ok(_template(recipe))) == [6]

    # adding --musan_root: stage 2 (its option) and stage 4 (the noise list it reads) run again; the new
    # upstream model makes stages 5 and 6 follow. The old experiments are moved, not deleted.
    out = _ok(_template(recipe, "--musan_root", str(DATA / "musan")))
    assert _ran(out) == [2, 4, 5, 6] and _skipped(out) == [1, 3]
    assert "changed: musan_root" in out.stderr and "changed: noise_list" in out.stderr
    ssl_train = [c for c in _launched(recipe) if c["tool"] == "ssl_train"]
    assert ssl_train[-1]["found"] == [".started.4", "train.log"]  # a fresh directory (its log just begun), not ESPnet resuming
    assert any(a.startswith("noise_scp=") for a in ssl_train[-1]["args"])
    superseded = recipe / "exp" / "superseded"
    assert len(list(superseded.glob("ssl_pretrain.*/aqc_model.pt"))) == 1
    assert len(list(superseded.glob("asr_finetune_pretrain.2*/valid.loss.best.pth"))) == 1
    assert "superseded" not in (recipe / "RESULTS.md").read_text()
    # one row per stage in stage_times.tsv, however often a stage ran
    rows = [line.split("\t")[:2] for line in _lines(recipe / "exp" / "stage_times.tsv")]
    assert [int(n) for n, _ in rows] == [1, 2, 3, 4, 5, 6, 6]  # re-runs replaced their rows in place
    assert rows[-1][1] == "decoding and scoring (exp/asr_finetune_pretrain/decode_decode_other)"

    # a later stage will not start on the output of an earlier one whose inputs changed
    out = _template(recipe, "--musan_root", str(DATA / "musan"), "--stage", "4", "--max_duration", "20")
    assert out.returncode != 0
    assert "stage 3 (format, filter, token list) is out of date (changed: max_duration)" in out.stderr
    # dropping --musan_root again removes the list, so stage 4 cannot pick it up
    out = _ok(_template(recipe, "--stop_stage", "2"))
    assert _ran(out) == [2] and not (recipe / "data" / "augment" / "noise").exists()


def test_interrupted_training_resumes_only_with_the_same_inputs(tmp_path):
    recipe = _full_recipe(tmp_path)
    ssl = recipe / "exp" / "ssl_pretrain"
    ssl.mkdir(parents=True)
    (ssl / "checkpoint.pth").write_text("left by an older aqc")  # inputs unknown: not resumed
    (recipe / "interrupt_ssl_train").touch()
    out = _template(recipe, "--stop_stage", "4")
    assert out.returncode != 0
    assert "no record of the inputs it was made with" in out.stderr
    assert (ssl / ".started.4").is_file() and not (ssl / ".done.4").exists()

    out = _template(recipe, "--stop_stage", "4")  # the same inputs: ESPnet resumes in place
    assert out.returncode != 0 and "resuming the interrupted run in exp/ssl_pretrain" in out.stderr
    assert ".started.4" in _launched(recipe)[-1]["found"] and "checkpoint.pth" in _launched(recipe)[-1]["found"]
    # the experiment keeps the training's output through the resume (a line with the time and the command
    # before each), while the recipe's own streams still carry it apart, and the failure still stops it
    assert "fake ssl_train: to stderr" in out.stderr and "fake ssl_train: to stdout" in out.stdout
    assert "to stdout" not in out.stderr and "to stderr" not in out.stdout
    log = (ssl / "train.log").read_text()
    assert len(re.findall(r"^# \S+ \S*fake_launcher.py python -m aqc.bin.ssl_train ", log, re.M)) == 2
    assert log.count("fake ssl_train: to stdout") == 2 and log.count("fake ssl_train: to stderr") == 2

    out = _template(recipe, "--stop_stage", "4", "--pretrain_args", "--max_epoch 2")
    assert out.returncode != 0
    assert "an interrupted run with other inputs (changed: pretrain_args)" in out.stderr
    assert _launched(recipe)[-1]["found"] == [".started.4", "train.log"]  # a fresh directory, its log begun
    moved = sorted((recipe / "exp" / "superseded").glob("ssl_pretrain.*"))
    assert len(moved) == 2 and all((m / "checkpoint.pth").is_file() for m in moved)
    # the older aqc's directory had no log; the interrupted run took its log (two attempts) along
    assert [(m / "train.log").read_text().count("fake ssl_train: to stdout") for m in moved
            if (m / "train.log").is_file()] == [2]

    (recipe / "interrupt_ssl_train").unlink()
    out = _ok(_template(recipe, "--stop_stage", "4", "--pretrain_args", "--max_epoch 2"))
    assert "resuming the interrupted run" in out.stderr and _ran(out) == [4]
    assert (ssl / ".done.4").is_file() and not (ssl / ".started.4").exists() and (ssl / "aqc_model.pt").is_file()
    assert "pretrain_args\t--max_epoch 2" in (ssl / ".done.4").read_text()
    assert len(re.findall(r"^# .* --max_epoch 2 ?$", (ssl / "train.log").read_text(), re.M)) == 2


def test_test_set_with_unusable_audio_stops_stage_3_until_fixed(tmp_path):
    long_wav = _long_recording(tmp_path)
    recipe = _full_recipe(tmp_path, {"train": SETS["train"], "dev": SETS["dev"],
                                     "test": SETS["test"] + [long_wav, tmp_path / "lost.wav"]})
    out = _template(recipe, "--stop_stage", "3")
    assert out.returncode != 0
    assert "data/test: 1 of 5 utterances cannot be used" in out.stderr
    assert f"test-04 {tmp_path / 'lost.wav'}: does not exist" in out.stderr
    assert "Fix: repair the audio; or, if an utterance is not meant to be scored, delete its line from " \
           "data/test/wav.scp and run utils/fix_data_dir.py data/test" in out.stderr
    assert not (recipe / "dump" / ".done.3").exists()

    # the fix the message names
    wav_scp = recipe / "data" / "test" / "wav.scp"
    wav_scp.write_text("".join(line + "\n" for line in _lines(wav_scp) if not line.startswith("test-04")))
    subprocess.run([sys.executable, str(REPO / "utils" / "fix_data_dir.py"), "data/test"], cwd=recipe, check=True,
                   capture_output=True)
    out = _ok(_template(recipe, "--stop_stage", "3"))
    assert _ran(out) == [3] and _skipped(out) == [1, 2]
    assert [line.split()[0] for line in _lines(recipe / "dump" / "test" / "wav.scp")] == \
        ["test-00", "test-01", "test-02", "test-03"]  # the 35 s utterance is kept
    assert (recipe / "dump" / "test" / "text").read_text() == (recipe / "data" / "test" / "text").read_text()


def test_validator_fix_is_revalidated_not_rebuilt(tmp_path):
    recipe = _full_recipe(tmp_path)
    dev_text = recipe / "corpus" / "dev" / "text"
    dev_text.write_text(_lines(dev_text)[0] + "\n")  # dev-01 has audio but no transcript
    out = _template(recipe, "--stop_stage", "1")
    assert out.returncode != 0
    assert "ERROR [key-mismatch] data/dev/text: dev-01: utterance in wav.scp but not in text" in out.stdout
    assert "utils/fix_data_dir.py" in out.stderr
    assert (recipe / "data" / ".done.1").is_file()  # the preparation itself finished

    subprocess.run([sys.executable, str(REPO / "utils" / "fix_data_dir.py"), "data/dev"], cwd=recipe, check=True,
                   capture_output=True)
    out = _ok(_template(recipe, "--stop_stage", "1"))
    assert _skipped(out) == [1] and "data/dev: OK" in out.stdout
    assert _lines(recipe / "runs.txt") == ["run"]  # local/data.sh did not rebuild the broken directory

    # what the preparation depends on: its options and its scripts
    with open(recipe / "local" / "data.sh", "a") as f:
        f.write("# a changed script\n")
    out = _template(recipe, "--stop_stage", "1")
    assert "changed: local/data.sh" in out.stderr and _ran(out) == [1] and len(_lines(recipe / "runs.txt")) == 2
    assert out.returncode != 0  # it rebuilt dev without dev-01's transcript again
    out = _template(recipe, "--stop_stage", "1", "--local_data_opts", "")
    assert _ran(out) == [] and len(_lines(recipe / "runs.txt")) == 2
    # --force runs a stage whose inputs are unchanged (after audio changed in place: audio is not hashed)
    out = _template(recipe, "--stop_stage", "1", "--force", "true")
    assert _ran(out) == [1] and len(_lines(recipe / "runs.txt")) == 3


def test_stage_3_checks_the_data_dirs_before_formatting(tmp_path):
    recipe = _full_recipe(tmp_path)
    _ok(_template(recipe, "--stop_stage", "1"))
    text = recipe / "data" / "test" / "text"
    text.write_text("".join(line + "\n" for line in _lines(text)[:-1]))  # test-02 lost its transcript
    out = _template(recipe, "--stage", "3", "--stop_stage", "3")
    assert out.returncode != 0
    assert "ERROR [key-mismatch] data/test/text: test-02" in out.stdout
    assert "format_wav_scp" not in out.stderr and not (recipe / "dump").exists()
    # transcripts are required where they are used: here the test set has none at all
    text.unlink()
    out = _template(recipe, "--stage", "3", "--stop_stage", "3")
    assert out.returncode != 0 and "ERROR [missing-file] data/test/text: text is required here" in out.stdout


def test_later_stage_needs_the_earlier_ones(tmp_path):
    recipe = _full_recipe(tmp_path)
    _ok(_template(recipe, "--stop_stage", "3"))
    out = _template(recipe, "--stage", "5")
    assert out.returncode != 0
    assert "stage 4 (SSL pre-training (exp/ssl_pretrain)) has not finished (no exp/ssl_pretrain/.done.4): " \
           "run it first (--stage 4)" in out.stderr
    assert _launched(recipe) == []


@pytest.mark.parametrize("args, message", [
    (["--stage", "8"], "--stage 8: expected a stage number from 1 to 7"),
    (["--stage", "abc"], "--stage abc: expected a stage number from 1 to 7"),
    (["--stage", "0"], "--stage 0: expected a stage number from 1 to 7"),
    (["--stop_stage", "10000"], "--stop_stage 10000: expected a stage number from 1 to 7"),
    (["--stage", "4", "--stop_stage", "3"], "--stop_stage 3 is below --stage 4"),
    (["--force", "yes"], "--force yes: expected true or false"),
    (["--ngpu", "two"], "--ngpu two: expected a number of GPUs"),
    (["--results_rank_by", "ser"], "--results_rank_by ser: expected wer or cer"),
])
def test_bad_stage_options_fail_before_anything_runs(tmp_path, args, message):
    recipe = _full_recipe(tmp_path)
    out = _template(recipe, *args)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not (recipe / "runs.txt").exists() and not (recipe / "data").exists()


@pytest.mark.parametrize("args", [["--stage", "abc"], ["--stop_stage", "x"], ["--compare", "yes"]])
def test_fsdd_run_sh_rejects_bad_values_before_anything_runs(tmp_path, args):
    out = subprocess.run(["bash", "run.sh", *args], cwd=REPO / "egs" / "fsdd", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "expected" in out.stderr and "Stage 1" not in out.stderr


def test_ngpu_beyond_the_visible_gpus_fails_before_the_data_stages(tmp_path):
    import torch

    recipe = _full_recipe(tmp_path)
    wanted = torch.cuda.device_count() + 1
    out = _template(recipe, "--ngpu", str(wanted))
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"--ngpu {wanted}, but PyTorch sees {wanted - 1} GPU(s)" in errors[0], errors
    assert f"Fix: --ngpu {wanted - 1}" in errors[0]
    assert not (recipe / "runs.txt").exists() and not (recipe / "data").exists()


# ------------------------------------------------------------------------------------------------------
# How stages 4-6 start their commands (issue 15): --dry_run prints them, on any machine
# ------------------------------------------------------------------------------------------------------
def _dry(recipe: Path, *args: str, launcher: str = "", check: bool = True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "pretrain_launcher": launcher, "finetune_launcher": launcher, "decode_launcher": launcher}
    out = subprocess.run(
        ["bash", str(TEMPLATE), "--pretrain_set", "train", "--finetune_set", "train", "--valid_set", "dev",
         "--test_sets", "test", "--pretrain_config", "conf/pretrain.yaml", "--finetune_config", "conf/finetune.yaml",
         "--decode_config", "conf/decode.yaml", "--dry_run", "true", *args],
        cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 or not check, out.stderr[-4000:]
    commands = {}
    for line in out.stderr.splitlines():
        if "would run: " in line:
            command = line.split("would run: ", 1)[1].split()
            tool = next(a for a in command if a.startswith("aqc.bin."))
            commands.setdefault(tool, command)
    return out, commands


def _value(command, option):
    return command[command.index(option) + 1] if option in command else None


def test_commands_for_one_gpu_several_gpus_and_a_launcher(tmp_path):
    recipe = _full_recipe(tmp_path)
    _, one = _dry(recipe, "--ngpu", "1")
    _, four = _dry(recipe, "--ngpu", "4", "--num_workers", "3")
    _, launched = _dry(recipe, "--ngpu", "1", launcher="torchrun --standalone --nproc_per_node 4")
    for tool in ("aqc.bin.ssl_train", "aqc.bin.asr_train"):
        # one GPU: one process; the data-loader workers are the config's (no --num_workers on the command line)
        assert _value(one[tool], "--ngpu") == "1" and "--multiprocessing_distributed" not in one[tool]
        assert "--num_workers" not in one[tool]
        # --ngpu 4: ESPnet starts one process per GPU (DDP), never one DataParallel process
        assert _value(four[tool], "--ngpu") == "4" and _value(four[tool], "--multiprocessing_distributed") == "true"
        assert _value(four[tool], "--num_workers") == "3"
        # a launcher starts the ranks itself: ESPnet's own spawning is off, each rank takes one GPU
        assert launched[tool][:4] == ["torchrun", "--standalone", "--nproc_per_node", "4"]
        assert _value(launched[tool], "--multiprocessing_distributed") == "false"
        assert _value(launched[tool], "--ngpu") == "1"
    # decoding runs on one GPU whatever the training used
    assert _value(four["aqc.bin.asr_inference"], "--ngpu") == "1"
    assert _value(four["aqc.bin.asr_inference"], "--asr_model_file") == "exp/asr_finetune_pretrain/valid.wer_ctc.best.pth"
    # a dry run writes nothing and needs no GPU
    assert sorted(p.name for p in recipe.iterdir()) == ["conf", "corpus", "fake_launcher.py", "local"]


def test_dry_run_shows_the_global_batch_each_number_of_gpus_gives(tmp_path):
    recipe = _full_recipe(tmp_path)
    (recipe / "conf" / "pretrain.yaml").unlink()
    (recipe / "conf" / "pretrain.yaml").symlink_to(REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_base.yaml")
    for ngpu, accum in (("8", 2), ("16", 1)):
        out, _ = _dry(recipe, "--ngpu", ngpu, "--stage", "4", "--stop_stage", "4")
        assert (f"global batch: 60,800,000 samples per update (63.3 min of audio at 16 kHz) = 3,800,000 per rank x "
                f"{ngpu} rank(s) x accum_grad {accum}; 2,500 updates per epoch x 160 epochs = 400,000 updates") \
            in out.stderr
    failed, commands = _dry(recipe, "--ngpu", "3", "--stage", "4", "--stop_stage", "4", check=False)
    assert failed.returncode != 0 and not commands and "Fix: run on 1, 2, 4, 8, 16 rank(s)" in failed.stderr


def test_record_of_a_large_file_by_size_and_time(tmp_path):
    lm = tmp_path / "4-gram.arpa"
    lm.write_text("\\data\\\n")
    before = _record(f"stat:lm_file={lm}")
    info = lm.stat()
    assert before == f"lm_file\t{lm} size={info.st_size} mtime_ns={info.st_mtime_ns}\n"
    os.utime(lm, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))  # touched: a new file as far as we know
    assert _diff(before, _record(f"stat:lm_file={lm}"), tmp_path) == "changed: lm_file"
    assert _record(f"stat:lm_file={tmp_path / 'none'}") == "lm_file\tabsent\n"


def test_continued_pretraining_starts_stage_4_from_the_released_model(tmp_path):
    from aqc.models import data2vec_aqc_tiny
    from aqc.models.io import save_model_file

    recipe = _full_recipe(tmp_path)
    released = tmp_path / "released" / "model.pt"
    released.parent.mkdir()
    save_model_file(data2vec_aqc_tiny(), released)
    _ok(_template(recipe, "--stop_stage", "4", "--init_upstream", "../released/model.pt"))
    ssl_train = [c for c in _launched(recipe) if c["tool"] == "ssl_train"]
    assert ssl_train[-1]["args"][ssl_train[-1]["args"].index("--init_upstream") + 1] == str(released)
    # another released model is another input: stage 4 runs again
    save_model_file(data2vec_aqc_tiny(), released)
    out = _ok(_template(recipe, "--stop_stage", "4", "--init_upstream", "../released/model.pt"))
    assert _ran(out) == [4] and "changed: init_upstream" in out.stderr
    out = _template(recipe, "--stop_stage", "4", "--init_upstream", "../released/none.pt", "--force", "true")
    assert out.returncode != 0 and "--init_upstream ../released/none.pt: no such file or folder" in out.stderr


def test_stage_7_packs_the_models_and_a_model_card(tmp_path):
    import yaml
    from transformers import Data2VecAudioModel

    from aqc.packing import read_meta, unpack

    recipe = _full_recipe(tmp_path)
    out = _ok(_template(recipe, "--hf_dataset", "my_corpus"))
    assert _ran(out) == [1, 2, 3, 4, 5, 6] and not (recipe / "exp" / "packed").exists()  # 7 only when asked
    out = _ok(_template(recipe, "--stop_stage", "7", "--hf_dataset", "my_corpus"))
    assert _ran(out) == [7]
    packed = recipe / "exp" / "packed" / "finetune_pretrain"
    asr = read_meta(packed / "asr_finetune_pretrain.zip")
    # the stand-in trainer's config names the token list as a file (ESPnet's lists the tokens): packed too
    assert asr["kind"] == "asr" and set(asr["files"]) == {"model_file", "token_list", "config", "results"}
    files = unpack(packed / "asr_finetune_pretrain.zip")
    assert files["model_file"].read_text().startswith("by wer ")  # the checkpoint --select_by wer picks
    assert files["token_list"].read_text() == (recipe / "data" / "token_list" / "word" / "tokens.txt").read_text()
    ssl = unpack(packed / "ssl_pretrain.zip")
    from aqc.api import load_model

    assert load_model(packed / "ssl_pretrain.zip").config == load_model(ssl["model_file"]).config
    # the Hugging Face folder loads offline; its card carries the hub's metadata block and the recipe's WERs
    folder = packed / "hf_ssl_pretrain"
    Data2VecAudioModel.from_pretrained(folder)
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en"] and meta["datasets"] == ["my_corpus"]
    wers = [r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]]
    assert [r["dataset"]["name"] for r in meta["model-index"][0]["results"]] == \
        ["asr_finetune_pretrain/decode_decode/test"] and len(wers) == 1
    assert "data2vec-aqc (cross-contrastive loss" in card and "Data2VecAudioModel.from_pretrained" in card
    assert "huggingface-cli upload <user>/ssl_pretrain exp/packed/finetune_pretrain/hf_ssl_pretrain" in out.stdout
    again = _ok(_template(recipe, "--stop_stage", "7", "--hf_dataset", "my_corpus"))
    assert _skipped(again) == [1, 2, 3, 4, 5, 6, 7]


# ----------------------------------------------------------------------------------------------- issue 16


def test_fine_tuning_seeds_and_a_log_mel_baseline_without_upstream(tmp_path):
    recipe = _full_recipe(tmp_path)
    first = _ok(_template(recipe, "--finetune_seeds", "3"))
    assert _ran(first) == [1, 2, 3, 4, 5, 6, 5, 6, 5, 6]
    asr_train = [c for c in _launched(recipe) if c["tool"] == "asr_train"]
    assert [Path(c["output_dir"]).name for c in asr_train] == \
        ["asr_finetune_pretrain", "asr_finetune_pretrain_seed1", "asr_finetune_pretrain_seed2"]
    assert "--seed" not in asr_train[0]["args"]  # the first run keeps its config's seed (ESPnet's 0)
    assert [c["args"][c["args"].index("--seed") + 1] for c in asr_train[1:]] == ["1", "2"]
    # each run from the same upstream
    assert len({c["args"][c["args"].index("--frontend_conf") + 1] for c in asr_train}) == 1
    results = (recipe / "RESULTS.md").read_text()
    assert "### Mean over seeds" in results
    assert re.search(r"\| asr_finetune_pretrain \| data2vec-aqc \| decode_decode/test \| 3 \| ", results)
    # nothing runs again; one seed fewer leaves the third run where it is, untouched
    assert _ran(_ok(_template(recipe, "--finetune_seeds", "3"))) == []
    assert _ran(_ok(_template(recipe, "--finetune_seeds", "2"))) == []
    # a config's own seed shifts every run's seed
    (recipe / "conf" / "finetune.yaml").write_text("max_epoch: 2\nseed: 7\n")
    _ok(_template(recipe, "--finetune_seeds", "2", "--stage", "5"))
    assert [Path(c["output_dir"]).name for c in _launched(recipe)[-4:] if c["tool"] == "asr_train"] == \
        ["asr_finetune_pretrain", "asr_finetune_pretrain_seed8"]

    # a fine-tuning config with ESPnet's log-mel frontend: no pre-training, no upstream, its own experiment
    (recipe / "conf" / "finetune_logmel.yaml").write_text("frontend: default\nnormalize: utterance_mvn\n")
    before = len(_launched(recipe))
    out = _ok(_template(recipe, "--finetune_config", "conf/finetune_logmel.yaml", "--stage", "4"))
    assert _ran(out) == [5, 6] and "uses frontend default, no upstream: no pre-training" in out.stderr
    launched = _launched(recipe)[before:]
    assert [c["tool"] for c in launched] == ["asr_train", "asr_inference"]
    assert "--frontend_conf" not in launched[0]["args"]
    assert Path(launched[0]["output_dir"]).name == "asr_finetune_logmel"
    results = (recipe / "RESULTS.md").read_text()
    assert "| asr_finetune_logmel | none (log-mel filterbank features, ESPnet's default frontend) |" in results
    # a new pre-training (another pre-training config) does not touch it
    (recipe / "conf" / "pretrain.yaml").write_text("max_epoch: 3\n")
    out = _ok(_template(recipe, "--finetune_config", "conf/finetune_logmel.yaml", "--stage", "4"))
    assert _ran(out) == [] and _skipped(out) == [5, 6]

    out = _template(recipe, "--finetune_seeds", "0")
    assert out.returncode != 0 and "--finetune_seeds 0: expected a number of fine-tuning runs" in out.stderr
    # the fine-tuning config is read at start-up (frontend, seed): a broken one stops the run there, named
    (recipe / "conf" / "finetune_logmel.yaml").write_text("frontend: [default\n")
    out = _template(recipe, "--finetune_config", "conf/finetune_logmel.yaml", "--stage", "5")
    assert out.returncode != 0 and "ERROR: conf/finetune_logmel.yaml is not valid YAML" in out.stderr
    assert "Stage 5" not in out.stderr


def test_an_absolute_expdir_gives_fine_tuning_the_upstream_it_made(tmp_path):
    """--expdir /abs/path: the upstream's path was once the recipe folder + the absolute path (not found)."""
    recipe = _full_recipe(tmp_path)
    expdir = tmp_path / "elsewhere" / "exp"
    _ok(_template(recipe, "--expdir", str(expdir)))
    _ok(_template(recipe, "--expdir", str(expdir), "--init_from_pretrain", "false", "--stage", "5"))
    model_files = [c["args"][c["args"].index("--frontend_conf") + 1].split("=", 1)[1]
                   for c in _launched(recipe) if c["tool"] == "asr_train"]
    assert model_files == [str(expdir / "ssl_pretrain" / "aqc_model.probe.pt"),
                           str(expdir / "asr_finetune_scratch" / "random_init_model.pt")]
    assert all(Path(m).is_file() for m in model_files)
    assert not (recipe / "exp").exists() and (recipe / "RESULTS.md").is_file()


def test_pre_training_seeds_each_fine_tuned_with_every_fine_tuning_seed_and_pooled_in_results(tmp_path):
    recipe = _full_recipe(tmp_path)
    first = _ok(_template(recipe, "--pretrain_seeds", "2", "--finetune_seeds", "2"))
    assert _ran(first) == [1, 2, 3, 4, 5, 6, 5, 6, 4, 5, 6, 5, 6]
    launched = _launched(recipe)
    ssl = [c for c in launched if c["tool"] == "ssl_train"]
    assert [Path(c["output_dir"]).name for c in ssl] == ["ssl_pretrain", "ssl_pretrain_pseed1"]
    assert "--seed" not in ssl[0]["args"]  # the first keeps its config's seed
    assert ssl[1]["args"][ssl[1]["args"].index("--seed") + 1] == "1"
    asr = [c for c in launched if c["tool"] == "asr_train"]
    assert [Path(c["output_dir"]).name for c in asr] == [
        "asr_finetune_pretrain", "asr_finetune_pretrain_seed1",
        "asr_finetune_pretrain_pseed1", "asr_finetune_pretrain_pseed1_seed1"]
    upstream = [c["args"][c["args"].index("--frontend_conf") + 1] for c in asr]
    assert upstream[0] == upstream[1] and upstream[2] == upstream[3] and upstream[0] != upstream[2]
    assert "ssl_pretrain_pseed1/aqc_model.probe.pt" in upstream[2]
    results = (recipe / "RESULTS.md").read_text()
    assert "### Mean over pre-training and fine-tuning seeds" in results
    assert re.search(r"\| asr_finetune_pretrain \| data2vec-aqc \| decode_decode/test \| 4 \| ", results)
    # nothing runs again; stage 7 packs the first pre-training's first fine-tuning
    assert _ran(_ok(_template(recipe, "--pretrain_seeds", "2", "--finetune_seeds", "2"))) == []
    packed = _ok(_template(recipe, "--pretrain_seeds", "2", "--finetune_seeds", "2", "--stage", "7", "--stop_stage", "7"))
    assert _ran(packed) == [7]
    assert sorted(p.name for p in (recipe / "exp" / "packed" / "finetune_pretrain").glob("*.zip")) == \
        ["asr_finetune_pretrain.zip", "ssl_pretrain.zip"]
    # the pre-training config's seed shifts every pre-training's seed: a new one runs, the old stays
    (recipe / "conf" / "pretrain.yaml").write_text("# pre-training\nmax_epoch: 1\nseed: 5\n")
    _ok(_template(recipe, "--pretrain_seeds", "2", "--stage", "4"))
    assert [Path(c["output_dir"]).name for c in _launched(recipe) if c["tool"] == "ssl_train"][-2:] == \
        ["ssl_pretrain", "ssl_pretrain_pseed6"]
    # a system without pre-training ignores it and says so; --seed in --pretrain_args would be overridden
    (recipe / "conf" / "finetune_logmel.yaml").write_text("frontend: default\n")
    out = _ok(_template(recipe, "--pretrain_seeds", "2", "--finetune_config", "conf/finetune_logmel.yaml"))
    assert "has no pre-training; its spread is its --finetune_seeds 1 fine-tuning runs" in out.stderr
    assert [Path(c["output_dir"]).name for c in _launched(recipe) if c["tool"] == "asr_train"][-1] == \
        "asr_finetune_logmel"
    out = _template(recipe, "--pretrain_seeds", "2", "--pretrain_args", "--seed 3 --max_epoch 2")
    assert out.returncode != 0 and "remove --seed from --pretrain_args" in out.stderr
    out = _template(recipe, "--pretrain_seeds", "two")
    assert out.returncode != 0 and "--pretrain_seeds two: expected a number of pre-training runs" in out.stderr


def test_extra_unlabelled_audio_is_pooled_for_pre_training_only(tmp_path):
    recipe = _full_recipe(tmp_path)
    extra = tmp_path / "more" / "spk9" / "ch1"
    extra.mkdir(parents=True)
    for p in LIBRI[10:13]:
        (extra / p.name).symlink_to(p)
    out = _template(recipe, "--extra_unlabelled_dir", str(tmp_path / "missing"))
    assert out.returncode != 0 and f"--extra_unlabelled_dir {tmp_path / 'missing'}: no such folder" in out.stderr
    assert not (recipe / "data").exists()

    first = _ok(_template(recipe, "--extra_unlabelled_dir", str(tmp_path / "more")))
    assert _ran(first) == [1, 2, 3, 4, 5, 6]
    pooled = _lines(recipe / "dump" / "train_pooled" / "wav.scp")
    assert len(pooled) == len(SETS["train"]) + 3
    assert sum(line.startswith("extra0-spk9-ch1-") for line in pooled) == 3
    calls = {c["tool"]: c["args"] for c in _launched(recipe)}
    assert "dump/train_pooled/wav.scp,speech,sound" in calls["ssl_train"]
    assert "dump/train/wav.scp,speech,sound" in calls["asr_train"]  # fine-tuning: the labelled set only
    assert len(_lines(recipe / "dump" / "train" / "wav.scp")) == len(SETS["train"])
    assert _ran(_ok(_template(recipe, "--extra_unlabelled_dir", str(tmp_path / "more")))) == []
    # without it, the plain set is pre-trained on again: stage 1 and everything after it runs
    out = _ok(_template(recipe))
    assert _ran(out) == [1, 3, 4, 5, 6]
    # stages 1 and 3 run as for the first time: the pooled run's records are its own (.done.1.train_pooled)
    assert not re.search(r"Stage [123]: [^\n]*inputs differ", out.stderr)
    assert (recipe / "data" / ".done.1").is_file() and (recipe / "data" / ".done.1.train_pooled").is_file()
    assert (recipe / "dump" / ".done.3").is_file() and (recipe / "dump" / ".done.3.train_pooled").is_file()
    # switching back and forth re-runs only what differs: the pre-training (one --expdir here) and after it
    out = _ok(_template(recipe, "--extra_unlabelled_dir", str(tmp_path / "more")))
    assert _ran(out) == [4, 5, 6] and "Stage 1: data preparation: already done (data/.done.1.train_pooled)" \
        in out.stderr
    assert _ran(_ok(_template(recipe, "--stage", "3"))) == [4, 5, 6]
    # a pooled run's record still holds its inputs: other extra audio re-runs its stage 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / LIBRI[14].name).symlink_to(LIBRI[14])
    out = _ok(_template(recipe, "--extra_unlabelled_dir", str(tmp_path / "other")))
    assert _ran(out)[:2] == [1, 3] and "changed: extra_unlabelled_dir" in out.stderr
