"""WER/CER scoring, the score CLI and the RESULTS.md writer, against hand-computed numbers."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import editdistance
import pytest

from aqc.bin import make_results as make_results_cli
from aqc.bin import score as score_cli
from aqc.results import append_stage_time, make_results, read_stage_times
from aqc.scoring import (
    ErrorCounts,
    Normalization,
    align,
    chars,
    edit_distance,
    read_text_file,
    remove_punctuation,
    score,
    scores_dict,
    summary_line,
)


def counts(ref: str, hyp: str):
    c = align(ref.split(), hyp.split()).counts
    return c.sub, c.dele, c.ins, c.cor, c.ref_len


def write_text(path: Path, lines: dict) -> Path:
    path.write_text("".join(f"{k} {v}\n" if v else f"{k}\n" for k, v in lines.items()), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------- align


def test_align_mix_of_errors():
    # 'the' deleted, one word substituted, one inserted: 3 errors over 6 reference words, 4 correct
    a = align("the cat sat on the mat".split(), "cat sat in the the mat".split())
    assert (a.counts.sub, a.counts.dele, a.counts.ins, a.counts.cor) == (1, 1, 1, 4)
    assert a.counts.rate == pytest.approx(50.0)
    assert a.pairs[0] == ("the", None) and a.pairs[-2:] == [("the", "the"), ("mat", "mat")]


def test_align_single_kinds():
    assert counts("a b c d", "a x c d") == (1, 0, 0, 3, 4)
    assert counts("a b c", "a c") == (0, 1, 0, 2, 3)
    assert counts("a b", "a b c") == (0, 0, 1, 2, 2)
    assert counts("a b c", "a b c") == (0, 0, 0, 3, 3)


def test_empty_hypothesis_is_all_deletions():
    a = align("a b c".split(), [])
    assert (a.counts.dele, a.counts.errors, a.counts.rate) == (3, 3, 100.0)
    assert a.pairs == [("a", None), ("b", None), ("c", None)]


def test_empty_reference_convention():
    assert align([], []).counts.rate == 0.0
    c = align([], ["x", "y"]).counts
    assert (c.ins, c.ref_len) == (2, 0) and math.isinf(c.rate)
    assert c.to_dict()["rate"] is None  # JSON has no infinity
    assert summary_line("WER", c) == "%WER inf [ 2 / 0, 2 ins, 0 del, 0 sub ]"


@pytest.mark.parametrize("seed", range(3))
def test_alignment_agrees_with_editdistance(seed):
    rng = random.Random(seed)
    for _ in range(100):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        a = align(ref, hyp)
        assert a.counts.errors == editdistance.eval(ref, hyp) == edit_distance(ref, hyp)
        assert [r for r, _ in a.pairs if r is not None] == ref
        assert [h for _, h in a.pairs if h is not None] == hyp
        assert a.counts.cor + a.counts.sub + a.counts.dele == len(ref)


# ----------------------------------------------------------------------------------------------- text


def test_cer_excludes_spaces():
    # a word-boundary error costs WER (1 sub + 1 del) but no CER
    r = score({"u": "ab cd"}, {"u": "abcd"})
    assert (r.word.errors, r.word.ref_len) == (2, 2)
    assert (r.char.errors, r.char.ref_len) == (0, 4)
    assert chars(" ab  c ") == ["a", "b", "c"]


def test_german_umlauts():
    r = score({"u": "grüße aus köln"}, {"u": "grüsse aus koln"})
    assert r.word.rate == pytest.approx(200 / 3)
    # 12 reference characters; ß->s (sub) + extra s (ins) + ö->o (sub)
    assert (r.char.sub, r.char.ins, r.char.dele, r.char.ref_len) == (2, 1, 0, 12)
    assert r.char.rate == pytest.approx(25.0)


def test_nfc_merges_decomposed_umlaut():
    decomposed = unicodedata.normalize("NFD", "köln")
    assert score({"u": "köln"}, {"u": decomposed}).word.errors == 0
    assert score({"u": "köln"}, {"u": decomposed}, Normalization(nfc=False)).word.errors == 1


def test_hindi_devanagari():
    # code points: नमस्ते = न म स ् त े (6), दुनिया = द ु न ि य ा (6); the hypothesis drops the final ा
    r = score({"u": "नमस्ते दुनिया"}, {"u": "नमस्ते दुनिय"})
    assert (r.word.sub, r.word.ref_len) == (1, 2)
    assert (r.char.dele, r.char.errors, r.char.ref_len) == (1, 1, 12)
    assert r.char.rate == pytest.approx(100 / 12)


def test_normalization_off_by_default_and_options():
    refs, hyps = {"u": "Hello, world. Don't!"}, {"u": "hello world don't"}
    assert score(refs, hyps).word.errors == 3  # Hello, / world. / Don't!
    both = Normalization(upper=True, remove_punct=True)
    assert score(refs, hyps, both).word.errors == 0
    assert remove_punctuation("don't 'quoted'").split() == ["don't", "quoted"]
    assert remove_punctuation("नमस्ते। दुनिया").split() == ["नमस्ते", "दुनिया"]  # danda is punctuation


# ----------------------------------------------------------------------------------------------- sets


def test_missing_hypothesis_scored_as_deletions():
    r = score({"u1": "a b", "u2": "c d e"}, {"u1": "a b"})
    assert r.missing == ["u2"]
    assert (r.word.dele, r.word.ref_len, r.word.rate) == (3, 5, 60.0)
    d = scores_dict(r)
    assert d["num_missing"] == 1 and d["missing_utts"] == ["u2"] and d["per_utt"]["u2"]["missing"]


def test_extra_hypothesis_ids_are_an_error():
    with pytest.raises(ValueError, match="not in the reference: u9, x1"):
        score({"u1": "a"}, {"u1": "a", "x1": "b", "u9": "c"})


def test_set_with_empty_reference_utterance():
    r = score({"e": "", "u": "a b c d"}, {"e": "x", "u": "a b c d"})
    assert (r.word.ins, r.word.ref_len, r.word.rate) == (1, 4, 25.0)


def test_read_text_file(tmp_path):
    p = tmp_path / "text"
    p.write_text("u1 hello  world\nu2\n\nu3 grüße\n", encoding="utf-8")
    assert read_text_file(p) == {"u1": "hello  world", "u2": "", "u3": "grüße"}
    p.write_text("u1 a\nu1 b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"text:2: duplicate utterance id 'u1'"):
        read_text_file(p)


def test_error_counts_add():
    assert ErrorCounts(1, 2, 3, 4, 7) + ErrorCounts(1, 0, 0, 1, 2) == ErrorCounts(2, 2, 3, 5, 9)


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture()
def scored(tmp_path):
    ref = write_text(tmp_path / "ref", {"u1": "the cat sat on the mat", "u2": "grüße aus köln", "u3": "नमस्ते दुनिया"})
    hyp = write_text(tmp_path / "hyp", {"u1": "cat sat in the the mat", "u2": "grüsse aus koln"})
    out = tmp_path / "score"
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(out)]) == 0
    return out


def test_cli_writes_summaries(scored):
    # words: u1 1 sub 1 del 1 ins; u2 2 sub; u3 (missing) 2 del -> 7 / 11
    wer = (scored / "wer.txt").read_text(encoding="utf-8").splitlines()
    assert wer[0] == "%WER 63.64 [ 7 / 11, 1 ins, 3 del, 3 sub ]"
    assert wer[1] == "%SER 100.00 [ 3 / 3 ]"
    assert wer[2] == "Scored 3 sentences, 1 not present in hyp."
    # chars: u1 17 chars, 'the' deleted, 'on'->'in' 1 sub, 'the' inserted = 7; u2 3 of 12; u3 12 deletions
    cer = (scored / "cer.txt").read_text(encoding="utf-8").splitlines()
    assert cer[0] == "%CER 53.66 [ 22 / 41, 4 ins, 15 del, 3 sub ]"


def test_cli_alignments_and_json(scored):
    ali = (scored / "alignments.txt").read_text(encoding="utf-8")
    assert "id: u3  (no hypothesis: scored as all deletions)" in ali
    # equal-cost alignments: the backtrace (from the end) prefers substitution, then deletion
    assert "REF:  the cat sat *** on  the mat" in ali
    assert "HYP:  *** cat sat in  the the mat" in ali
    assert "EVAL: D           I   S" in ali
    assert "Scores: (#C #S #D #I) 4 1 1 1  WER 50.00 [ 3 / 6 ]" in ali
    assert (scored / "alignments_char.txt").is_file()
    s = json.loads((scored / "scores.json").read_text(encoding="utf-8"))
    assert s["wer"]["rate"] == pytest.approx(63.6364) and s["wer"]["errors"] == 7
    assert s["cer"]["ref_len"] == 41 and s["num_utts"] == 3 and s["missing_utts"] == ["u3"]
    assert s["per_utt"]["u2"]["wer"]["sub"] == 2


def test_cli_module_rejects_unknown_hyp_ids(tmp_path):
    ref = write_text(tmp_path / "ref", {"u1": "a"})
    hyp = write_text(tmp_path / "hyp", {"u1": "a", "bogus": "b"})
    proc = subprocess.run(
        [sys.executable, "-m", "aqc.bin.score", "--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(tmp_path / "o"),
         "--use_sclite", "true"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1 and "bogus" in proc.stderr


# ----------------------------------------------------------------------------------------------- RESULTS.md


def test_results_md(tmp_path, scored):
    exp = tmp_path / "exp"
    (exp / "ssl" / "images").mkdir(parents=True)
    (exp / "ssl" / "images" / "loss.png").write_bytes(b"png")
    (exp / "ssl" / "images" / "iter_time.png").write_bytes(b"png")
    (exp / "ssl" / "tensorboard").mkdir()
    append_stage_time(exp / "stage_times.tsv", 1, "data_prep", 12.5)
    append_stage_time(exp / "stage_times.tsv", 5, "pretrain", 3700)
    append_stage_time(exp / "stage_times.tsv", 1, "data_prep", 10)  # re-run: last wins
    assert [(t.stage, t.seconds) for t in read_stage_times(exp / "stage_times.tsv")] == [("5", 3700.0), ("1", 10.0)]
    append_stage_time(exp / "stage_times.tsv", 5, "pretrain (exp/other)", 100)  # another system: its own line
    assert [(t.stage, t.seconds) for t in read_stage_times(exp / "stage_times.tsv")] == \
        [("5", 3700.0), ("1", 10.0), ("5", 100.0)]
    conf = tmp_path / "conf" / "pretrain.yaml"
    conf.parent.mkdir()
    conf.write_text("model_conf: {}\n")
    out = tmp_path / "RESULTS.md"
    rc = make_results_cli.main([
        "--exp_dir", str(exp), "--out", str(out), "--test_set", "test_clean", str(scored / "scores.json"),
        "--configs", str(conf), "--environment", "false",
    ])
    md = out.read_text(encoding="utf-8")
    assert rc == 0
    assert "| test set | WER | CER | #utts | #words |" in md
    row = "| test_clean | 63.64 | 53.66 | 3 | 11 | 41 | 3 | 3 | 1 | 100.00 | 1 | [scores.json](score/scores.json) |"
    assert row in md
    assert "[pretrain.yaml](conf/pretrain.yaml)" in md
    assert "| 5 | pretrain | 1:01:40 | 3700.0 |" in md and "**1:03:30**" in md
    assert "![loss](exp/ssl/images/loss.png)" in md and "[iter_time](exp/ssl/images/iter_time.png)" in md
    assert "tensorboard --logdir exp/ssl/tensorboard" in md


def test_results_md_names_the_recipes_checkout_when_the_package_came_from_another(tmp_path, scored):
    """A recipe run from one clone with an environment installed (editable) from another ran that clone's
    scripts and the other's model code: RESULTS.md names both commits, and one when they are the same."""
    from aqc.results import environment_lines

    def checkout(name, content):
        repo = tmp_path / name
        (repo / "egs" / "demo").mkdir(parents=True)
        (repo / "egs" / "demo" / "run.sh").write_text(content)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
        for args in (["init", "-q"], ["add", "."], ["commit", "-qm", name]):
            subprocess.run([*git, *args], check=True, capture_output=True)
        return repo, subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                                    text=True).stdout.strip()

    (package, package_commit), (recipe, recipe_commit) = checkout("package", "a\n"), checkout("recipe", "b\n")
    assert package_commit != recipe_commit
    (tmp_path / "elsewhere").mkdir()  # in no checkout

    def commit_line(repo_dir, recipe_dir):
        return [line for line in environment_lines(repo_dir, recipe_dir) if line.startswith("- git commit")]

    assert commit_line(package, package / "egs" / "demo") == [f"- git commit: `{package_commit}`"]
    assert commit_line(package, recipe / "egs" / "demo") == [
        f"- git commit: `{package_commit}` (the installed aqc package's checkout); the recipe's checkout: "
        f"`{recipe_commit}`"]
    assert commit_line(package, tmp_path / "elsewhere") == [f"- git commit: `{package_commit}`"]
    assert commit_line(tmp_path / "elsewhere", recipe / "egs" / "demo") == [
        f"- git commit: `{recipe_commit}` (the recipe's checkout; the aqc package is not in one)"]
    (recipe / "egs" / "demo" / "run.sh").write_text("changed\n")
    assert commit_line(package, recipe / "egs" / "demo")[0].endswith(f"`{recipe_commit}-dirty`")
    # make_results passes the directory RESULTS.md is written to as the recipe's
    text = make_results(recipe / "egs" / "demo" / "RESULTS.md", scored)
    assert "the recipe's checkout" in text and f"`{recipe_commit}-dirty`" in text


