#!/usr/bin/env python3
"""Make a letter lexicon for flashlight-text CTC decoding (``asr_inference.py --lexicon``).

    utils/make_lexicon.py --token_list data/token_list/char/tokens.txt --arpa 4-gram.arpa.gz \\
        --out data/lm/lexicon.txt --report data/lm/lexicon.json
    utils/make_lexicon.py --token_list data/token_list/char/tokens.txt --words vocab.txt --out lexicon.txt

Each word of the LM is spelled character by character in the tokens of an ESPnet char token list and
ends with the word boundary token (``--word_boundary_token``, ``<space>`` by default)::

    SEVEN S E V E N <space>

``--arpa`` reads the vocabulary from the ``\\1-grams:`` section of an ARPA file (plain or gzipped): the
file is streamed and reading stops when that section ends, so the 1.5 GB LibriSpeech 4-gram costs
seconds. ``<s>``, ``</s>`` and ``<unk>`` are left out. The header's ``ngram 1=`` count must match the
unigrams read. A KenLM binary LM holds no readable vocabulary: pass its ARPA file, or a word list with
``--words`` (one word a line, or ``<word> <count>``).

A word with a character that is not a token is left out (it could never be decoded); the count and a
few examples are printed as a WARNING and written to the ``--report`` JSON. Case is never changed:
the lexicon's words must be the LM's words, so a lowercase LM needs a lowercase token list (or an
uppercase LM). The output is sorted by word, UTF-8, and written atomically. Standard library only.
"""
from __future__ import annotations

import argparse
import codecs
import gzip
import json
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

PROG = "make_lexicon.py"
KENLM_MAGIC = b"mmap lm http://kheafield.com/code"
SPECIAL_WORDS = {"<s>", "</s>", "<unk>"}
NGRAM_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
SECTION = re.compile(r"^\\(\d+-grams:|end\\)$")
MAX_EXAMPLES = 10


class InputError(Exception):
    """An unusable input; the message names the file and what is wrong."""


def fail(message: str) -> SystemExit:
    return SystemExit(f"{PROG}: {message}")


# ------------------------------------------------------------------------------------------ reading
def _open_binary(path: Path):
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def sniff(path: Path, what: str) -> None:
    """Refuse a KenLM binary or a file that is not UTF-8 text, before reading it line by line."""
    if not path.is_file():
        raise InputError(f"{path} not found")
    try:
        with _open_binary(path) as f:
            head = f.read(4096)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path} cannot be read ({e})") from None
    if head.startswith(KENLM_MAGIC):
        hint = "pass --lexicon or an ARPA file" if what == "ARPA" else "pass a word list, one word a line"
        raise InputError(f"{path} is a KenLM binary, not {what}: {hint}")
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, head.index(b"\x00"), head.index(b"\x00") + 1, "NUL byte")
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text (a binary file?), not {what}") from None


def text_lines(path: Path):
    """(line number, line without its end) of a UTF-8 text file, plain or gzipped, streamed."""
    with _open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise InputError(f"{path} line {number} is not UTF-8 text") from None


def read_arpa_vocabulary(path: Path) -> list[str]:
    """The unigrams of an ARPA file, less <s>, </s> and <unk>; stops reading after the 1-gram section."""
    sniff(path, "ARPA")
    lines = text_lines(path)
    counts: dict[int, int] = {}
    state = "preamble"  # -> header -> between -> unigrams
    words: list[str] = []
    read = 0
    for number, line in lines:
        line = line.strip()
        if state == "preamble":  # the ARPA format ignores anything before \data\
            if line == "\\data\\":
                state = "header"
            elif SECTION.match(line):
                raise InputError(f"{path} line {number}: {line} before the \\data\\ header; not an ARPA file")
            continue
        if state == "header" and not line:
            if counts:
                state = "between"
            continue
        if state in ("header", "between") and line == "\\1-grams:":
            if 1 not in counts:
                raise InputError(f"{path}: the \\data\\ header has no 'ngram 1=' count")
            state = "unigrams"
            continue
        if state == "header":
            match = NGRAM_COUNT.match(line)
            if not match:
                raise InputError(f"{path} line {number}: expected 'ngram N=count' in the \\data\\ header, "
                                 f"got {line[:80]!r}")
            counts[int(match.group(1))] = int(match.group(2))
            continue
        if state == "between":
            if line:
                raise InputError(f"{path} line {number}: expected \\1-grams: after the \\data\\ header, "
                                 f"got {line[:80]!r}")
            continue
        # state == "unigrams"
        if not line:
            continue
        if SECTION.match(line):
            break
        fields = line.split()
        if len(fields) not in (2, 3):
            raise InputError(f"{path} line {number}: a 1-gram line is 'logprob word [backoff]', got {line[:80]!r}")
        try:
            for value in [fields[0]] + fields[2:]:
                float(value)
        except ValueError:
            raise InputError(f"{path} line {number}: a 1-gram line is 'logprob word [backoff]', "
                             f"got {line[:80]!r}") from None
        read += 1
        if fields[1].lower() not in SPECIAL_WORDS:
            words.append(fields[1])
    else:
        if state == "preamble":
            raise InputError(f"{path} has no \\data\\ header; not an ARPA file")
        if state != "unigrams":
            raise InputError(f"{path} has no \\1-grams: section")
        raise InputError(f"{path} ends inside the \\1-grams: section (truncated?)")
    lines.close()  # stop streaming: the higher-order sections are not needed
    if read != counts[1]:
        raise InputError(f"{path}: the header says 'ngram 1={counts[1]}' but the \\1-grams: section has "
                         f"{read} entries (truncated or edited file?)")
    return words


