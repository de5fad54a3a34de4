"""utils/make_lexicon.py: a letter lexicon from an ARPA LM's 1-grams (or a word list) for flashlight-text."""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "utils" / "make_lexicon.py"
LETTERS = "EOTAHINSRDLUMWCFGYPBVK'XJQZ"


def load_script():
    spec = importlib.util.spec_from_file_location("make_lexicon", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args) -> int:
    """The script's main() in this process."""
    return load_script().main([str(a) for a in args])


def fails(*args) -> str:
    """The message of the SystemExit the script stops with (a non-zero exit)."""
    with pytest.raises(SystemExit) as stop:
        run(*args)
    assert stop.value.code not in (0, None)
    return str(stop.value)


def token_list(path: Path, letters: str = LETTERS) -> Path:
    """An ESPnet char token list: <blank>, <unk>, <space>, the letters, <sos/eos>."""
    path.write_text("\n".join(["<blank>", "<unk>", "<space>", *letters, "<sos/eos>"]) + "\n", encoding="utf-8")
    return path


def arpa_text(words, bigrams=(), count1=None) -> str:
    uni = ["-1.0\t</s>", "-99\t<s>\t-0.5", "-2.0\t<unk>"] + [f"{-1.0 - i / 10:.2f}\t{w}\t-0.3"
                                                           for i, w in enumerate(words)]
    bi = [f"-0.2\t{a} {b}" for a, b in bigrams] or ["-0.2\t<s> </s>"]
    return "\n".join(["\\data\\", f"ngram 1={len(uni) if count1 is None else count1}", f"ngram 2={len(bi)}", "",
                      "\\1-grams:", *uni, "", "\\2-grams:", *bi, "", "\\end\\", ""])


def write_arpa(path: Path, words, bigrams=(), count1=None) -> Path:
    text = arpa_text(words, bigrams, count1)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


WORDS = ["SEVEN", "HI", "YOU", "DON'T", "CAFÉ", "NAÏVE", "A"]


def test_arpa_lexicon_lines_skips_and_report(tmp_path, capsys):
    tokens, arpa = token_list(tmp_path / "tokens.txt"), write_arpa(tmp_path / "lm.arpa", WORDS)
    out, report = tmp_path / "lex" / "lexicon.txt", tmp_path / "lex" / "lexicon.json"
    assert run("--token_list", tokens, "--arpa", arpa, "--out", out, "--report", report) == 0
    assert out.read_text(encoding="utf-8").splitlines() == [
        "A A <space>",
        "DON'T D O N ' T <space>",
        "HI H I <space>",
        "SEVEN S E V E N <space>",
        "YOU Y O U <space>",
    ]
    assert json.loads(report.read_text(encoding="utf-8")) == {
        "words": 7, "written": 5, "skipped": 2, "skipped_examples": ["CAFÉ", "NAÏVE"], "source": str(arpa)}
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "2 of 7 words" in warning[0] and "CAFÉ NAÏVE" in warning[0]
    assert "'É'" in warning[0] and "upper" not in warning[0]
    assert [p.name for p in out.parent.iterdir()] and not list(out.parent.glob(".*.tmp"))


def test_gz_arpa_and_other_boundary_token(tmp_path):
    tokens = token_list(tmp_path / "tokens.txt", LETTERS + "|")
    arpa = write_arpa(tmp_path / "lm.arpa.gz", ["YOU", "HI", "A|B"])
    out = tmp_path / "lexicon.txt"
    assert run("--token_list", tokens, "--arpa", arpa, "--out", out, "--word_boundary_token", "|") == 0
    # the boundary token is not a letter: a word containing it cannot be spelled
    assert out.read_text().splitlines() == ["HI H I |", "YOU Y O U |"]


def test_reading_stops_after_the_unigrams(tmp_path):
    """Nothing after the 1-gram section is read (a 1.5 GB 4-gram is streamed, not loaded)."""
    arpa = tmp_path / "lm.arpa"
    words = ["HI"] + [f"W{i}" for i in range(1000)]  # past the first 4 KB that are checked for text
    head = arpa_text(words).split("\\2-grams:")[0].encode()
    assert len(head) > 8192
    arpa.write_bytes(head + b"\\2-grams:\n\xff\xfe\x00 garbage\n")
    out = tmp_path / "lexicon.txt"
    assert run("--token_list", token_list(tmp_path / "tokens.txt"), "--arpa", arpa, "--out", out) == 0
    assert out.read_text().splitlines() == ["HI H I <space>"]


def test_header_count_mismatch(tmp_path):
    arpa = write_arpa(tmp_path / "lm.arpa", ["HI", "YOU"], count1=6)
    out = tmp_path / "lexicon.txt"
    message = fails("--token_list", token_list(tmp_path / "tokens.txt"), "--arpa", arpa, "--out", out)
    assert str(arpa) in message and "ngram 1=6" in message and "5 entries" in message
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [
    ("hello world\n", "no \\data\\ header"),
    ("ngram 1=2\n\n\\1-grams:\n-1\tHI\n", "before the \\data\\ header"),
    ("\\data\\\nngram 2=1\n\n\\1-grams:\n-1\tHI\n", "no 'ngram 1=' count"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-1\tHI\n-1\tYOU\n", "truncated"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\nHI\n\\end\\\n", "logprob word"),
])
def test_malformed_arpa(tmp_path, text, expected):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text(text)
    message = fails("--token_list", token_list(tmp_path / "tokens.txt"), "--arpa", arpa,
                    "--out", tmp_path / "lexicon.txt")
    assert str(arpa) in message and expected in message