def test_results_md_discovers_scores(tmp_path, scored):
    exp = tmp_path  # scored lives at <tmp>/score/scores.json -> named after <tmp>
    text = make_results(tmp_path / "R.md", exp, environment=False)
    assert f"| {tmp_path.name} | 63.64 |" in text


def test_stage_times_format_error(tmp_path):
    p = tmp_path / "stage_times.tsv"
    p.write_text("1 data_prep 12\n")
    with pytest.raises(ValueError, match="TAB"):
        read_stage_times(p)


def test_pretraining_method_names_follow_the_paper_ablations():
    from aqc.results import pretraining_method

    off = {"gaussian_p": 0, "reverb_p": 0, "background_p": 0}
    assert pretraining_method({}) == "data2vec-aqc"  # defaults: augmentation, quantizer, clustering
    assert pretraining_method({"augmentation_conf": off, "model_conf": {"use_quantizer": False,
                                                                        "use_clustering": False}}) == "data2vec"
    assert pretraining_method({"augmentation_conf": {"background_p": 0},
                               "model_conf": {"use_quantizer": False, "use_clustering": False}}) == "data2vec+A"
    assert pretraining_method({"model_conf": {"use_clustering": False}}) == "data2vec+A+Q"
    assert pretraining_method({"augmentation_conf": off}) == "data2vec+Q+C"


