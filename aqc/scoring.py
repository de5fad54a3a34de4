"""Kaldi-free WER/CER scoring: Levenshtein alignment, Kaldi-style text files, summaries.

Conventions (tested in ``tests/test_scoring.py``):

* **Alignment.** A minimum-edit-distance alignment with unit costs. Among the alignments of minimum
  cost, the backtrace prefers correct/substitution, then deletion, then insertion, so the counts are
  deterministic; their sum ``sub + del + ins`` always equals the edit distance (``editdistance`` is
  used as a fast path for the distance alone, and agrees).
* **WER** tokens are whitespace-separated words. **CER** tokens are Unicode code points of the words,
  with whitespace *excluded*: CER then measures spelling alone, and word-boundary errors (``to day`` vs
  ``today``) show in the WER only. (ESPnet's CER counts spaces as a ``<space>`` token, so its CER is
  lower on the same output; compare like with like.) Code points, not grapheme clusters, as in Kaldi
  and ESPnet: a Devanagari consonant plus vowel sign counts as two characters.
* **Unicode.** Texts are NFC-normalised by default, so that a precomposed ``ü`` and ``u`` + combining
  diaeresis compare equal; this only merges canonically equivalent encodings (``nfc=False`` turns it off).
  Upper-casing and punctuation removal are off by default.
* **Empty reference.** With zero reference tokens the rate is 0 if there are no errors (the hypothesis
  is empty too) and ``inf`` otherwise (every error is an insertion); ``scores.json`` writes ``null`` for
  an infinite rate, since JSON has no infinity. Kaldi's ``compute-wer`` divides by zero there.
* **Missing hypotheses.** A reference utterance without a hypothesis is scored against an empty
  hypothesis (all deletions) and listed; a hypothesis id that is not in the reference is an error.
  ``python -m aqc.bin.score --require_all true`` (the recipes) makes a missing hypothesis an error too.
* **Encoding.** Text files are UTF-8; a line that is not is an error naming the file and line.
"""
from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

try:  # C implementation of the distance alone; the alignment below is our own.
    import editdistance as _editdistance
except ImportError:  # pragma: no cover - editdistance is a declared requirement
    _editdistance = None

PathLike = Union[str, os.PathLike]
Pair = Tuple[Optional[str], Optional[str]]  # (ref token or None for an insertion, hyp token or None)
GAP = "***"

# Backtrace moves, in order of preference among equal-cost predecessors.
_DIAG, _UP, _LEFT = 0, 1, 2  # UP: deletion (ref token, no hyp); LEFT: insertion


