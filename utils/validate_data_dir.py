#!/usr/bin/env python3
"""Check a Kaldi-style data directory and report every problem at once.

    utils/validate_data_dir.py [--no_audio] [--require text] [--nj 4] [--min_samples 400] [--sample_rate 16000] \
        data/train

Files: ``wav.scp`` (required, ``<rec-id> <path>``), and, if present (or named by ``--require``), ``text``,
``utt2spk``, ``spk2utt``, ``utt2num_samples`` and ``segments`` (``<utt-id> <rec-id> <start-s> <end-s>``;
then ``wav.scp`` is keyed by recording). Checks: one entry per key, keys sorted in C-locale byte order
(``LC_ALL=C sort``), the same utterance set in every utterance-keyed file, ``utt2spk``/``spk2utt`` agreeing, and (unless
``--no_audio``) every audio file readable by soundfile, long enough, finite, not all zeros, mono and at
``--sample_rate``. Pipes (``cmd |``) in ``wav.scp`` are not supported (aqc reads audio with soundfile).

Each problem is printed as ``ERROR|WARNING [code] <file>: <key>: <what>. Fix: <how>``; the exit status
is 1 if there is any error (or any warning with ``--warnings_as_errors true``), else 0. Other scripts
in utils/ import the table helpers from here.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ERROR, WARNING = "ERROR", "WARNING"
UTT_FILES = ("text", "utt2spk", "utt2num_samples")  # keyed by utterance, besides segments/wav.scp
FIX_DIR = "run utils/fix_data_dir.py {dir} (sorts, drops duplicates and utterances missing from any file)"


@dataclass
class Problem:
    level: str
    code: str
    file: str
    key: Optional[str]
    message: str
    fix: str

    def format(self) -> str:
        where = f"{self.file}: {self.key}" if self.key is not None else self.file
        return f"{self.level} [{self.code}] {where}: {self.message.rstrip('.')}. Fix: {self.fix}"


@dataclass
class Entry:
    lineno: int
    key: str
    value: str


@dataclass
class Report:
    problems: List[Problem] = field(default_factory=list)

    def add(self, level: str, code: str, file: Path, key: Optional[str], message: str, fix: str) -> None:
        self.problems.append(Problem(level, code, str(file), key, message, fix))

    def count(self, level: str) -> int:
        return sum(1 for p in self.problems if p.level == level)


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "yes", "1"):
        return True
    if value.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# Table helpers (also used by fix_data_dir.py, get_utt2num_samples.py, utt2spk_to_spk2utt.py)
# ---------------------------------------------------------------------------------------------------


def c_key(key: str) -> bytes:
    """Sort key of C-locale order (``LC_ALL=C sort``): UTF-8 bytes."""
    return key.encode("utf-8")


def read_entries(path: Path) -> List[Entry]:
    """``<key> <value>`` lines in file order (blank lines skipped); the value may be empty."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            entries.append(Entry(lineno, parts[0], parts[1] if len(parts) > 1 else ""))
    return entries


def read_table(path: Path) -> Dict[str, str]:
    """``key -> value``; on duplicate keys the first line wins (the checker reports duplicates)."""
    return first_wins(read_entries(path))


def first_wins(entries: Sequence[Entry]) -> Dict[str, str]:
    """``key -> value`` in file order; of duplicate keys the first line counts."""
    table: Dict[str, str] = {}
    for e in entries:
        table.setdefault(e.key, e.value)
    return table


def write_table(path: Path, table: Dict[str, str]) -> None:
    """Write ``key value`` lines sorted in C-locale byte order (empty values leave just the key)."""
    with open(path, "w", encoding="utf-8") as f:
        for key in sorted(table, key=c_key):
            value = table[key]
            f.write(f"{key} {value}\n" if value else f"{key}\n")


def spk2utt_from_utt2spk(utt2spk: Dict[str, str]) -> Dict[str, List[str]]:
    spk2utt: Dict[str, List[str]] = defaultdict(list)
    for utt in sorted(utt2spk, key=c_key):
        spk2utt[utt2spk[utt]].append(utt)
    return dict(spk2utt)