def test_results_md_describes_each_system(tmp_path, scored, monkeypatch):
    import shutil

    import yaml

    monkeypatch.chdir(tmp_path)  # a recipe directory: ESPnet's config.yaml paths are relative to it
    for name in ("pretrain_d2v.yaml", "finetune.yaml", "decode.yaml"):
        (tmp_path / "conf").mkdir(exist_ok=True)
        (tmp_path / "conf" / name).write_text("{}\n")
    ssl = tmp_path / "exp" / "ssl_pretrain_d2v"
    ssl.mkdir(parents=True)
    (ssl / "config.yaml").write_text(yaml.safe_dump({
        "config": "conf/pretrain_d2v.yaml", "model_conf": {"use_quantizer": False, "use_clustering": False},
        "augmentation_conf": {"gaussian_p": 0.0, "reverb_p": 0.0, "background_p": 0.0}}))
    rows = []
    for asr, model_file in (("asr_finetune_pretrain_d2v", "exp/ssl_pretrain_d2v/aqc_model.pt"),
                            ("asr_finetune_scratch", "exp/asr_finetune_scratch/random_init_model.pt")):
        d = tmp_path / "exp" / asr
        (d / "decode_decode" / "test").mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({
            "config": "conf/finetune.yaml", "frontend": "aqc", "frontend_conf": {"model_file": model_file}}))
        shutil.copy(tmp_path / "conf" / "decode.yaml", d / "decode_decode" / "config.yaml")
        shutil.copytree(scored, d / "decode_decode" / "test" / "score")
        rows.append((f"{asr}/decode_decode/test", d / "decode_decode" / "test" / "score" / "scores.json"))
    (tmp_path / "exp" / "asr_unscored").mkdir()  # no scores: not a system of the table
    # The trainings' logs as the recipe keeps them: the thread policy's start line, one per process (the
    # pre-training was resumed once), and each epoch's mean count. The fine-tuning's count moved.
    epoch = ("[vm] 2026-12-05 16:06:36,354 (trainer:394) INFO: {n}epoch results: [train] loss=2.670, "
             "intra_op_threads={t}, time=1 minute and 24.17 seconds, total_count=250, [valid] loss=0.928, "
             "time=0.61 seconds, total_count=7\n")
    start = "[vm] 2026-12-05 16:05:00,000 (asr_task:140) INFO: intra-op threads: {t}{how}\n"
    (ssl / "train.log").write_text(
        start.format(t=1, how=", fixed (AQC_NUM_THREADS)") + epoch.format(n=1, t="1.000")
        + "# 2026-12-05T16:10:00 python -m aqc.bin.ssl_train --resume true\n"
        + start.format(t=1, how=", fixed (AQC_NUM_THREADS)") + epoch.format(n=2, t="1.000"))
    (tmp_path / "exp" / "asr_finetune_pretrain_d2v" / "train.log").write_text(
        start.format(t=2, how=" of at most 2, re-decided every 2 s from the CPU other processes use")
        + epoch.format(n=1, t="2.000") + epoch.format(n=2, t="1.372") + epoch.format(n=3, t="1.000"))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert ("| asr_finetune_pretrain_d2v | data2vec (`exp/ssl_pretrain_d2v`) | [pretrain_d2v.yaml](conf/pretrain_d2v.yaml) "
            "| [finetune.yaml](conf/finetune.yaml) | [config.yaml](exp/asr_finetune_pretrain_d2v/decode_decode/config.yaml) "
            "| 1 (fixed) / 1.00-2.00 per epoch: followed the machine's load, so not repeatable bit for bit "
            "(AQC_NUM_THREADS=N fixes it) |") in md
    assert "| asr_finetune_scratch | none (random initialisation) | - | [finetune.yaml](conf/finetune.yaml) |" in md
    assert md.splitlines()[[i for i, line in enumerate(md.splitlines()) if "| asr_finetune_scratch |" in line][0]] \
        .endswith("| - / not recorded |")  # no pre-training; a fine-tuning without a log
    assert "asr_unscored" not in md
    assert md.index("### Systems") < md.index("### WER / CER")