def test_kenlm_binary_and_non_text_are_refused(tmp_path):
    tokens = token_list(tmp_path / "tokens.txt")
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\x00\x00\x01\x02" + bytes(range(256)))
    message = fails("--token_list", tokens, "--arpa", binary, "--out", tmp_path / "lexicon.txt")
    assert message.count("\n") == 0
    assert str(binary) in message and "is a KenLM binary, not ARPA: pass --lexicon or an ARPA file" in message
    other = tmp_path / "lm.dat"
    other.write_bytes(b"\x00\x01\x02\xff" * 100)
    message = fails("--token_list", tokens, "--arpa", other, "--out", tmp_path / "lexicon.txt")
    assert str(other) in message and "not UTF-8 text" in message


def test_word_list(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("YOU 12\nHI\n\n<unk> 3\nHI 4\nCAFÉ 1\n", encoding="utf-8")
    out, report = tmp_path / "lexicon.txt", tmp_path / "report.json"
    assert run("--token_list", token_list(tmp_path / "tokens.txt"), "--words", words, "--out", out,
               "--report", report) == 0
    assert out.read_text().splitlines() == ["HI H I <space>", "YOU Y O U <space>"]
    assert json.loads(report.read_text()) == {"words": 3, "written": 2, "skipped": 1,
                                              "skipped_examples": ["CAFÉ"], "source": str(words)}
    words.write_text("HI THERE YOU\n")
    assert "expected '<word>' or '<word> <count>'" in fails(
        "--token_list", tmp_path / "tokens.txt", "--words", words, "--out", out)


def test_all_skipped_lowercase_lm(tmp_path):
    arpa = write_arpa(tmp_path / "lm.arpa", ["hi", "you", "don't"])
    out, report = tmp_path / "lexicon.txt", tmp_path / "report.json"
    message = fails("--token_list", token_list(tmp_path / "tokens.txt"), "--arpa", arpa, "--out", out,
                    "--report", report)
    assert "none of the 3 words" in message and "upper-cased" in message and "case" in message
    assert not out.exists()
    assert json.loads(report.read_text())["written"] == 0


def test_some_skipped_only_by_case_warns_with_hint(tmp_path, capsys):
    arpa = write_arpa(tmp_path / "lm.arpa", ["HI", "you"])
    out = tmp_path / "lexicon.txt"
    assert run("--token_list", token_list(tmp_path / "tokens.txt"), "--arpa", arpa, "--out", out) == 0
    assert out.read_text().splitlines() == ["HI H I <space>"]
    assert "upper-cased" in capsys.readouterr().err


def test_boundary_token_not_in_token_list(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<blank>\n<unk>\nH\nI\n<sos/eos>\n")
    message = fails("--token_list", tokens, "--arpa", write_arpa(tmp_path / "lm.arpa", ["HI"]),
                    "--out", tmp_path / "lexicon.txt")
    assert "'<space>' is not in the token list" in message


def test_command_line(tmp_path):
    tokens, arpa = token_list(tmp_path / "tokens.txt"), write_arpa(tmp_path / "lm.arpa", ["hi"])
    proc = subprocess.run([sys.executable, str(SCRIPT), "--token_list", str(tokens), "--arpa", str(arpa),
                           "--out", str(tmp_path / "lexicon.txt")], capture_output=True, text=True)
    assert proc.returncode != 0 and "make_lexicon.py: none of the 1 words" in proc.stderr


def test_flashlight_decodes_with_the_lexicon(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (KenLM decoding) not installed")
    import torch
    from torchaudio.models.decoder import ctc_decoder

    tokens = token_list(tmp_path / "tokens.txt")
    arpa = write_arpa(tmp_path / "lm.arpa", ["HI", "YOU", "HIS", "YOUR", "CAFÉ"],
                      bigrams=[("<s>", "HI"), ("HI", "YOU"), ("YOU", "</s>")])
    lexicon = tmp_path / "lexicon.txt"
    assert run("--token_list", tokens, "--arpa", arpa, "--out", lexicon) == 0
    token_names = tokens.read_text().splitlines()
    # frames spelling "HI <space> YOU", blanks between letters
    path = ["H", "<blank>", "I", "<blank>", "<space>", "Y", "<blank>", "O", "O", "U", "<blank>"]
    logits = torch.full((1, len(path), len(token_names)), -8.0)
    for t, name in enumerate(path):
        logits[0, t, token_names.index(name)] = 0.0
    emissions = torch.log_softmax(logits, dim=-1)
    decoder = ctc_decoder(lexicon=str(lexicon), tokens=str(tokens), lm=str(arpa), nbest=1, beam_size=20,
                          lm_weight=0.5, word_score=0.0, blank_token="<blank>", sil_token="<space>",
                          unk_word="<unk>")
    hyp = decoder(emissions, torch.tensor([len(path)], dtype=torch.int32))[0][0]
    assert list(hyp.words) == ["HI", "YOU"]
    assert math.isfinite(float(hyp.score))