def is_pipe(value: str) -> bool:
    return value.rstrip().endswith("|")


# ---------------------------------------------------------------------------------------------------
# Table checks
# ---------------------------------------------------------------------------------------------------


def check_order(path: Path, entries: Sequence[Entry], data_dir: Path, report: Report) -> None:
    """Duplicate keys (each one) and unsorted keys (one problem per file, with examples)."""
    counts = Counter(e.key for e in entries)
    for key, n in counts.items():
        if n > 1:
            lines = [str(e.lineno) for e in entries if e.key == key]
            report.add(ERROR, "duplicate-key", path, key, f"appears {n} times (lines {', '.join(lines)})",
                       f"keep one line per key; {FIX_DIR.format(dir=data_dir)}")
    out_of_order = [
        (prev, cur) for prev, cur in zip(entries, entries[1:]) if c_key(cur.key) < c_key(prev.key)
    ]
    if out_of_order:
        prev, cur = out_of_order[0]
        report.add(
            ERROR, "unsorted", path, cur.key,
            f"keys are not sorted in C-locale byte order: {cur.key!r} (line {cur.lineno}) comes after "
            f"{prev.key!r} (line {prev.lineno}); {len(out_of_order)} such place(s) in the file",
            f"LC_ALL=C sort -k1,1 {path} -o {path}, or {FIX_DIR.format(dir=data_dir)}",
        )


def check_values(name: str, path: Path, entries: Sequence[Entry], report: Report) -> None:
    """Per-line format of the files whose value has a fixed shape."""
    for e in entries:
        if name in ("wav.scp", "utt2spk", "spk2utt") and not e.value:
            report.add(ERROR, "bad-line", path, e.key, f"line {e.lineno} has a key but no value",
                       f"write '<key> <{'path' if name == 'wav.scp' else 'value'}>' or delete the line")
        elif name == "text" and not e.value:
            report.add(WARNING, "empty-text", path, e.key, f"line {e.lineno}: empty transcript",
                       "check the transcript; delete the utterance if it has none")
        elif name == "utt2num_samples" and not _is_int(e.value):
            report.add(ERROR, "bad-line", path, e.key, f"line {e.lineno}: {e.value!r} is not a sample count",
                       f"regenerate it: utils/get_utt2num_samples.py {path.parent}")
        elif name == "segments":
            _check_segment_line(path, e, report)


def _is_int(value: str) -> bool:
    try:
        return int(value) >= 0
    except ValueError:
        return False


def parse_segment(value: str) -> Optional[Tuple[str, float, float]]:
    """``<rec-id> <start> <end>`` -> (rec, start, end), or None if malformed; end -1 means 'to the end'."""
    parts = value.split()
    if len(parts) != 3:
        return None
    try:
        start, end = float(parts[1]), float(parts[2])
    except ValueError:
        return None
    return parts[0], start, end


def _check_segment_line(path: Path, e: Entry, report: Report) -> None:
    seg = parse_segment(e.value)
    if seg is None:
        report.add(ERROR, "bad-line", path, e.key, f"line {e.lineno}: expected '<utt> <rec> <start> <end>'",
                   "write start and end times in seconds")
        return
    _, start, end = seg
    if start < 0 or (end != -1 and end <= start):
        report.add(ERROR, "bad-segment", path, e.key, f"start {start} / end {end} is not a valid time span",
                   "use 0 <= start < end (or end -1 for the end of the recording)")


def check_key_sets(
    utt_keys: Sequence[str], utt_source: Path, tables: Dict[str, Dict[str, str]], data_dir: Path, report: Report
) -> None:
    """Every utterance-keyed file has exactly the utterances of wav.scp (or segments)."""
    reference = set(utt_keys)
    for name in UTT_FILES:
        if name not in tables:
            continue
        path = data_dir / name
        keys = set(tables[name])
        for key in sorted(reference - keys, key=c_key):
            report.add(ERROR, "key-mismatch", path, key, f"utterance in {utt_source.name} but not in {name}",
                       f"add it to {name}, or {FIX_DIR.format(dir=data_dir)}")
        for key in sorted(keys - reference, key=c_key):
            report.add(ERROR, "key-mismatch", path, key, f"utterance in {name} but not in {utt_source.name}",
                       f"add it to {utt_source.name}, or {FIX_DIR.format(dir=data_dir)}")