def test_results_md_names_systems_fine_tuned_from_the_same_pre_training_weights(tmp_path, scored, monkeypatch):
    """--ssl_select latest and the probe's pick export one checkpoint twice when the probe chose the last
    epoch: the two systems' runs are then one experiment twice, and RESULTS.md says so."""
    import shutil

    import yaml

    monkeypatch.chdir(tmp_path)
    ssl = tmp_path / "exp" / "ssl_pretrain_aqc"
    ssl.mkdir(parents=True)
    (ssl / "config.yaml").write_text(yaml.safe_dump({"model_conf": {}, "augmentation_conf": {}}))
    for select, epoch in (("probe", 24), ("latest", 24), ("valid_loss", 12)):
        (ssl / f"aqc_model.{select}.pt").write_bytes(select.encode())  # other bytes: the records differ
        probe = {"epoch": epoch, "metric": "character error rate", "probe_error": 0.79, "best_probed_epoch": epoch,
                 "best_probe_error": 0.79, "standard_error": 0.01} if select == "probe" else {}
        (ssl / f"aqc_model.{select}.pt.json").write_text(json.dumps(
            {"select": select, "checkpoint": str(ssl / f"{epoch}epoch.pth"), "num_updates": 250 * epoch, **probe}))
    rows = []
    for asr, select in (("asr_finetune_pretrain_aqc", "probe"), ("asr_finetune_pretrain_aqc_seed1", "probe"),
                        ("asr_finetune_pretrain_aqc_latest", "latest"), ("asr_finetune_pretrain_aqc_vl", "valid_loss")):
        d = tmp_path / "exp" / asr
        (d / "decode_decode" / "test").mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(
            {"frontend": "aqc", "frontend_conf": {"model_file": f"exp/ssl_pretrain_aqc/aqc_model.{select}.pt"}}))
        shutil.copytree(scored, d / "decode_decode" / "test" / "score")
        rows.append((f"{asr}/decode_decode/test", d / "decode_decode" / "test" / "score" / "scores.json"))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "**Shared upstreams.**" in md
    assert ("- `exp/ssl_pretrain_aqc/24epoch.pth` (update 6000): `asr_finetune_pretrain_aqc`, "
            "`asr_finetune_pretrain_aqc_latest`\n") in md
    assert "12epoch.pth" not in md.split("**Shared upstreams.**")[1].split("###")[0]  # used by one system only
    # without a second user of a checkpoint there is no such section
    shutil.rmtree(tmp_path / "exp" / "asr_finetune_pretrain_aqc_latest")
    md = make_results("RESULTS.md", "exp", test_sets=[r for r in rows if "latest" not in r[0]], environment=False)
    assert "Shared upstreams" not in md


