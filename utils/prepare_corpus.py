#!/usr/bin/env python3
"""Kaldi-style data dirs from a user's own corpus: a folder of unlabelled audio and a few transcripts.

    utils/prepare_corpus.py --audio_dir /data/my_audio --transcripts /data/my_transcripts.txt --data_dir data
    utils/prepare_corpus.py --audio_dir /data/my_audio --labelled_dir /data/kaldi/train --data_dir data

* ``--audio_dir``: every file soundfile reads (wav, flac, ogg, mp3 ...; any rate, nested folders) is
  pre-training audio: ``data/train_pretrain``. Utterance ids are the relative paths without extension,
  with ``/`` as ``-`` (``spk1/day2/a.wav`` -> ``spk1-day2-a``).
* ``--transcripts``: ``<file or id> <text>`` per line. The first field is an audio file (absolute, or
  relative to the transcript file's folder or to ``--audio_dir``) or the id of a file under
  ``--audio_dir``. Or ``--labelled_dir``: a Kaldi data dir (wav.scp, text, optional utt2spk).
* Speakers: a Kaldi dir's ``utt2spk``; else, with ``--speaker_from folder``, the name of the folder that
  holds each labelled file; else unknown (each utterance its own speaker).
* The labelled utterances are split into ``train_ft``, ``dev`` and ``test`` (``--dev_share``,
  ``--test_share`` of the speakers when at least 3 are known, so that dev and test speakers are never seen
  in fine-tuning; of the utterances otherwise, with a warning). The split is deterministic.

Labelled audio is pre-training audio too when it lies under ``--audio_dir``; test utterances are then
also in the pre-training set (unlabelled, as a user's own audio would be): ``--exclude_test_from_pretrain
true`` removes them.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple


class CorpusError(ValueError):
    pass


def audio_suffixes() -> set:
    import soundfile as sf

    return {f".{ext.lower()}" for ext in sf.available_formats()} | {".oga", ".opus"}


def utt_id(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    return re.sub(r"\s+", "_", "-".join(parts))


def scan_audio(audio_dir: Path) -> Dict[str, Path]:
    if not audio_dir.is_dir():
        raise CorpusError(f"--audio_dir {audio_dir}: no such folder")
    suffixes = audio_suffixes()
    found: Dict[str, Path] = {}
    for path in sorted(p for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        uid = utt_id(path.relative_to(audio_dir))
        if uid in found:
            raise CorpusError(f"{path} and {found[uid]} get the same utterance id {uid!r}: rename one")
        found[uid] = path.resolve()
    if not found:
        raise CorpusError(f"--audio_dir {audio_dir}: no audio files (looked for {', '.join(sorted(suffixes))})")
    return found


def read_transcripts(path: Path, audio: Dict[str, Path], audio_dir: Optional[Path]
                     ) -> List[Tuple[str, Path, str]]:
    """(utt id, audio path, text) per line of a ``<file or id> <text>`` list."""
    by_path = {p: u for u, p in audio.items()}
    rows, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, text = line.strip().partition(" ")
        text = " ".join(text.split())
        if not text:
            problems.append(f"line {n}: {key!r} has no text")
            continue
        candidates = [Path(key), path.parent / key] + ([audio_dir / key] if audio_dir else [])
        audio_path = next((c.resolve() for c in candidates if c.is_file()), None)
        if audio_path is not None:
            uid = by_path.get(audio_path) or utt_id(Path(key).with_suffix(""))
        elif key in audio:
            uid, audio_path = key, audio[key]
        else:
            problems.append(f"line {n}: {key!r} is neither an audio file nor the id of one under --audio_dir")
            continue
        rows.append((uid, audio_path, text))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CorpusError(f"{path}: {shown}. Fix those lines (format: <file or id> <text>)")
    ids = [r[0] for r in rows]
    duplicated = sorted({u for u in ids if ids.count(u) > 1})
    if duplicated:
        raise CorpusError(f"{path}: {', '.join(duplicated[:5])} transcribed more than once")
    if not rows:
        raise CorpusError(f"{path}: no transcripts")
    return rows


def read_kaldi_dir(path: Path) -> Tuple[List[Tuple[str, Path, str]], Dict[str, str]]:
    def table(name: str) -> Dict[str, str]:
        out = {}
        for line in (path / name).read_text(encoding="utf-8").splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                out[key] = value.strip()
        return out

    for name in ("wav.scp", "text"):
        if not (path / name).is_file():
            raise CorpusError(f"--labelled_dir {path}: no {name}")
    wavs, texts = table("wav.scp"), table("text")
    missing = sorted(set(texts) - set(wavs))
    if missing:
        raise CorpusError(f"--labelled_dir {path}: {', '.join(missing[:5])} in text but not in wav.scp")
    rows = [(u, Path(wavs[u]), t) for u, t in sorted(texts.items()) if t]
    speakers = table("utt2spk") if (path / "utt2spk").is_file() else {}
    return rows, speakers


def split(rows: List[Tuple[str, Path, str]], speakers: Dict[str, str], dev_share: float, test_share: float
          ) -> Tuple[Dict[str, List[Tuple[str, Path, str]]], str]:
    """train_ft/dev/test, by speaker when at least 3 are known; returns the sets and how they were made."""
    def rank(name: str) -> str:  # a fixed pseudo-random order that does not depend on Python's hash seed
        return hashlib.sha256(name.encode("utf-8")).hexdigest()

    known = sorted({speakers[u] for u, _, _ in rows if u in speakers})
    by_speaker = len(known) >= 3 and all(u in speakers for u, _, _ in rows)
    units = sorted(known if by_speaker else [u for u, _, _ in rows], key=rank)
    n_test = max(1, round(test_share * len(units)))
    n_dev = max(1, round(dev_share * len(units)))
    if len(units) < n_test + n_dev + 1:
        raise CorpusError(f"{len(units)} {'speakers' if by_speaker else 'labelled utterances'} cannot be split "
                          "into fine-tuning, dev and test sets: transcribe more files")
    test, dev = set(units[:n_test]), set(units[n_test:n_test + n_dev])
    sets: Dict[str, List[Tuple[str, Path, str]]] = {"train_ft": [], "dev": [], "test": []}
    for row in rows:
        unit = speakers[row[0]] if by_speaker else row[0]
        sets["test" if unit in test else "dev" if unit in dev else "train_ft"].append(row)
    how = (f"by speaker ({len(known)} speakers: dev {sorted(dev)}, test {sorted(test)})" if by_speaker else
           "by utterance (speakers unknown or fewer than 3: dev and test speakers may also be in fine-tuning)")
    return sets, how


def write_dir(out: Path, rows: List[Tuple[str, Path, str]], speakers: Dict[str, str], with_text: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows)
    spk = {u: speakers.get(u, u) for u, _, _ in rows}
    (out / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _ in rows), encoding="utf-8")
    (out / "utt2spk").write_text("".join(f"{u} {spk[u]}\n" for u, _, _ in rows), encoding="utf-8")
    spk2utt: Dict[str, List[str]] = {}
    for u, _, _ in rows:
        spk2utt.setdefault(spk[u], []).append(u)
    (out / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())),
                                 encoding="utf-8")
    if with_text:
        (out / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows), encoding="utf-8")
    print(f"prepare_corpus: {out}: {len(rows)} utterances, {len(spk2utt)} speakers", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio_dir", type=Path, required=True)
    labelled = parser.add_mutually_exclusive_group(required=True)
    labelled.add_argument("--transcripts", type=Path)
    labelled.add_argument("--labelled_dir", type=Path)
    parser.add_argument("--speaker_from", choices=["none", "folder"], default="none")
    parser.add_argument("--dev_share", type=float, default=0.1)
    parser.add_argument("--test_share", type=float, default=0.2)
    parser.add_argument("--exclude_test_from_pretrain", choices=["true", "false"], default="false")
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    try:
        audio = scan_audio(args.audio_dir)
        if args.transcripts is not None:
            if not args.transcripts.is_file():
                raise CorpusError(f"--transcripts {args.transcripts}: no such file")
            rows = read_transcripts(args.transcripts, audio, args.audio_dir)
            speakers = ({u: p.parent.name for u, p, _ in rows} if args.speaker_from == "folder" else {})
        else:
            rows, speakers = read_kaldi_dir(args.labelled_dir)
        sets, how = split(rows, speakers, args.dev_share, args.test_share)
    except CorpusError as e:
        print(f"prepare_corpus: ERROR: {e}", file=sys.stderr)
        return 2
    print(f"prepare_corpus: labelled utterances split {how}", file=sys.stderr)
    pretrain = [(u, p, "") for u, p in audio.items()]
    if args.exclude_test_from_pretrain == "true":
        test_paths = {p for _, p, _ in sets["test"]}
        pretrain = [r for r in pretrain if r[1] not in test_paths]
    pretrain_speakers = {u: p.parent.name for u, p, _ in pretrain} if args.speaker_from == "folder" else {}
    write_dir(args.data_dir / "train_pretrain", pretrain, pretrain_speakers, with_text=False)
    for name, rows_ in sets.items():
        write_dir(args.data_dir / name, rows_, speakers, with_text=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