def check_segments_recordings(
    segments: Dict[str, str], wav: Dict[str, str], data_dir: Path, report: Report
) -> None:
    used = set()
    for utt, value in segments.items():
        seg = parse_segment(value)
        if seg is None:
            continue
        used.add(seg[0])
        if seg[0] not in wav:
            report.add(ERROR, "key-mismatch", data_dir / "segments", utt,
                       f"recording {seg[0]!r} is not in wav.scp",
                       f"add the recording to wav.scp, or {FIX_DIR.format(dir=data_dir)}")
    for rec in sorted(set(wav) - used, key=c_key):
        report.add(WARNING, "unused-recording", data_dir / "wav.scp", rec, "no segment uses this recording",
                   f"remove it from wav.scp, or {FIX_DIR.format(dir=data_dir)}")


def check_speakers(
    utt2spk: Dict[str, str], spk2utt_entries: Optional[Sequence[Entry]], data_dir: Path, report: Report
) -> None:
    """spk2utt must be utt2spk inverted; utterances should sort by speaker too (Kaldi's convention)."""
    regen = f"utils/utt2spk_to_spk2utt.py {data_dir}/utt2spk > {data_dir}/spk2utt"
    by_utt = sorted(utt2spk, key=c_key)
    by_spk = sorted(utt2spk, key=lambda u: (c_key(utt2spk[u]), c_key(u)))
    if by_utt != by_spk:
        first = next(u for u, v in zip(by_utt, by_spk) if u != v)
        report.add(WARNING, "speaker-order", data_dir / "utt2spk", first,
                   "sorting by utterance does not also sort by speaker (Kaldi tools expect it)",
                   "make the speaker id a prefix of the utterance id, e.g. <spk>-<utt>")
    if spk2utt_entries is None:
        return
    spk2utt_path = data_dir / "spk2utt"
    seen: Dict[str, str] = {}
    for e in spk2utt_entries:
        for utt in e.value.split():
            if utt in seen:
                report.add(ERROR, "spk2utt-mismatch", spk2utt_path, utt,
                           f"listed under speaker {seen[utt]!r} and again under {e.key!r}", regen)
                continue
            seen[utt] = e.key
            if utt not in utt2spk:
                report.add(ERROR, "spk2utt-mismatch", spk2utt_path, utt,
                           f"listed under speaker {e.key!r} but not in utt2spk", regen)
            elif utt2spk[utt] != e.key:
                report.add(ERROR, "spk2utt-mismatch", spk2utt_path, utt,
                           f"listed under speaker {e.key!r} but utt2spk says {utt2spk[utt]!r}", regen)
    for utt in sorted(set(utt2spk) - set(seen), key=c_key):
        report.add(ERROR, "spk2utt-mismatch", spk2utt_path, utt,
                   f"in utt2spk (speaker {utt2spk[utt]!r}) but not in spk2utt", regen)


# ---------------------------------------------------------------------------------------------------
# Audio checks
# ---------------------------------------------------------------------------------------------------


@dataclass
class AudioInfo:
    path: str
    error: Optional[str] = None
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    non_finite: int = 0
    silent: bool = False


def probe_audio(path: str, block: int = 1 << 20) -> AudioInfo:
    """Header and full decode of one file (NaN/Inf and all-zero need every sample)."""
    import numpy as np
    import soundfile as sf

    info = AudioInfo(path)
    try:
        with sf.SoundFile(path) as f:
            info.frames, info.sample_rate, info.channels = f.frames, f.samplerate, f.channels
            nonzero = False
            decoded = 0
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                decoded += len(data)
                finite = np.isfinite(data)
                info.non_finite += int(data.size - np.count_nonzero(finite))
                nonzero = nonzero or bool(np.any(data[finite] != 0))
            info.silent = info.frames > 0 and not nonzero
            if decoded != info.frames:
                info.error = f"the header says {info.frames} frames but {decoded} could be decoded (truncated?)"
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        info.error = f"{type(e).__name__}: {e}".strip()
    return info