def test_thread_use_says_whether_a_training_can_be_repeated_bit_for_bit(tmp_path):
    from aqc.results import thread_use

    def log(*lines):
        (tmp_path / "train.log").write_text("".join(line + "\n" for line in lines))
        return thread_use(tmp_path)

    auto = "INFO: intra-op threads: 2 of at most 2, re-decided every 2 s from the CPU other processes use"
    fixed = "INFO: intra-op threads: 1, fixed (AQC_NUM_THREADS)"
    result = "INFO: {}epoch results: [train] loss=1.0, intra_op_threads={}, total_count=9, [valid] loss=2.0"
    assert thread_use(tmp_path) == "not recorded"  # no log: a run made before the recipe kept one
    assert log(auto, result.format(1, "2.000"), result.format(2, "2.000")) == \
        "2 throughout (AQC_NUM_THREADS=2 repeats it)"
    assert log(fixed, result.format(1, "1.000")) == "1 (fixed)"
    assert log(fixed) == "1 (fixed)"  # stopped before its first epoch ended
    assert log(auto) == "not recorded"
    assert log(auto, result.format(1, "1.500")).startswith("1.50-1.50 per epoch: followed the machine's load")
    # a resume on another fixed count is two counts
    assert log(fixed, result.format(1, "1.000"), fixed.replace(": 1,", ": 2,"), result.format(2, "2.000")) \
        .startswith("1.00-2.00 per epoch")
    # only the training part of an epoch's line counts; an older log without the stat is not recorded
    assert log(auto, "INFO: 1epoch results: [train] loss=1.0, [valid] intra_op_threads=1.000") == "not recorded"


# ----------------------------------------------------------------------------------------------- issue 14


def test_non_utf8_text_is_one_line_naming_file_line_and_fix(tmp_path):
    ref = write_text(tmp_path / "ref", {"u1": "a", "u2": "b"})
    hyp = tmp_path / "hyp"
    hyp.write_bytes("u1 a\nu2 gr\u00fc\u00dfe\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{hyp}:2: not UTF-8 \(byte 0xfc at column 6\); re-encode the file"):
        read_text_file(hyp)
    proc = subprocess.run([sys.executable, "-m", "aqc.bin.score", "--ref", str(ref), "--hyp", str(hyp),
                           "--out_dir", str(tmp_path / "o")], capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert proc.returncode == 1 and len(errors) == 1
    assert f"{hyp}:2: not UTF-8" in errors[0] and "iconv" in errors[0]


def test_require_all_makes_a_missing_hypothesis_an_error_naming_it(tmp_path):
    refs = {f"u{i:02d}": "a b" for i in range(25)}
    ref = write_text(tmp_path / "ref", refs)
    hyp = write_text(tmp_path / "hyp", {"u00": "a b", "u01": "a", "u02": "b"})
    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "aqc.bin.score", "--ref", str(ref), "--hyp", str(hyp),
                           "--out_dir", str(out), "--require_all", "true"], capture_output=True, text=True)
    assert proc.returncode == 1 and not (out / "scores.json").exists()
    shown = ", ".join(f"u{i:02d}" for i in range(3, 23))
    assert f"22 of 25 reference utterances of {ref} have no hypothesis: {shown}, ... (22 in all)" in proc.stderr
    # without it (the default for other users), missing hypotheses are scored as all deletions, as documented
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(out)]) == 0
    assert json.loads((out / "scores.json").read_text())["num_missing"] == 22


def test_results_md_states_each_set_size_and_its_tokens_outside_the_token_list(tmp_path, scored):
    decode = tmp_path / "exp" / "asr_x" / "decode_d" / "test"
    decode.mkdir(parents=True)
    import shutil

    shutil.copytree(scored, decode / "score")
    (decode / "score" / "token_coverage.json").write_text(json.dumps(
        {"tokens": 1000, "unknown": 3, "unit": "words", "examples": [["köln", 2], ["aus", 1]]}))
    md = make_results(tmp_path / "RESULTS.md", tmp_path / "exp", environment=False,
                      test_sets=[("asr_x/decode_d/test", decode / "score" / "scores.json")])
    ref = Path(json.loads((scored / "scores.json").read_text())["ref"])
    assert (f"- asr_x/decode_d/test: 3 utterances (every utterance of `{os.path.relpath(ref, tmp_path)}`), "
            "1 without a hypothesis (scored as all deletions); 3 of 1000 words (0.30 %) are not in the token list "
            "(never recognised), e.g. `köln` (2), `aus` (1)") in md