def read_word_list(path: Path) -> list[str]:
    """Words of a word list: one a line, or '<word> <count>'; <s>, </s> and <unk> are left out."""
    sniff(path, "a word list")
    words = []
    for number, line in text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not _is_number(fields[1])):
            raise InputError(f"{path} line {number}: expected '<word>' or '<word> <count>', got {line[:80]!r}")
        if fields[0].lower() not in SPECIAL_WORDS:
            words.append(fields[0])
    return words


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_token_list(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError(f"token list {path} not found")
    try:
        tokens = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    except UnicodeDecodeError:
        raise InputError(f"token list {path} is not UTF-8 text") from None
    if not tokens:
        raise InputError(f"token list {path} is empty")
    return tokens


# ----------------------------------------------------------------------------------------- spelling
def letters(tokens: list[str], boundary: str) -> set[str]:
    """Tokens a word can be spelled in: single characters (not <space>, <blank>, ...; not the boundary)."""
    return {t for t in tokens if len(t) == 1 and t != boundary and not t.isspace()}


def spell(word: str, alphabet: set[str]):
    """The word's tokens, or None when one of its characters is not a token."""
    return list(word) if all(ch in alphabet for ch in word) else None


def case_hint(skipped: list[str], alphabet: set[str]) -> str:
    """Say so when every skipped word would be spellable in the other case (the lexicon keeps the LM's)."""
    if not skipped:
        return ""
    for name, change in (("upper", str.upper), ("lower", str.lower)):
        if all(spell(change(w), alphabet) is not None for w in skipped):
            return (f"; all of them could be spelled if {name}-cased: the token list and the LM differ in case. "
                    f"Use a token list in the LM's case or an LM in the token list's case "
                    f"(the lexicon keeps the LM's words as they are, so it does not change case)")
    return ""


def build(words: list[str], tokens: list[str], boundary: str):
    """(lexicon lines sorted by word, skipped words sorted, missing characters counted)."""
    alphabet = letters(tokens, boundary)
    lines, skipped, missing = [], [], Counter()
    for word in sorted(set(words)):
        spelling = spell(word, alphabet)
        if spelling is None:
            skipped.append(word)
            missing.update(ch for ch in word if ch not in alphabet)
        else:
            lines.append(" ".join([word, *spelling, boundary]))
    return lines, skipped, missing


# ------------------------------------------------------------------------------------------ writing
def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token_list", required=True, type=Path, help="ESPnet char token list (tokens.txt)")
    parser.add_argument("--out", required=True, type=Path, help="lexicon to write")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--arpa", type=Path, help="ARPA LM (plain or .gz): its 1-grams are the words")
    source.add_argument("--words", type=Path, help="word list: one word a line, or '<word> <count>'")
    parser.add_argument("--word_boundary_token", default="<space>", help="token that ends every word")
    parser.add_argument("--report", type=Path, default=None, help="JSON summary to write")
    args = parser.parse_args(argv)

    src = args.arpa if args.arpa is not None else args.words
    try:
        tokens = read_token_list(args.token_list)
        if args.word_boundary_token not in tokens:
            raise InputError(f"the word boundary token {args.word_boundary_token!r} is not in the token list "
                             f"{args.token_list}; pass --word_boundary_token with one of its tokens "
                             f"(ESPnet char lists use <space>)")
        words = read_arpa_vocabulary(src) if args.arpa is not None else read_word_list(src)
    except InputError as e:
        raise fail(str(e)) from None
    if not words:
        raise fail(f"{src} has no words (besides <s>, </s>, <unk>)")

    lines, skipped, missing = build(words, tokens, args.word_boundary_token)
    report = {"words": len(lines) + len(skipped), "written": len(lines), "skipped": len(skipped),
              "skipped_examples": skipped[:MAX_EXAMPLES], "source": str(src)}
    if args.report is not None:
        write_atomically(args.report, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    alphabet = letters(tokens, args.word_boundary_token)
    hint = case_hint(skipped, alphabet)
    chars = ", ".join(f"{ch!r} ({n})" for ch, n in missing.most_common(MAX_EXAMPLES))
    if not lines:
        raise fail(f"none of the {len(skipped)} words of {src} can be spelled in the tokens of {args.token_list} "
                   f"(characters not in it: {chars}){hint or '; is the token list for this language/LM?'}")
    if skipped:
        examples = " ".join(skipped[:MAX_EXAMPLES])
        print(f"WARNING: {PROG}: {len(skipped)} of {report['words']} words of {src} left out of the lexicon: "
              f"characters not in the token list ({chars}), e.g. {examples}{hint}", file=sys.stderr)
    write_atomically(args.out, "".join(line + "\n" for line in lines))
    print(f"{PROG}: {len(lines)} words -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