def probe_all(paths: Sequence[str], nj: int) -> List[AudioInfo]:
    from tqdm import tqdm

    bar = dict(total=len(paths), desc="audio", unit="file", disable=len(paths) < 50, file=sys.stderr)
    if nj <= 1 or len(paths) < 2:
        return [probe_audio(p) for p in tqdm(paths, **bar)]
    with multiprocessing.Pool(min(nj, len(paths))) as pool:
        return list(tqdm(pool.imap(probe_audio, paths, chunksize=4), **bar))


@dataclass
class AudioOptions:
    min_samples: int = 400
    sample_rate: int = 16000
    sample_rate_level: str = WARNING
    nj: int = 1


def check_audio(
    wav_entries: Dict[str, str],
    segments: Optional[Dict[str, str]],
    utt2num_samples: Optional[Dict[str, str]],
    data_dir: Path,
    opts: AudioOptions,
    report: Report,
) -> None:
    wav_path = data_dir / "wav.scp"
    to_read: Dict[str, str] = {}
    for rec, value in wav_entries.items():
        if is_pipe(value):
            report.add(ERROR, "pipe-unsupported", wav_path, rec, f"{value!r} is a pipe; aqc reads files only",
                       "run the command once to write a wav/flac file and put that path in wav.scp")
        elif not os.path.isfile(value):
            report.add(ERROR, "missing-audio", wav_path, rec, f"{value!r} does not exist",
                       "fix the path (relative paths are taken from the directory the recipe runs in) "
                       "or remove the entry")
        else:
            to_read[rec] = value
    infos = dict(zip(to_read, probe_all(list(to_read.values()), opts.nj)))
    for rec, info in infos.items():
        check_one_audio(rec, info, wav_path, opts, report)
    usable = {rec: i for rec, i in infos.items() if i.error is None and i.frames > 0}
    if segments is not None:
        check_segment_lengths(segments, usable, data_dir, opts, report)
    elif utt2num_samples is not None:
        check_num_samples(utt2num_samples, usable, data_dir, opts, report)


def resampled(frames: int, rate: int, target: int) -> int:
    """Length after resampling to ``target`` Hz (what the model sees)."""
    return frames if rate == target else int(math.ceil(frames * target / rate))


def check_one_audio(rec: str, info: AudioInfo, wav_path: Path, opts: AudioOptions, report: Report) -> None:
    remove = "remove the recording from wav.scp and run utils/fix_data_dir.py"
    if info.error is not None:
        report.add(ERROR, "corrupt-audio", wav_path, rec, f"{info.path!r} cannot be read: {info.error}",
                   f"re-create or re-download the file, or {remove}")
        return
    if info.frames == 0:
        report.add(ERROR, "empty-audio", wav_path, rec, f"{info.path!r} has zero samples", remove)
        return
    n = resampled(info.frames, info.sample_rate, opts.sample_rate)
    if n < opts.min_samples:
        report.add(ERROR, "too-short", wav_path, rec,
                   f"{info.path!r} has {n} samples at {opts.sample_rate} Hz, fewer than --min_samples "
                   f"{opts.min_samples} (the CNN feature extractor's receptive field)", remove)
    if info.sample_rate != opts.sample_rate:
        report.add(opts.sample_rate_level, "sample-rate", wav_path, rec,
                   f"{info.path!r} is {info.sample_rate} Hz, not {opts.sample_rate} Hz",
                   "nothing if the format stage resamples; else resample the file")
    if info.channels > 1:
        report.add(WARNING, "multi-channel", wav_path, rec,
                   f"{info.path!r} has {info.channels} channels; it will be down-mixed to mono",
                   "nothing, or keep one channel if down-mixing is not wanted")
    if info.non_finite:
        report.add(ERROR, "non-finite", wav_path, rec, f"{info.path!r} has {info.non_finite} NaN/Inf samples",
                   f"re-create the file from its source, or {remove}")
    if info.silent:
        report.add(ERROR, "silent", wav_path, rec, f"{info.path!r} is all zeros", remove)