def test_results_md_never_reads_superseded_experiments(tmp_path, scored):
    import shutil

    shutil.copytree(scored, tmp_path / "exp" / "asr_x" / "decode_d" / "test" / "score")
    shutil.copytree(scored, tmp_path / "exp" / "superseded" / "asr_x.20250101T000000" / "decode_d" / "test" / "score")
    md = make_results(tmp_path / "RESULTS.md", tmp_path / "exp", environment=False)
    assert "| test | 63.64 |" in md and "superseded" not in md


# ----------------------------------------------------------------------------------------------- issue 16


def _score_run(exp: Path, run: str, refs: dict, hyps: dict) -> Path:
    d = exp / run / "decode_decode" / "test"
    d.mkdir(parents=True)
    ref, hyp = write_text(d / "ref", refs), write_text(d / "hyp", hyps)
    assert score_cli.main(["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(d / "score")]) == 0
    return d / "score" / "scores.json"


def test_results_md_gives_mean_and_spread_over_seeds_and_which_differences_exceed_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    refs = {f"u{i}": "one" for i in range(10)}
    # errors per run: aqc 1, 2, 3 (mean 20 %, sd 10); logmel 6, 7, 8 (mean 70 %, sd 10); scratch 2, 5, 5
    # (mean 40 %, sd 17.3): aqc - logmel = -50 exceeds 10 + 10; aqc - scratch = -20 does not exceed 27.3
    errors = {"asr_ft_aqc": [1, 2, 3], "asr_ft_logmel": [6, 7, 8], "asr_ft_scratch": [2, 5, 5]}
    rows = []
    for system, per_run in errors.items():
        for k, n in enumerate(per_run):
            run = system if k == 0 else f"{system}_seed{k}"
            # logmel's errors are one letter of three ("onx"): its CER is a third of its WER
            wrong = "onx" if system == "asr_ft_logmel" else "two"
            hyps = {u: (wrong if i < n else "one") for i, u in enumerate(refs)}
            path = _score_run(exp, run, refs, hyps)
            rows.append((f"{run}/decode_decode/test", path))
    (exp / "asr_ft_logmel" / "config.yaml").write_text("frontend: default\nconfig: conf/finetune_logmel.yaml\n")
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "### Mean over seeds" in md
    table = md[md.index("### Mean over seeds"):]
    assert ("| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 3 | 20.00 ± 10.00 | 20.00 ± 10.00 | 10.00 20.00 30.00 "
            "| 10.00 20.00 30.00 |" in table)
    assert ("| asr_ft_logmel | none (log-mel filterbank features, ESPnet's default frontend) | decode_decode/test "
            "| 3 | 70.00 ± 10.00 |") in table
    assert "| asr_ft_scratch | unknown (no config.yaml) | decode_decode/test | 3 | 40.00 ± 17.32 |" in table
    header = "| | asr_ft_aqc | asr_ft_scratch | asr_ft_logmel |"  # ordered by mean WER
    diff = table[table.index("Differences on decode_decode/test (WER"):]
    assert header in diff
    assert "| asr_ft_aqc |  | -20.00 | -50.00* |" in diff
    assert "| asr_ft_logmel | +50.00* | +30.00* |  |" in diff
    # CER: logmel 23.33 +- 3.33, so aqc - logmel = -3.33 (within 10 + 3.33) and scratch - logmel = +16.67
    # (within 17.32 + 3.33): no CER difference exceeds the spread
    assert "| 3 | 70.00 ± 10.00 | 23.33 ± 3.33 | 60.00 70.00 80.00 | 20.00 23.33 26.67 |" in table
    diff = table[table.index("Differences on decode_decode/test (CER"):]
    assert header in diff
    assert "| asr_ft_aqc |  | -20.00 | -3.33 |" in diff
    assert "| asr_ft_logmel | +3.33 | -16.67 |  |" in diff
    # one run per system: no seed section (nothing to average)
    single = make_results("R1.md", "exp", test_sets=[r for r in rows if "_seed" not in r[0]], environment=False)
    assert "### Mean over seeds" not in single


def test_results_md_pools_pre_training_seeds_and_judges_differences_by_the_pooled_spread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    refs = {f"u{i}": "one" for i in range(10)}
    # errors per run: aqc's first pre-training 1, 2, 3 (20 % +- 10), its second (_pseed1) 5, 6, 7 (60 % +- 10);
    # log-mel 4, 5, 6 (50 % +- 10). The first pre-training alone would beat log-mel beyond the spread (-30 vs
    # 20); pooled, aqc is 40 % +- 23.66 over 6 runs and -10 is within 33.66.
    runs = {"asr_ft_aqc": 1, "asr_ft_aqc_seed1": 2, "asr_ft_aqc_seed2": 3,
            "asr_ft_aqc_pseed1": 5, "asr_ft_aqc_pseed1_seed1": 6, "asr_ft_aqc_pseed1_seed2": 7,
            "asr_ft_logmel": 4, "asr_ft_logmel_seed1": 5, "asr_ft_logmel_seed2": 6}
    rows = []
    for run, n in runs.items():
        hyps = {u: ("two" if i < n else "one") for i, u in enumerate(refs)}
        rows.append((f"{run}/decode_decode/test", _score_run(exp, run, refs, hyps)))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    per_pretraining = md[md.index("### Mean over seeds"):md.index("### Mean over pre-training and fine-tuning seeds")]
    assert "| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 3 | 20.00 ± 10.00 |" in per_pretraining
    assert "| asr_ft_aqc_pseed1 | unknown (no config.yaml) | decode_decode/test | 3 | 60.00 ± 10.00 |" in per_pretraining
    assert "Differences" not in per_pretraining  # judged by the pooled spread only
    pooled = md[md.index("### Mean over pre-training and fine-tuning seeds"):]
    assert ("| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 6 | 40.00 ± 23.66 | 40.00 ± 23.66 | "
            "10.00 20.00 30.00 50.00 60.00 70.00 |") in pooled  # first pre-training first, then by seed
    assert "| asr_ft_logmel | unknown (no config.yaml) | decode_decode/test | 3 | 50.00 ± 10.00 |" in pooled
    assert "asr_ft_aqc_pseed1 |" not in pooled
    diff = pooled[pooled.index("Differences on decode_decode/test (WER"):]
    assert "| asr_ft_aqc |  | -10.00 |\n| asr_ft_logmel | +10.00 |  |\n" in diff  # no *: within the spread
    # one fine-tuning per pre-training: the pooled table still averages the pre-trainings
    firsts = [r for r in rows if "_seed" not in r[0]]
    md = make_results("R2.md", "exp", test_sets=firsts, environment=False)
    assert "| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 2 | 30.00 ± 28.28 |" in \
        md[md.index("### Mean over pre-training and fine-tuning seeds"):]
    # without a second pre-training the report is as before: one table, differences by fine-tuning seeds
    one = make_results("R1.md", "exp", test_sets=[r for r in rows if "_pseed" not in r[0]], environment=False)
    assert "### Mean over pre-training and fine-tuning seeds" not in one
    assert "| asr_ft_aqc |  | -30.00* |" in one


def test_results_md_does_not_average_runs_made_from_different_inputs(tmp_path, monkeypatch):
    """A re-run that stopped part-way leaves seed runs made from the old upstream: never averaged with the new."""
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    refs = {f"u{i}": "one" for i in range(10)}
    record = "finetune_config\tyaml-sha256:f1\nseed\t{seed}\nupstream_model\tsha256:{up}\n"
    runs = {"asr_ft_aqc": ("", "new"), "asr_ft_aqc_seed1": ("1", "new"), "asr_ft_aqc_seed2": ("2", "old"),
            "asr_ft_d2v": ("", "a"), "asr_ft_d2v_seed1": ("1", "a"),
            "asr_ft_d2v_pseed1": ("", "b"), "asr_ft_d2v_pseed1_seed1": ("1", "b")}
    rows = []
    for k, (run, (seed, up)) in enumerate(runs.items()):
        hyps = {u: ("two" if i < 1 + k % 3 else "one") for i, u in enumerate(refs)}
        rows.append((f"{run}/decode_decode/test", _score_run(exp, run, refs, hyps)))
        (exp / run / ".done.5").write_text(record.format(seed=seed, up=up).replace("seed\t\n", ""))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 3 | not averaged | not averaged |" in md
    assert ("**asr_ft_aqc (decode_decode/test) not averaged**: its runs (asr_ft_aqc, asr_ft_aqc_seed1, "
            "asr_ft_aqc_seed2) were made from different inputs (upstream_model)") in md
    # pre-trainings differ in their upstream by design: pooled, d2v's four runs are averaged
    pooled = md[md.index("### Mean over pre-training and fine-tuning seeds"):]
    assert "| asr_ft_d2v | unknown (no config.yaml) | decode_decode/test | 4 | 17.50 ± 9.57 |" in pooled
    assert "| asr_ft_aqc | unknown (no config.yaml) | decode_decode/test | 3 | not averaged |" in pooled
    assert "Differences" not in pooled  # nothing left to compare d2v with: aqc is not averaged
    # but not when a fine-tuning input other than the upstream and seed differs between pre-trainings
    (exp / "asr_ft_d2v_pseed1_seed1" / ".done.5").write_text(record.format(seed="1", up="b").replace("f1", "f2"))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    pooled = md[md.index("### Mean over pre-training and fine-tuning seeds"):]
    assert "| asr_ft_d2v | unknown (no config.yaml) | decode_decode/test | 4 | not averaged |" in pooled
    assert "different inputs (finetune_config)" in pooled
    # a run without a marker among runs with one is not averaged either
    (exp / "asr_ft_aqc_seed2" / ".done.5").write_text(record.format(seed="2", up="new"))
    assert "asr_ft_aqc (decode_decode/test) not averaged" not in make_results("R.md", "exp", test_sets=rows,
                                                                               environment=False)
    (exp / "asr_ft_aqc_seed2" / ".done.5").unlink()
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "different inputs (a run without a stage-5 record)" in md


def test_results_md_ranks_systems_by_the_error_rate_asked_for(tmp_path, monkeypatch):
    """A letter recogniser's recipe ranks by CER (--rank_by cer): here the order differs from WER's."""
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    refs = {f"u{i}": "abc def" for i in range(4)}
    rows = []
    for run, hyp in (("asr_words", "xyz def"), ("asr_words_seed1", "xyz def"),    # 50 % WER, 50 % CER
                     ("asr_letters", "abd dex"), ("asr_letters_seed1", "abc dex")):  # 75 % WER, 25 % CER (means)
        rows.append((f"{run}/decode_decode/test", _score_run(exp, run, refs, {u: hyp for u in refs})))
    by_wer = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    by_cer = make_results("RESULTS.md", "exp", test_sets=rows, environment=False, rank_by="cer")
    table = lambda md: md[md.index("### Mean over seeds"):]
    assert table(by_wer).index("| asr_words |") < table(by_wer).index("| asr_letters |")
    assert table(by_cer).index("| asr_letters |") < table(by_cer).index("| asr_words |")
    assert "| asr_letters | unknown (no config.yaml) | decode_decode/test | 2 | 75.00 ± 35.36 | 25.00 ± 11.79 |" in by_cer
    with pytest.raises(ValueError, match="rank_by: expected wer or cer"):
        make_results("RESULTS.md", "exp", test_sets=rows, environment=False, rank_by="ser")


def test_results_md_marks_runs_whose_upstream_changed_after_fine_tuning(tmp_path, monkeypatch):
    """Pre-training again replaces exp/ssl_x's upstream; fine-tunings made from the old one (e.g. an
    --ssl_select variant the new invocation does not re-run) must not pass for the new pre-training's."""
    import hashlib

    import yaml

    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    ssl = exp / "ssl_aqc"
    ssl.mkdir(parents=True)
    (ssl / "config.yaml").write_text(yaml.safe_dump({"model_conf": {}}))
    upstream = ssl / "aqc_model.pt"
    upstream.write_bytes(b"first pre-training")
    digest = "sha256:" + hashlib.sha256(b"first pre-training").hexdigest()
    refs = {f"u{i}": "one" for i in range(10)}
    rows = []
    for k, run in enumerate(("asr_ft", "asr_ft_seed1")):
        hyps = {u: ("two" if i < 1 + k else "one") for i, u in enumerate(refs)}
        rows.append((f"{run}/decode_decode/test", _score_run(exp, run, refs, hyps)))
        (exp / run / "config.yaml").write_text(yaml.safe_dump({
            # absolute, as the recipes write it; the messages name it relative to the recipe
            "frontend": "aqc", "frontend_conf": {"model_file": str(upstream)}}))
        (exp / run / ".done.5").write_text(f"seed\t{k or ''}\nupstream_model\t{digest}\n")
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "Stale runs" not in md and "stale" not in md
    assert "| asr_ft | data2vec-aqc | decode_decode/test | 2 | 15.00 ± 7.07 |" in md
    upstream.write_bytes(b"second pre-training")  # stage 4 ran again with other inputs
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "**Stale runs.**" in md
    assert "- `exp/asr_ft`: its upstream exp/ssl_aqc/aqc_model.pt was replaced after this fine-tuning" in md
    assert "- `exp/asr_ft_seed1`: its upstream" in md
    assert md.index("**Stale runs.**") < md.index("### WER / CER")
    assert "| asr_ft | data2vec-aqc (`exp/ssl_aqc`) **stale: upstream changed since fine-tuning** |" in md
    assert "| asr_ft | data2vec-aqc | decode_decode/test | 2 | not averaged | not averaged |" in md
    assert ("**asr_ft (decode_decode/test) not averaged**: asr_ft, asr_ft_seed1 were fine-tuned from an upstream "
            "that has changed since (\"Stale runs\" above)") in md
    assert "made from different inputs" not in md  # their records agree: only the upstream is not theirs
    upstream.unlink()
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "- `exp/asr_ft`: its upstream exp/ssl_aqc/aqc_model.pt is gone" in md
    upstream.write_bytes(b"first pre-training")  # the same bytes again: nothing stale
    assert "Stale runs" not in make_results("RESULTS.md", "exp", test_sets=rows, environment=False)


def test_results_md_says_when_a_linked_config_is_not_what_the_run_used(tmp_path, scored, monkeypatch):
    import shutil

    import yaml

    from aqc.results import config_drift

    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "finetune.yaml").write_text(yaml.safe_dump(
        {"frontend": "default", "optim_conf": {"lr": 0.001}, "max_epoch": 20, "best_model_criterion": [["valid", "loss", "min"]]}))
    d = tmp_path / "exp" / "asr_ft"
    (d / "decode_decode" / "test").mkdir(parents=True)
    run = {"config": "conf/finetune.yaml", "frontend": "default", "optim_conf": {"lr": 1.0e-3, "eps": 1e-8},
           "max_epoch": 20, "seed": 3, "best_model_criterion": [["valid", "loss", "min"], ["valid", "probe_err", "min"]]}
    (d / "config.yaml").write_text(yaml.safe_dump(run))
    shutil.copytree(scored, d / "decode_decode" / "test" / "score")
    rows = [("asr_ft/decode_decode/test", d / "decode_decode" / "test" / "score" / "scores.json")]
    # the same values (1e-3 written two ways; keys the file leaves out; the probe's appended criterion)
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "| asr_ft | none (log-mel" in md and "run with other values" not in md
    # the file edited after the run (or a command-line option): the table says which keys
    (tmp_path / "conf" / "finetune.yaml").write_text(yaml.safe_dump(
        {"frontend": "default", "optim_conf": {"lr": 0.002}, "max_epoch": 30, "specaug": "specaug"}))
    md = make_results("RESULTS.md", "exp", test_sets=rows, environment=False)
    assert "[finetune.yaml](conf/finetune.yaml) (run with other values of max_epoch, optim_conf.lr, specaug)" in md
    assert config_drift({"a": [1, 2]}, {"a": [1, 2, 3]}) == ["a"]  # only the probe's criterion may be appended
