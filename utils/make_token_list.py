#!/usr/bin/env python3
"""Make an ESPnet token list from a Kaldi `text` file: characters, words, or a sentencepiece BPE model.

    utils/make_token_list.py --text data/train/text --token_type char --output data/token_list/char/tokens.txt
    utils/make_token_list.py --text data/train/text --token_type word --output data/token_list/word/tokens.txt
    utils/make_token_list.py --text data/train/text --token_type bpe --nbpe 100 \
        --bpe_model_prefix data/token_list/bpe100/bpe --output data/token_list/bpe100/tokens.txt

    utils/make_token_list.py --text data/train/text --token_type char --inventory local/letters.txt \
        --output data/token_list/char/tokens.txt

The list starts with <blank> and <unk> and ends with <sos/eos> (ESPnet's convention); the space
is the token <space> for characters. ``--inventory`` gives a fixed character list (one token per line,
<space> for the space) instead of the characters of the text, so that a small fine-tuning set (10 min)
that lacks a letter still gets it; a character of the text outside the inventory is an error, not an
<unk> that training would learn silently.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def read_transcripts(path: Path) -> list[str]:
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\r\n").split(maxsplit=1)
            if parts:
                lines.append(parts[1] if len(parts) > 1 else "")
    return lines


def read_inventory(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"make_token_list: --inventory {path} not found")
    tokens = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    reserved = {"<blank>", "<unk>", "<sos/eos>"} & set(tokens)
    if reserved:
        raise SystemExit(f"make_token_list: {path} lists {', '.join(sorted(reserved))}: those are added by "
                         "this script; list only the characters (and <space>)")
    duplicated = sorted({t for t in tokens if tokens.count(t) > 1})
    if duplicated:
        raise SystemExit(f"make_token_list: {path} lists {', '.join(duplicated)} more than once")
    return tokens


def check_inventory(transcripts: list[str], tokens: list[str], text: Path, inventory: Path) -> None:
    known = {" " if t == "<space>" else t for t in tokens}
    outside = Counter(ch for t in transcripts for ch in t if ch not in known)
    if outside:
        shown = ", ".join(f"{ch!r} ({n}x)" for ch, n in outside.most_common(10))
        raise SystemExit(f"make_token_list: {text} has characters outside --inventory {inventory}: {shown}. "
                         "Fix: normalise the transcripts (e.g. upper case, no punctuation) or add the characters "
                         "to the inventory")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, type=Path)
    parser.add_argument("--token_type", choices=["char", "word", "bpe"], default="char")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--nbpe", type=int, default=100)
    parser.add_argument("--bpe_model_prefix", type=Path, default=None)
    parser.add_argument("--inventory", type=Path, default=None,
                        help="fixed character inventory (one token per line, <space> for the space); char only")
    args = parser.parse_args(argv)
    if args.inventory is not None and args.token_type != "char":
        raise SystemExit(f"make_token_list: --inventory is for --token_type char, not {args.token_type}")

    if not args.text.is_file():
        raise SystemExit(f"make_token_list: {args.text} not found; run data preparation first")
    transcripts = read_transcripts(args.text)
    if not any(t.strip() for t in transcripts):
        raise SystemExit(f"make_token_list: {args.text} has no transcripts")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.inventory is not None:
        tokens = read_inventory(args.inventory)
        check_inventory(transcripts, tokens, args.text, args.inventory)
    elif args.token_type == "char":
        counts = Counter(ch for t in transcripts for ch in t.replace(" ", "\u2581"))
        tokens = ["<space>" if ch == "\u2581" else ch for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    elif args.token_type == "word":  # small closed vocabularies (digits, commands)
        counts = Counter(w for t in transcripts for w in t.split())
        tokens = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    else:
        import sentencepiece as spm

        prefix = args.bpe_model_prefix or args.output.parent / "bpe"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        train_txt = prefix.parent / "train.txt"
        train_txt.write_text("\n".join(transcripts) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(train_txt), model_prefix=str(prefix), vocab_size=args.nbpe,
                                       model_type="unigram", character_coverage=1.0, input_sentence_size=10**8,
                                       bos_id=-1, eos_id=-1, unk_id=0)
        sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
        tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.id_to_piece(i) != "<unk>"]
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(["<blank>", "<unk>", *tokens, "<sos/eos>"]) + "\n")
    print(f"make_token_list: {len(tokens) + 3} tokens -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