def check_segment_lengths(
    segments: Dict[str, str], infos: Dict[str, AudioInfo], data_dir: Path, opts: AudioOptions, report: Report
) -> None:
    path = data_dir / "segments"
    for utt, value in segments.items():
        seg = parse_segment(value)
        if seg is None or seg[0] not in infos:
            continue
        rec, start, end = seg
        info = infos[rec]
        duration = info.frames / info.sample_rate
        if end > duration + 0.01:  # allow rounding of the times written to segments
            report.add(ERROR, "bad-segment", path, utt,
                       f"ends at {end:.3f} s but recording {rec!r} lasts {duration:.3f} s",
                       "fix the end time, or -1 for the end of the recording")
        span = (duration if end == -1 else min(end, duration)) - start
        n = int(span * opts.sample_rate)
        if 0 <= n < opts.min_samples:
            report.add(ERROR, "too-short", path, utt,
                       f"{n} samples at {opts.sample_rate} Hz, fewer than --min_samples {opts.min_samples}",
                       "remove the segment and run utils/fix_data_dir.py")


def check_num_samples(
    utt2num_samples: Dict[str, str], infos: Dict[str, AudioInfo], data_dir: Path, opts: AudioOptions,
    report: Report,
) -> None:
    """utt2num_samples may count at the file's rate or at --sample_rate (after the format stage)."""
    path = data_dir / "utt2num_samples"
    for utt, value in utt2num_samples.items():
        if utt not in infos or not _is_int(value):
            continue
        info = infos[utt]
        allowed = {info.frames, resampled(info.frames, info.sample_rate, opts.sample_rate)}
        if not any(abs(int(value) - a) <= 1 for a in allowed):
            report.add(ERROR, "num-samples-mismatch", path, utt,
                       f"says {value} samples, the audio has {info.frames} at {info.sample_rate} Hz",
                       f"regenerate it: utils/get_utt2num_samples.py {data_dir}")


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


REQUIRED_FIX = {
    "text": "write '<utt-id> <transcript>' lines (a set that is fine-tuned on, validated or scored needs "
            "transcripts; see the recipe's local/data.sh)",
    "utt2num_samples": "regenerate it: utils/get_utt2num_samples.py {dir} (or the recipe's format stage)",
    "utt2spk": "write '<utt-id> <speaker-id>' lines (one speaker per utterance if unknown)",
}


def validate(data_dir: Path, no_audio: bool = False, opts: Optional[AudioOptions] = None,
             require: Sequence[str] = ()) -> Report:
    """All problems of ``data_dir``; ``require`` names files that must exist besides wav.scp."""
    opts = opts or AudioOptions()
    report = Report()
    wav_path = data_dir / "wav.scp"
    if not data_dir.is_dir():
        report.add(ERROR, "missing-dir", data_dir, None, "is not a directory", "pass a Kaldi-style data directory")
        return report
    if not wav_path.is_file():
        report.add(ERROR, "missing-file", wav_path, None, "wav.scp is required",
                   "write '<recording-id> <audio path>' lines, sorted (LC_ALL=C sort)")
        return report
    for name in require:
        if not (data_dir / name).is_file():
            fix = REQUIRED_FIX.get(name, "create it").format(dir=data_dir)
            report.add(ERROR, "missing-file", data_dir / name, None, f"{name} is required here", fix)
    entries: Dict[str, List[Entry]] = {}
    for name in ("wav.scp", "segments", *UTT_FILES, "spk2utt"):
        path = data_dir / name
        if not path.is_file():
            continue
        try:
            entries[name] = read_entries(path)
        except UnicodeDecodeError as e:
            report.add(ERROR, "bad-encoding", path, None, f"not UTF-8 ({e})", "re-encode the file as UTF-8")
            continue
        check_order(path, entries[name], data_dir, report)
        check_values(name, path, entries[name], report)
    tables = {name: first_wins(es) for name, es in entries.items()}
    if "wav.scp" not in tables:
        return report
    segments = tables.get("segments")
    if segments is not None:
        check_segments_recordings(segments, tables["wav.scp"], data_dir, report)
        utt_keys, utt_source = list(segments), data_dir / "segments"
    else:
        utt_keys, utt_source = list(tables["wav.scp"]), wav_path
    check_key_sets(utt_keys, utt_source, tables, data_dir, report)
    if "utt2spk" in tables:
        check_speakers(tables["utt2spk"], entries.get("spk2utt"), data_dir, report)
    elif "spk2utt" in tables:
        report.add(ERROR, "missing-file", data_dir / "utt2spk", None, "spk2utt exists without utt2spk",
                   "write utt2spk (one '<utt> <speaker>' per line) or delete spk2utt")
    if not no_audio:
        check_audio(tables["wav.scp"], segments, tables.get("utt2num_samples"), data_dir, opts, report)
    return report


