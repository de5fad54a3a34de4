"""utils/validate_data_dir.py and the data-directory helpers, on real and deliberately broken audio."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
UTILS = REPO / "utils"
DATA = REPO.parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
LIBRI = DATA / "librispeech_unlabeled" / "train-clean-100"

pytestmark = pytest.mark.skipif(not FSDD.is_dir() or not LIBRI.is_dir(), reason=f"test data not found at {DATA}")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(UTILS / script), *map(str, args)], capture_output=True, text=True)


def write(path: Path, lines: List[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def libri_flacs(n: int) -> List[Path]:
    return sorted(LIBRI.rglob("*.flac"))[:n]


def make_dir(d: Path, wavs: Dict[str, str], texts: Dict[str, str] = None) -> Path:
    """A consistent, sorted data dir; utterance ids are '<spk>-<n>'."""
    d.mkdir(parents=True, exist_ok=True)
    keys = sorted(wavs, key=lambda k: k.encode())
    write(d / "wav.scp", [f"{k} {wavs[k]}" for k in keys])
    write(d / "text", [f"{k} {(texts or {}).get(k, 'some words')}" for k in keys])
    write(d / "utt2spk", [f"{k} {k.split('-')[0]}" for k in keys])
    spks: Dict[str, List[str]] = {}
    for k in keys:
        spks.setdefault(k.split("-")[0], []).append(k)
    write(d / "spk2utt", [f"{s} {' '.join(us)}" for s, us in sorted(spks.items())])
    return d


def problems(stdout: str) -> List[Tuple[str, str, str]]:
    """(level, code, 'file: key') of every reported problem line."""
    out = []
    for line in stdout.splitlines():
        if line.startswith(("ERROR [", "WARNING [")):
            level, rest = line.split(" [", 1)
            code, where = rest.split("] ", 1)
            out.append((level, code, where.split(": ")[0] + ": " + where.split(": ")[1]))
    return out


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clean") / "data"
    flacs = libri_flacs(2)
    wavs = {f"ls{i}-{f.stem}": str(f) for i, f in enumerate(flacs)}
    return make_dir(d, wavs, {k: "grüße नमस्ते" for k in wavs})


def test_clean_dir_passes(clean_dir):
    proc = run("validate_data_dir.py", clean_dir, "--nj", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK: 0 error(s), 0 warning(s)")


def test_8khz_is_a_warning_unless_asked(tmp_path):
    d = make_dir(tmp_path / "d", {"george-0": str(FSDD / "0_george_0.wav")})
    proc = run("validate_data_dir.py", d)
    assert proc.returncode == 0 and ("WARNING", "sample-rate", f"{d}/wav.scp: george-0") in problems(proc.stdout)
    proc = run("validate_data_dir.py", d, "--sample_rate_mismatch", "error")
    assert proc.returncode == 1 and ("ERROR", "sample-rate", f"{d}/wav.scp: george-0") in problems(proc.stdout)


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    (audio / "garbage.wav").write_bytes(bytes(rng.integers(0, 256, 3000, dtype=np.uint8)))
    sf.write(audio / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(audio / "short.wav", noise[:100], 16000)
    sf.write(audio / "stereo.wav", np.stack([noise, noise], axis=1), 16000)
    nan = noise.copy()
    nan[100], nan[200] = np.nan, np.inf
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(audio / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    good = libri_flacs(1)[0]
    wavs = {
        "a-corrupt": audio / "garbage.wav",
        "a-empty": audio / "empty.wav",
        "a-good": good,
        "a-missing": audio / "no_such_file.wav",
        "a-nan": audio / "nan.wav",
        "a-pipe": f"sox {good} -t wav - |",
        "a-short": audio / "short.wav",
        "a-silent": audio / "silent.wav",
        "a-stereo": audio / "stereo.wav",
        "b-8k": FSDD / "0_jackson_0.wav",
        "b-good": good,
    }
    d = make_dir(root / "data", {k: str(v) for k, v in wavs.items()})
    # text: unsorted, and one utterance (a-good) missing
    write(d / "text", [f"{k} words" for k in sorted(wavs, reverse=True) if k != "a-good"])
    # utt2spk: a duplicate key; spk2utt: b-good under the wrong speaker
    utt2spk = [f"{k} {k.split('-')[0]}" for k in sorted(wavs)]
    write(d / "utt2spk", utt2spk[:2] + [utt2spk[1]] + utt2spk[2:])
    a_utts = " ".join(k for k in sorted(wavs) if k.startswith("a-"))
    write(d / "spk2utt", [f"a {a_utts} b-good", "b b-8k"])
    return d


def test_bad_dir_reports_every_problem_at_once(bad_dir):
    proc = run("validate_data_dir.py", bad_dir, "--nj", "2")
    assert proc.returncode == 1
    found = problems(proc.stdout)
    d = str(bad_dir)
    expected = [
        ("ERROR", "corrupt-audio", f"{d}/wav.scp: a-corrupt"),
        ("ERROR", "empty-audio", f"{d}/wav.scp: a-empty"),
        ("ERROR", "missing-audio", f"{d}/wav.scp: a-missing"),
        ("ERROR", "non-finite", f"{d}/wav.scp: a-nan"),
        ("ERROR", "pipe-unsupported", f"{d}/wav.scp: a-pipe"),
        ("ERROR", "too-short", f"{d}/wav.scp: a-short"),
        ("ERROR", "silent", f"{d}/wav.scp: a-silent"),
        ("WARNING", "multi-channel", f"{d}/wav.scp: a-stereo"),
        ("WARNING", "sample-rate", f"{d}/wav.scp: b-8k"),
        ("ERROR", "unsorted", f"{d}/text: b-8k"),
        ("ERROR", "key-mismatch", f"{d}/text: a-good"),
        ("ERROR", "duplicate-key", f"{d}/utt2spk: a-empty"),
        ("ERROR", "spk2utt-mismatch", f"{d}/spk2utt: b-good"),
    ]
    for problem in expected:
        assert problem in found, f"{problem} not reported in:\n{proc.stdout}"
    # nothing else is flagged: the good recordings are clean
    assert not [p for p in found if p[2].endswith(("a-good", "b-good")) and p not in expected]
    assert all("Fix: " in line for line in proc.stdout.splitlines() if line.startswith(("ERROR", "WARNING")))
    assert "FAILED: 11 error(s), 2 warning(s)" in proc.stdout


def test_no_audio_checks_tables_only(bad_dir):
    proc = run("validate_data_dir.py", bad_dir, "--no_audio")
    codes = {p[1] for p in problems(proc.stdout)}
    assert proc.returncode == 1
    assert codes == {"unsorted", "key-mismatch", "duplicate-key", "spk2utt-mismatch"}


def test_segments(tmp_path):
    flac = libri_flacs(1)[0]
    duration = sf.info(str(flac)).duration
    d = tmp_path / "d"
    d.mkdir()
    write(d / "wav.scp", [f"rec1 {flac}", "rec2 /nonexistent.wav"])
    write(d / "segments", [
        "rec1-a rec1 0.00 1.50",
        f"rec1-b rec1 1.50 {duration + 5:.2f}",  # past the end
        "rec1-c rec1 2.00 2.01",  # 160 samples
        "rec1-d rec1 3.0 -1",
        "rec1-e rec3 0 1",  # unknown recording
    ])
    proc = run("validate_data_dir.py", d)
    found = problems(proc.stdout)
    assert proc.returncode == 1
    for problem in [
        ("ERROR", "bad-segment", f"{d}/segments: rec1-b"),
        ("ERROR", "too-short", f"{d}/segments: rec1-c"),
        ("ERROR", "key-mismatch", f"{d}/segments: rec1-e"),
        ("WARNING", "unused-recording", f"{d}/wav.scp: rec2"),
        ("ERROR", "missing-audio", f"{d}/wav.scp: rec2"),
    ]:
        assert problem in found, f"{problem} not reported in:\n{proc.stdout}"
    assert not [p for p in found if p[2].endswith(("rec1-a", "rec1-d"))]


def test_missing_wav_scp(tmp_path):
    proc = run("validate_data_dir.py", tmp_path)
    assert proc.returncode == 1 and "[missing-file]" in proc.stdout and "wav.scp is required" in proc.stdout


def test_fix_data_dir(tmp_path):
    fsdd = {f"{n.split('_')[1]}-{n}": str(FSDD / f"{n}.wav") for n in ("0_george_0", "1_george_0", "2_jackson_0")}
    d = tmp_path / "d"
    d.mkdir()
    keys = sorted(fsdd)
    write(d / "wav.scp", [f"{k} {fsdd[k]}" for k in reversed(keys)])  # unsorted
    write(d / "text", [f"{k} x" for k in keys[:2]] + [f"{keys[0]} again"])  # jackson missing, a duplicate
    write(d / "utt2spk", [f"{k} {k.split('-')[0]}" for k in keys] + ["extra-1 extra"])
    assert run("validate_data_dir.py", d, "--no_audio").returncode == 1
    proc = run("fix_data_dir.py", d)
    assert proc.returncode == 0, proc.stderr
    assert f"{d}/text: 3 -> 2 lines, 1 dropped (1 duplicate key(s))" in proc.stdout
    assert f"{d}/utt2spk: 4 -> 2 lines, 2 dropped" in proc.stdout
    assert f"{d}: 2 utterances kept" in proc.stdout
    assert (d / "spk2utt").read_text() == "george george-0_george_0 george-1_george_0\n"
    assert (d / "text").read_text() == "george-0_george_0 x\ngeorge-1_george_0 x\n"
    assert (d / ".backup" / "wav.scp").read_text().startswith("jackson")
    proc = run("validate_data_dir.py", d, "--no_audio")
    assert proc.returncode == 0, proc.stdout


def test_utt2spk_to_spk2utt(tmp_path):
    write(tmp_path / "utt2spk", ["b-2 b", "a-1 a", "b-1 b", "a-2 a"])
    proc = run("utt2spk_to_spk2utt.py", tmp_path / "utt2spk")
    assert proc.returncode == 0 and proc.stdout == "a a-1 a-2\nb b-1 b-2\n"


def test_get_utt2num_samples(tmp_path):
    flacs = libri_flacs(2)
    wavs = {f"s{i}-x": str(f) for i, f in enumerate(flacs)}
    wavs["s9-digit"] = str(FSDD / "3_theo_0.wav")
    d = make_dir(tmp_path / "d", wavs)
    proc = run("get_utt2num_samples.py", d, "--nj", "2")
    assert proc.returncode == 0, proc.stderr
    lines = (d / "utt2num_samples").read_text().splitlines()
    assert lines == [f"{k} {sf.info(wavs[k]).frames}" for k in sorted(wavs)]
    proc = run("get_utt2num_samples.py", d, "--sample_rate", "16000", "--out", d / "u16")
    assert f"s9-digit {2 * sf.info(wavs['s9-digit']).frames}" in (d / "u16").read_text()
    assert run("validate_data_dir.py", d).returncode == 0
    # a wrong count is caught; a pipe makes the helper fail without writing
    write(d / "utt2num_samples", [f"{k} 12345" for k in sorted(wavs)])
    found = problems(run("validate_data_dir.py", d).stdout)
    assert ("ERROR", "num-samples-mismatch", f"{d}/utt2num_samples: s0-x") in found
    write(d / "wav.scp", [f"{k} cat {wavs[k]} |" for k in sorted(wavs)])
    (d / "utt2num_samples").unlink()
    proc = run("get_utt2num_samples.py", d)
    assert proc.returncode == 1 and "is a pipe" in proc.stderr and not (d / "utt2num_samples").exists()


def test_help():
    for script in ("validate_data_dir.py", "fix_data_dir.py", "get_utt2num_samples.py", "utt2spk_to_spk2utt.py"):
        proc = run(script, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout


# ----------------------------------------------------------------------------------------------- issue 14


def test_require_names_a_missing_file(tmp_path):
    d = make_dir(tmp_path / "d", {"george-0": str(FSDD / "0_george_0.wav")})
    (d / "text").unlink()
    assert run("validate_data_dir.py", d, "--no_audio").returncode == 0  # text is optional by default
    proc = run("validate_data_dir.py", d, "--no_audio", "--require", "text")
    assert proc.returncode == 1
    assert (f"ERROR [missing-file] {d}/text: text is required here. Fix: write '<utt-id> <transcript>' lines"
            in proc.stdout)
    proc = run("validate_data_dir.py", d, "--require", "txet")
    assert proc.returncode == 2 and "--require txet: not a file this checker knows" in proc.stderr


def _long_wav(path: Path, seconds: float) -> Path:
    audio = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in libri_flacs(4)])
    sf.write(path, audio[: int(seconds * 16000)], 16000)
    return path


def test_format_keeps_a_scored_set_whole_and_filters_a_training_set(tmp_path):
    flac = libri_flacs(1)[0]
    wavs = {"a-long": str(_long_wav(tmp_path / "long.wav", 35.0)), "a-ok": str(flac)}
    d = make_dir(tmp_path / "data", wavs)
    proc = run("format_wav_scp.py", "--in_dir", d, "--out_dir", tmp_path / "test", "--require_all", "true",
               "--max_duration", "30")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in (tmp_path / "test" / "wav.scp").read_text().splitlines()] == ["a-long", "a-ok"]
    assert (tmp_path / "test" / "text").read_text() == (d / "text").read_text()
    proc = run("format_wav_scp.py", "--in_dir", d, "--out_dir", tmp_path / "train", "--max_duration", "30")
    assert proc.returncode == 0 and "skipped 1 of 2" in proc.stderr
    assert (tmp_path / "train" / "skipped.txt").read_text().startswith("a-long longer than --max_duration 30")


def test_format_stops_on_unusable_audio_in_a_scored_set_listing_it(tmp_path):
    short = tmp_path / "short.wav"
    sf.write(short, np.full(300, 0.1, dtype=np.float32), 16000)
    wavs = {f"m-{i:02d}": str(tmp_path / f"lost{i}.wav") for i in range(22)}
    wavs.update({"a-ok": str(libri_flacs(1)[0]), "a-short": str(short)})
    d = make_dir(tmp_path / "data", wavs)
    proc = run("format_wav_scp.py", "--in_dir", d, "--out_dir", tmp_path / "test", "--require_all", "true")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == (f"format_wav_scp: {d}: 23 of 24 utterances cannot be used, and this set is scored or "
                        "validated on in full (no utterance may be dropped):")
    assert lines[1] == f"  a-short {short}: 300 samples at 16000 Hz, fewer than the model's minimum 400"
    assert lines[2] == f"  m-00 {tmp_path / 'lost0.wav'}: does not exist"
    assert lines[21] == "  ... and 3 more" and len(lines) == 23
    assert lines[22] == (f"Fix: repair the audio; or, if an utterance is not meant to be scored, delete its line "
                         f"from {d}/wav.scp and run utils/fix_data_dir.py {d}")
    # a training set drops them, each with its reason
    proc = run("format_wav_scp.py", "--in_dir", d, "--out_dir", tmp_path / "train", "--min_duration", "0")
    assert proc.returncode == 0
    skipped = (tmp_path / "train" / "skipped.txt").read_text()
    assert "m-00 does not exist" in skipped and "a-short 300 samples" in skipped


def test_token_coverage_counts_what_espnet_would_map_to_unk(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\nh\ne\nl\no\n<space>\n<sos/eos>\n")
    text = tmp_path / "test" / "text"
    text.parent.mkdir()
    text.write_text("u1 hello\nu2 hölle oh\n")  # ö is not in the list; the space is
    proc = run("token_coverage.py", "--text", text, "--token_list", tokens, "--token_type", "char",
               "--out", tmp_path / "c.json")
    assert proc.returncode == 0
    assert proc.stderr.strip() == ("WARNING: test: 1 of 13 characters (7.69 %) are not in the token list and can never "
                                   "be recognised (ESPnet maps them to <unk>), e.g. 'ö' (1)")
    import json

    result = json.loads((tmp_path / "c.json").read_text())
    assert (result["tokens"], result["unknown"], result["examples"]) == (13, 1, [["ö", 1]])
    words = tmp_path / "words.txt"
    words.write_text("<blank>\n<unk>\nhello\n<sos/eos>\n")
    proc = run("token_coverage.py", "--text", text, "--token_list", words, "--token_type", "word", "--name", "dev")
    assert "WARNING: dev: 2 of 3 words (66.67 %)" in proc.stderr and "'hölle' (1), 'oh' (1)" in proc.stderr
    text.write_text("u1 hello hello\n")
    proc = run("token_coverage.py", "--text", text, "--token_list", words, "--token_type", "word")
    assert proc.returncode == 0 and "WARNING" not in proc.stderr and "all 2 words are in the token list" in proc.stderr


def test_token_coverage_with_a_bpe_model(tmp_path):
    rng = np.random.default_rng(0)
    vocab = "the cat sat on a mat and dog ran far away from home".split()
    train = tmp_path / "train_text"
    write(train, [f"u{i:03d} " + " ".join(rng.choice(vocab, 6)) for i in range(40)])
    assert run("make_token_list.py", "--text", train, "--token_type", "bpe", "--nbpe", "30",
               "--bpe_model_prefix", tmp_path / "bpe", "--output", tmp_path / "tokens.txt").returncode == 0
    text = tmp_path / "test" / "text"
    text.parent.mkdir()
    write(text, ["t1 the cat sat", "t2 the dog über"])  # 'ü' and 'b' never occur in the training text
    proc = run("token_coverage.py", "--text", text, "--token_list", tmp_path / "tokens.txt", "--token_type", "bpe",
               "--bpemodel", tmp_path / "bpe.model")
    assert proc.returncode == 0 and "WARNING: test: 1 of " in proc.stderr and "BPE pieces" in proc.stderr
    assert "'üb' (1)" in proc.stderr


def test_fixed_letter_inventory_keeps_letters_the_text_lacks_and_refuses_others(tmp_path):
    letters = REPO / "egs" / "librispeech" / "local" / "letters.txt"
    text = tmp_path / "text"
    write(text, ["u1 HELLO WORLD", "u2 IT'S ME"])  # a 10-minute subset need not hold every letter
    out = tmp_path / "tokens.txt"
    assert run("make_token_list.py", "--text", text, "--token_type", "char", "--inventory", letters,
               "--output", out).returncode == 0
    tokens = out.read_text().splitlines()
    assert tokens == ["<blank>", "<unk>", *letters.read_text().split(), "<sos/eos>"]
    assert {"Q", "Z", "X", "'", "<space>"} <= set(tokens) and len(tokens) == 31
    write(text, ["u1 HELLO WORLD", "u2 naïve, 2"])  # outside the inventory: an error, not a silent <unk>
    proc = run("make_token_list.py", "--text", text, "--token_type", "char", "--inventory", letters, "--output", out)
    assert proc.returncode != 0 and f"{text} has characters outside --inventory {letters}" in proc.stderr
    assert "'a' (1x)" in proc.stderr and "','" in proc.stderr
    proc = run("make_token_list.py", "--text", text, "--token_type", "bpe", "--inventory", letters, "--output", out)
    assert proc.returncode != 0 and "--inventory is for --token_type char" in proc.stderr


# ----------------------------------------------------------------------------------------------- issue 16


def test_pool_unlabelled_adds_every_file_with_speaker_folders_and_refuses_clashes(tmp_path):
    base = tmp_path / "data" / "train"
    base.mkdir(parents=True)
    (base / "wav.scp").write_text("a-1 /x/a1.wav\nb-1 /x/b1.wav\n")
    (base / "utt2spk").write_text("a-1 a\nb-1 b\n")
    (base / "text").write_text("a-1 one\nb-1 two\n")
    audio = tmp_path / "more"
    for rel in ("s1/c1/u1.flac", "s1/c1/u2.wav", "s2/u3.WAV", "top.wav", "s2/notes.txt"):
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio / rel).write_bytes(b"")
    out = tmp_path / "data" / "train_pooled"
    proc = run("pool_unlabelled.py", "--data_dir", base, "--audio_dir", audio, "--out_dir", out)
    assert proc.returncode == 0, proc.stderr
    wav = dict(line.split(maxsplit=1) for line in (out / "wav.scp").read_text().splitlines())
    assert wav == {"a-1": "/x/a1.wav", "b-1": "/x/b1.wav",
                   "extra0-s1-c1-u1": str(audio / "s1/c1/u1.flac"), "extra0-s1-c1-u2": str(audio / "s1/c1/u2.wav"),
                   "extra0-s2-u3": str(audio / "s2/u3.WAV"), "extra0-top-top": str(audio / "top.wav")}
    assert list(wav) == sorted(wav)
    assert "extra0-s1 extra0-s1-c1-u1 extra0-s1-c1-u2" in (out / "spk2utt").read_text()
    assert not (out / "text").exists()  # the pool is unlabelled
    assert run("validate_data_dir.py", "--no_audio", out).returncode == 0
    # the same folder twice gets its own prefix; an empty folder and a segmented data dir are refused
    assert run("pool_unlabelled.py", "--data_dir", base, "--audio_dir", audio, audio, "--out_dir", out).returncode == 0
    assert len((out / "wav.scp").read_text().splitlines()) == 2 + 2 * 4
    (tmp_path / "empty").mkdir()
    proc = run("pool_unlabelled.py", "--data_dir", base, "--audio_dir", tmp_path / "empty", "--out_dir", out)
    assert proc.returncode == 1 and f"--audio_dir {tmp_path / 'empty'}: no .wav or .flac files below it" in proc.stderr
    (base / "segments").write_text("a-1 a 0 1\n")
    proc = run("pool_unlabelled.py", "--data_dir", base, "--audio_dir", audio, "--out_dir", out)
    assert proc.returncode == 1 and "segments: a segmented data dir cannot be pooled" in proc.stderr