@dataclass
class ErrorCounts:
    """Token counts of one alignment, or a sum of them."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    cor: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def hyp_len(self) -> int:
        return self.cor + self.sub + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent; see the module docstring for an empty reference."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else math.inf
        return 100.0 * self.errors / self.ref_len

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(
            self.sub + other.sub,
            self.dele + other.dele,
            self.ins + other.ins,
            self.cor + other.cor,
            self.ref_len + other.ref_len,
        )

    def to_dict(self) -> Dict[str, object]:
        rate = self.rate
        return {
            "rate": None if math.isinf(rate) else round(rate, 4),
            "errors": self.errors,
            "sub": self.sub,
            "del": self.dele,
            "ins": self.ins,
            "cor": self.cor,
            "ref_len": self.ref_len,
            "hyp_len": self.hyp_len,
        }


@dataclass
class Alignment:
    pairs: List[Pair]
    counts: ErrorCounts


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (``editdistance`` when installed)."""
    if _editdistance is not None:
        return int(_editdistance.eval(list(ref), list(hyp)))
    return align(ref, hyp).counts.errors


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Minimum-edit-distance alignment of ``ref`` and ``hyp`` with its counts."""
    # Matching a common prefix/suffix is always part of some optimal alignment; trimming it keeps the
    # quadratic table small for the usual mostly-correct hypothesis (character alignments are long).
    head = 0
    while head < len(ref) and head < len(hyp) and ref[head] == hyp[head]:
        head += 1
    tail = 0
    while tail < len(ref) - head and tail < len(hyp) - head and ref[-1 - tail] == hyp[-1 - tail]:
        tail += 1
    middle = _align_dp(ref[head : len(ref) - tail], hyp[head : len(hyp) - tail])
    prefix = [(t, t) for t in ref[:head]]
    suffix = [(t, t) for t in ref[len(ref) - tail :]]
    counts = middle.counts + ErrorCounts(cor=head + tail, ref_len=head + tail)
    return Alignment(prefix + middle.pairs + suffix, counts)


def _align_dp(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    n, m = len(ref), len(hyp)
    # Full cost table: utterances are short, and the backtrace needs it. The inner loop avoids min()
    # and indexing, which dominate the run time of character alignments in pure Python.
    cost = [list(range(m + 1))]
    for i in range(1, n + 1):
        prev = cost[-1]
        r = ref[i - 1]
        row = [i]
        left = i
        for j, h in enumerate(hyp):
            best = prev[j] if r == h else prev[j] + 1
            up = prev[j + 1] + 1
            if up < best:
                best = up
            if left + 1 < best:
                best = left + 1
            row.append(best)
            left = best
        cost.append(row)
    pairs: List[Pair] = []
    counts = ErrorCounts(ref_len=n)
    i, j = n, m
    while i > 0 or j > 0:
        move = _best_move(cost, ref, hyp, i, j)
        if move == _DIAG:
            i, j = i - 1, j - 1
            pairs.append((ref[i], hyp[j]))
            if ref[i] == hyp[j]:
                counts.cor += 1
            else:
                counts.sub += 1
        elif move == _UP:
            i -= 1
            pairs.append((ref[i], None))
            counts.dele += 1
        else:
            j -= 1
            pairs.append((None, hyp[j]))
            counts.ins += 1
    pairs.reverse()
    return Alignment(pairs, counts)


def _best_move(cost: List[List[int]], ref: Sequence[str], hyp: Sequence[str], i: int, j: int) -> int:
    here = cost[i][j]
    if i > 0 and j > 0 and cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]) == here:
        return _DIAG
    if i > 0 and cost[i - 1][j] + 1 == here:
        return _UP
    return _LEFT


# ---------------------------------------------------------------------------------------------------
# Text handling
# ---------------------------------------------------------------------------------------------------


@dataclass
class Normalization:
    """Text normalisation applied to reference and hypothesis alike before tokenising."""

    upper: bool = False
    remove_punct: bool = False
    nfc: bool = True

    def __call__(self, text: str) -> str:
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        if self.remove_punct:
            text = remove_punctuation(text)
        if self.upper:
            text = text.upper()
        return " ".join(text.split())


def remove_punctuation(text: str) -> str:
    """Drop Unicode punctuation (categories P*), but keep apostrophes inside words (``don't``).

    Punctuation is replaced by a space, so ``end.Start`` becomes two words rather than one.
    """
    out = []
    for k, ch in enumerate(text):
        if not unicodedata.category(ch).startswith("P"):
            out.append(ch)
        elif ch in "'\u2019" and 0 < k < len(text) - 1 and text[k - 1].isalnum() and text[k + 1].isalnum():
            out.append(ch)
        else:
            out.append(" ")
    return "".join(out)


def words(text: str) -> List[str]:
    return text.split()


def chars(text: str) -> List[str]:
    """Code points of the words, whitespace excluded (see the module docstring)."""
    return [c for w in text.split() for c in w]


def read_text_file(path: PathLike) -> Dict[str, str]:
    """Read a Kaldi-style ``<utt-id> <transcript>`` file (UTF-8); a transcript may be empty.

    A line that is not UTF-8 is a ``ValueError`` naming the file, the line and the fix."""
    texts: Dict[str, str] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); re-encode the "
                    f"file as UTF-8, e.g. iconv -f LATIN1 -t UTF-8 {path} > {path}.utf8 (with the file's real encoding)"
                ) from None
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            if key in texts:
                raise ValueError(
                    f"{path}:{lineno}: duplicate utterance id {key!r}; keep one line per utterance "
                    f"(utils/fix_data_dir.py removes duplicates)"
                )
            texts[key] = parts[1] if len(parts) > 1 else ""
    return texts


# ---------------------------------------------------------------------------------------------------
# Scoring a set of utterances
# ---------------------------------------------------------------------------------------------------


@dataclass
class UttScore:
    utt: str
    ref: str
    hyp: str
    missing: bool
    word: Alignment
    char: Alignment


@dataclass
class SetScore:
    utts: List[UttScore]
    missing: List[str]
    normalization: Normalization = field(default_factory=Normalization)

    @property
    def word(self) -> ErrorCounts:
        return sum((u.word.counts for u in self.utts), ErrorCounts())

    @property
    def char(self) -> ErrorCounts:
        return sum((u.char.counts for u in self.utts), ErrorCounts())

    @property
    def sentence_errors(self) -> int:
        return sum(1 for u in self.utts if u.word.counts.errors > 0)

    @property
    def num_utts(self) -> int:
        return len(self.utts)


def score(
    refs: Dict[str, str],
    hyps: Dict[str, str],
    normalization: Optional[Normalization] = None,
) -> SetScore:
    """Score every reference utterance; missing hypotheses count as empty (all deletions)."""
    norm = normalization or Normalization()
    extra = sorted(set(hyps) - set(refs))
    if extra:
        shown = ", ".join(extra[:10]) + (f", ... ({len(extra)} in all)" if len(extra) > 10 else "")
        raise ValueError(
            f"{len(extra)} hypothesis utterance id(s) are not in the reference: {shown}. "
            f"Decode the same data directory the reference text comes from, or remove them."
        )
    utts, missing = [], []
    for utt in sorted(refs, key=lambda k: k.encode("utf-8")):
        ref = norm(refs[utt])
        is_missing = utt not in hyps
        if is_missing:
            missing.append(utt)
        hyp = "" if is_missing else norm(hyps[utt])
        utts.append(UttScore(utt, ref, hyp, is_missing, align(words(ref), words(hyp)), align(chars(ref), chars(hyp))))
    return SetScore(utts, missing, norm)


def score_files(ref_path: PathLike, hyp_path: PathLike, normalization: Optional[Normalization] = None) -> SetScore:
    return score(read_text_file(ref_path), read_text_file(hyp_path), normalization)


# ---------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------


def format_rate(rate: float) -> str:
    return "inf" if math.isinf(rate) else f"{rate:.2f}"


def summary_line(name: str, counts: ErrorCounts) -> str:
    """Kaldi ``compute-wer`` style: ``%WER 12.34 [ 12 / 100, 3 ins, 4 del, 5 sub ]``."""
    return (
        f"%{name} {format_rate(counts.rate)} [ {counts.errors} / {counts.ref_len}, "
        f"{counts.ins} ins, {counts.dele} del, {counts.sub} sub ]"
    )


def summary_text(result: SetScore, unit: str) -> str:
    counts = result.word if unit == "word" else result.char
    name = "WER" if unit == "word" else "CER"
    n = result.num_utts
    ser = 100.0 * result.sentence_errors / n if n else 0.0
    return (
        summary_line(name, counts)
        + f"\n%SER {ser:.2f} [ {result.sentence_errors} / {n} ]"
        + f"\nScored {n} sentences, {len(result.missing)} not present in hyp.\n"
    )


def _display_width(token: str) -> int:
    """Terminal columns of ``token``: combining marks take none, wide (CJK) characters two."""
    width = 0
    for ch in token:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(token: str, width: int) -> str:
    return token + " " * (width - _display_width(token))


def alignment_lines(alignment: Alignment) -> Tuple[str, str, str]:
    """REF/HYP/EVAL lines, columns padded to the same width, ``***`` for gaps."""
    refs, hyps, evals = [], [], []
    for r, h in alignment.pairs:
        rt, ht = r if r is not None else GAP, h if h is not None else GAP
        op = "I" if r is None else "D" if h is None else "" if r == h else "S"
        width = max(_display_width(rt), _display_width(ht), len(op))
        refs.append(_pad(rt, width))
        hyps.append(_pad(ht, width))
        evals.append(_pad(op, width))
    return (
        ("REF:  " + " ".join(refs)).rstrip(),
        ("HYP:  " + " ".join(hyps)).rstrip(),
        ("EVAL: " + " ".join(evals)).rstrip(),
    )


def alignments_text(result: SetScore, unit: str) -> str:
    blocks = []
    for u in result.utts:
        a = u.word if unit == "word" else u.char
        c = a.counts
        ref_line, hyp_line, eval_line = alignment_lines(a)
        note = "  (no hypothesis: scored as all deletions)" if u.missing else ""
        blocks.append(
            f"id: {u.utt}{note}\n{ref_line}\n{hyp_line}\n{eval_line}\n"
            f"Scores: (#C #S #D #I) {c.cor} {c.sub} {c.dele} {c.ins}  "
            f"{'WER' if unit == 'word' else 'CER'} {format_rate(c.rate)} [ {c.errors} / {c.ref_len} ]\n"
        )
    return "\n".join(blocks)


def scores_dict(result: SetScore, ref_path: Optional[PathLike] = None, hyp_path: Optional[PathLike] = None) -> Dict:
    return {
        "ref": None if ref_path is None else str(ref_path),
        "hyp": None if hyp_path is None else str(hyp_path),
        "normalization": asdict(result.normalization),
        "cer_tokens": "unicode code points, whitespace excluded",
        "num_utts": result.num_utts,
        "num_missing": len(result.missing),
        "missing_utts": result.missing,
        "sentence_errors": result.sentence_errors,
        "wer": result.word.to_dict(),
        "cer": result.char.to_dict(),
        "per_utt": {
            u.utt: {"missing": u.missing, "wer": u.word.counts.to_dict(), "cer": u.char.counts.to_dict()}
            for u in result.utts
        },
    }


def write_reports(
    result: SetScore,
    out_dir: PathLike,
    ref_path: Optional[PathLike] = None,
    hyp_path: Optional[PathLike] = None,
) -> Dict[str, Path]:
    """Write ``wer.txt``, ``cer.txt``, ``alignments.txt`` (words), ``alignments_char.txt``, ``scores.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "wer": out / "wer.txt",
        "cer": out / "cer.txt",
        "alignments": out / "alignments.txt",
        "alignments_char": out / "alignments_char.txt",
        "scores": out / "scores.json",
    }
    files["wer"].write_text(summary_text(result, "word"), encoding="utf-8")
    files["cer"].write_text(summary_text(result, "char"), encoding="utf-8")
    files["alignments"].write_text(alignments_text(result, "word"), encoding="utf-8")
    files["alignments_char"].write_text(alignments_text(result, "char"), encoding="utf-8")
    with open(files["scores"], "w", encoding="utf-8") as f:
        json.dump(scores_dict(result, ref_path, hyp_path), f, ensure_ascii=False, indent=1)
        f.write("\n")
    return files


def write_trn(texts: Iterable[Tuple[str, str]], path: PathLike) -> None:
    """sclite's ``trn`` format: ``<transcript> (<utt-id>)`` per line."""
    with open(path, "w", encoding="utf-8") as f:
        for utt, text in texts:
            f.write(f"{text} ({utt})\n")