def print_report(report: Report, data_dir: Path, max_report: int, out=sys.stdout) -> None:
    """Every problem, except that one code in one file prints at most ``max_report`` lines."""
    shown: Counter = Counter()
    hidden: Counter = Counter()
    for p in report.problems:
        group = (p.level, p.code, p.file)
        if max_report and shown[group] >= max_report:
            hidden[group] += 1
            continue
        shown[group] += 1
        print(p.format(), file=out)
    for (level, code, file), n in hidden.items():
        print(f"{level} [{code}] {file}: ... and {n} more (--max_report 0 lists all)", file=out)
    errors, warnings = report.count(ERROR), report.count(WARNING)
    verdict = "OK" if errors == 0 else "FAILED"
    print(f"{data_dir}: {verdict}: {errors} error(s), {warnings} warning(s)", file=out)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check a Kaldi-style data directory (wav.scp, text, utt2spk, spk2utt, utt2num_samples, "
        "segments) and its audio; report all problems; exit 1 if there are errors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data_dir", type=Path, help="Data directory, e.g. data/train")
    parser.add_argument("--no_audio", action="store_true", help="Check the text files only, do not read audio")
    parser.add_argument("--require", action="append", default=[], metavar="FILE[,FILE]",
                        help="Files that must exist besides wav.scp, e.g. text for a set that is scored "
                        "(repeatable, or comma-separated)")
    parser.add_argument("--nj", type=int, default=1, help="Worker processes reading audio")
    parser.add_argument("--min_samples", type=int, default=400,
                        help="Minimum length in samples at --sample_rate (400: the CNN's receptive field)")
    parser.add_argument("--sample_rate", type=int, default=16000, help="Expected sample rate in Hz")
    parser.add_argument("--sample_rate_mismatch", choices=["warning", "error"], default="warning",
                        help="How to report another sample rate (the format stage resamples)")
    parser.add_argument("--warnings_as_errors", type=str2bool, default=False, help="Exit 1 on warnings too")
    parser.add_argument("--max_report", type=int, default=20,
                        help="Lines printed per problem kind and file (0: all); every problem is counted")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    opts = AudioOptions(args.min_samples, args.sample_rate, args.sample_rate_mismatch.upper(), args.nj)
    require = [name for item in args.require for name in item.split(",") if name]
    unknown = [name for name in require if name not in (*UTT_FILES, "segments", "spk2utt")]
    if unknown:
        print(f"validate_data_dir.py: --require {','.join(unknown)}: not a file this checker knows; use any of "
              f"{', '.join((*UTT_FILES, 'segments', 'spk2utt'))}", file=sys.stderr)
        return 2
    report = validate(args.data_dir, args.no_audio, opts, require)
    print_report(report, args.data_dir, args.max_report)
    failed = report.count(ERROR) > 0 or (args.warnings_as_errors and report.count(WARNING) > 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
