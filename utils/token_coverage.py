#!/usr/bin/env python3
"""Count the tokens of a text that are not in a token list (ESPnet maps them to <unk> without a word).

    utils/token_coverage.py --text dump/test/text --token_list data/token_list/char/tokens.txt \\
        --token_type char --name test --out data/token_list/char/coverage/test.json
    utils/token_coverage.py ... --token_type bpe --bpemodel data/token_list/bpe100/bpe.model

Transcripts are split by ESPnet's own tokenizers, built as ESPnet's ASR preprocessor builds them
(characters with ``<space>``, whitespace-separated words, sentencepiece pieces), and looked up as its
``TokenIDConverter`` does. A token outside the list can never be recognised, so a test set with many of
them has a WER floor that fine-tuning cannot move. Prints a WARNING with the count, the percentage and a
few examples when there are any; writes a JSON summary that RESULTS.md reports (``aqc.results``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from make_token_list import read_transcripts

UNITS = {"char": "characters", "word": "words", "bpe": "BPE pieces"}


def build_tokenizer(token_type: str, bpemodel):
    # The individual classes, not espnet2.text.build_tokenizer: that module imports the g2p stack
    # (seconds, and network look-ups); the arguments are build_tokenizer's defaults for these types.
    if token_type == "char":
        from espnet2.text.char_tokenizer import CharTokenizer

        return CharTokenizer(non_linguistic_symbols=None, space_symbol="<space>", remove_non_linguistic_symbols=False)
    if token_type == "word":
        from espnet2.text.word_tokenizer import WordTokenizer

        return WordTokenizer(delimiter=None)
    if bpemodel is None:
        raise SystemExit("token_coverage.py: --token_type bpe needs --bpemodel (stage 3 writes it beside tokens.txt)")
    from espnet2.text.sentencepiece_tokenizer import SentencepiecesTokenizer

    return SentencepiecesTokenizer(str(bpemodel))


def coverage(texts, tokenizer, token_list) -> dict:
    from espnet2.text.token_id_converter import TokenIDConverter

    converter = TokenIDConverter(token_list, unk_symbol="<unk>")
    total = 0
    unknown: Counter = Counter()
    for text in texts:
        tokens = tokenizer.text2tokens(text)
        total += len(tokens)
        for token, token_id in zip(tokens, converter.tokens2ids(tokens)):
            if token_id == converter.unk_id and token != "<unk>":
                unknown[token] += 1
    return {"tokens": total, "unknown": sum(unknown.values()),
            "examples": [[t, n] for t, n in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]}


def summary_line(name: str, result: dict) -> str:
    """``test: 3 of 1000 words (0.30 %) are not in the token list``, as RESULTS.md writes it."""
    n, k, unit = result["tokens"], result["unknown"], result["unit"]
    if k == 0:
        return f"{name}: all {n} {unit} are in the token list"
    examples = ", ".join(f"{t!r} ({c})" for t, c in result["examples"][:5])
    return (f"{name}: {k} of {n} {unit} ({100.0 * k / n:.2f} %) are not in the token list and can never be "
            f"recognised (ESPnet maps them to <unk>), e.g. {examples}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, type=Path, help="Kaldi text file: <utt-id> <transcript>")
    parser.add_argument("--token_list", required=True, type=Path)
    parser.add_argument("--token_type", required=True, choices=sorted(UNITS))
    parser.add_argument("--bpemodel", type=Path, default=None)
    parser.add_argument("--name", default=None, help="the set's name in messages (default: the text's folder)")
    parser.add_argument("--out", type=Path, default=None, help="JSON summary to write")
    args = parser.parse_args(argv)
    name = args.name or args.text.resolve().parent.name
    for path in (args.text, args.token_list):
        if not path.is_file():
            raise SystemExit(f"token_coverage.py: {path} not found")
    try:
        texts = read_transcripts(args.text)
    except UnicodeDecodeError as e:
        raise SystemExit(f"token_coverage.py: {args.text} is not UTF-8 ({e}); re-encode it as UTF-8") from None
    result = coverage(texts, build_tokenizer(args.token_type, args.bpemodel), args.token_list)
    result = {"name": name, "text": str(args.text), "token_list": str(args.token_list),
              "token_type": args.token_type, "unit": UNITS[args.token_type], **result}
    line = summary_line(name, result)
    if result["unknown"]:
        print(f"WARNING: {line}", file=sys.stderr)
    else:
        print(f"token_coverage.py: {line}", file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
