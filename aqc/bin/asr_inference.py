#!/usr/bin/env python3
"""Decode with a fine-tuned aqc ASR model: ESPnet's ``asr_inference`` plus a fast greedy CTC path.

    # greedy CTC (Viterbi: per-frame argmax, repeats merged, blanks dropped), batched
    python -m aqc.bin.asr_inference --config egs/TEMPLATE/conf/decode_greedy.yaml \\
        --asr_train_config exp/asr/config.yaml --asr_model_file exp/asr/valid.loss.ave.pth \\
        --data_path_and_name_and_type data/test/wav.scp,speech,sound --output_dir exp/asr/decode_test
    # CTC prefix beam search (ESPnet's BeamSearch with its CTC prefix scorer)
    python -m aqc.bin.asr_inference --config egs/TEMPLATE/conf/decode_beam.yaml ...
    # + an ESPnet LM (espnet2.bin.lm_train): --lm_train_config exp/lm/config.yaml --lm_file exp/lm/x.pth
    #   --lm_weight 0.5; a token n-gram through ESPnet: --ngram_file lm.arpa (needs the kenlm package)
    # word n-gram (KenLM ARPA/binary) + lexicon, the reference's "kenlm" decoding (flashlight-text):
    python -m aqc.bin.asr_inference --config egs/TEMPLATE/conf/decode_kenlm.yaml \\
        --kenlm_file 4-gram.arpa --lexicon lexicon.txt ...

Every option of ``espnet2.bin.asr_inference`` works; the output is the same
(``<output_dir>/1best_recog/{text,token,token_int,score}``). Two batched paths of our own (any
``--batch_size``; ESPnet's own path decodes one utterance at a time):

``--ctc_decoder`` picks the path (default ``auto``: flashlight when ``--kenlm_file``/``--lexicon`` is
given, greedy for a greedy setting, else ESPnet's beam search):

* greedy: for a greedy setting (``beam_size 1``, ``ctc_weight 1.0``, no LM or n-gram, ``nbest 1``), or
  with ``--ctc_decoder greedy``, decoding takes the argmax path of the CTC posteriors (``score``: the sum
  of the per-frame best log-probabilities) instead of ESPnet's label-synchronous beam search;
* flashlight: with ``--kenlm_file`` and/or ``--lexicon``, torchaudio's flashlight-text CTC beam-search decoder
  (``pip install flashlight-text``, which bundles KenLM) with ``--beam_size``, ``--lm_weight``,
  ``--word_score``, ``--kenlm_beam_threshold``. The lexicon spells each word in the model's tokens
  (``seven s e v e n <space>`` for ESPnet char tokens; ``--word_boundary_token`` names the boundary
  token); without a lexicon the n-gram is over the model's tokens.
"""
from __future__ import annotations

import logging
import sys
from itertools import groupby
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from aqc import cpu_threads
from aqc.espnet.frontend import register

logger = logging.getLogger("aqc.bin.asr_inference")


def get_parser():
    register()
    from espnet2.bin.asr_inference import get_parser as espnet_parser
    from espnet2.utils.types import str_or_none

    parser = espnet_parser()
    group = parser.add_argument_group("aqc")
    cpu_threads.add_argument(group)
    group.add_argument(
        "--ctc_decoder", type=str, default="auto", choices=["auto", "greedy", "espnet", "flashlight"],
        help="greedy: aqc's batched argmax CTC decoding; espnet: ESPnet's beam search (BeamSearch with the "
             "CTC prefix scorer, LMs via --lm_train_config/--ngram_file); flashlight: torchaudio's "
             "flashlight-text beam search with --kenlm_file/--lexicon; auto: flashlight when --kenlm_file or "
             "--lexicon is given, greedy for a greedy setting (beam_size 1, ctc_weight 1.0, no LM, nbest 1), "
             "else espnet",
    )
    group.add_argument("--kenlm_file", type=str_or_none, default=None,
                       help="KenLM n-gram (ARPA or binary) for flashlight-text CTC decoding: words with "
                            "--lexicon, the model's tokens without")
    group.add_argument("--lexicon", type=str_or_none, default=None,
                       help="Lexicon for flashlight-text decoding: '<word> <token> ... <boundary>' per line")
    group.add_argument("--word_score", type=float, default=0.0, help="Word insertion score (flashlight-text)")
    group.add_argument("--kenlm_beam_threshold", type=float, default=25.0,
                       help="Score threshold for pruning hypotheses (flashlight-text)")
    group.add_argument("--model_archive", type=str_or_none, default=None,
                       help="A model packed by aqc.bin.pack (zip): sets --asr_train_config and --asr_model_file")
    group.add_argument("--word_boundary_token", type=str, default="<space>",
                       help="The token between words (flashlight-text's sil_token)")
    return parser


def is_greedy(kwargs: Dict[str, Any]) -> bool:
    """Whether the ESPnet decoding options describe plain greedy CTC decoding."""
    return (
        kwargs["beam_size"] == 1 and kwargs["ctc_weight"] == 1.0 and kwargs["nbest"] == 1
        and kwargs["lm_train_config"] is None and kwargs["ngram_file"] is None
        and kwargs["word_lm_train_config"] is None and kwargs["model_tag"] is None
        and not kwargs["streaming"] and not kwargs["enh_s2t_task"] and not kwargs["multi_asr"]
        and not kwargs["time_sync"] and not kwargs["partial_ar"] and kwargs["penalty"] == 0.0
        and not kwargs["quantize_asr_model"] and kwargs["ngpu"] <= 1
    )


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int,
               drop_ids=()) -> List[Tuple[List[int], float]]:
    """Best path of (B, T, V) CTC log-probabilities: repeats merged, blanks (and ``drop_ids``) removed.

    Returns, per utterance, the token ids and the sum of the per-frame maximum log-probabilities."""
    best, ids = log_probs.max(-1)
    out = []
    drop = {blank_id, *drop_ids}
    for b in range(log_probs.shape[0]):
        n = int(lengths[b])
        seq = [int(k) for k, _ in groupby(ids[b, :n].tolist())]
        out.append(([k for k in seq if k not in drop], float(best[b, :n].sum())))
    return out


class KenLMDecoder:
    """torchaudio's flashlight-text CTC beam search with a KenLM n-gram (and a lexicon)."""

    def __init__(self, token_list: List[str], blank_id: int, kenlm_file: Optional[str], lexicon: Optional[str],
                 beam_size: int, lm_weight: float, word_score: float, beam_threshold: float,
                 word_boundary_token: str, unk_word: str = "<unk>"):
        try:
            from torchaudio.models.decoder import ctc_decoder

            import flashlight.lib.text.decoder  # noqa: F401
        except ImportError as exc:
            raise ImportError("--kenlm_file/--lexicon decoding needs the flashlight-text package "
                              "(pip install flashlight-text; its wheels bundle KenLM)") from exc
        if word_boundary_token not in token_list:
            raise ValueError(f"--word_boundary_token {word_boundary_token!r} is not in the model's token list")
        self.lexicon = lexicon
        self.decoder = ctc_decoder(
            lexicon=lexicon, tokens=list(token_list), lm=kenlm_file, nbest=1, beam_size=beam_size,
            beam_threshold=beam_threshold, lm_weight=lm_weight if kenlm_file else 0.0, word_score=word_score,
            blank_token=token_list[blank_id], sil_token=word_boundary_token, unk_word=unk_word)
        self.boundary_id = token_list.index(word_boundary_token)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor):
        results = self.decoder(log_probs.float().cpu().contiguous(), lengths.cpu().int())
        out = []
        for nbest in results:
            if not nbest:
                out.append(([], float("-inf"), ""))
                continue
            hyp = nbest[0]
            ids = [int(t) for t in hyp.tokens]
            while ids and ids[0] == self.boundary_id:
                ids = ids[1:]
            while ids and ids[-1] == self.boundary_id:
                ids = ids[:-1]
            out.append((ids, float(hyp.score), " ".join(hyp.words) if self.lexicon else None))
        return out


@torch.no_grad()
def batched_inference(output_dir: str, batch_size: int, dtype: str, ngpu: int, seed: int, num_workers: int,
                      log_level, data_path_and_name_and_type, key_file: Optional[str],
                      asr_train_config: Optional[str], asr_model_file: Optional[str], token_type: Optional[str],
                      bpemodel: Optional[str], allow_variable_data_keys: bool, beam_size: int = 1,
                      lm_weight: float = 0.0, kenlm_file: Optional[str] = None, lexicon: Optional[str] = None,
                      word_score: float = 0.0, kenlm_beam_threshold: float = 25.0,
                      word_boundary_token: str = "<space>", **_unused) -> None:
    """Greedy (no ``kenlm_file``/``lexicon``) or KenLM decoding of CTC posteriors, in batches.

    Writes ``<output_dir>/1best_recog/{text,token,token_int,score}`` as ESPnet's asr_inference does."""
    from espnet2.fileio.datadir_writer import DatadirWriter
    from espnet2.tasks.asr import ASRTask
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter
    from espnet2.torch_utils.device_funcs import to_device
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    logging.basicConfig(level=log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    logger.info(cpu_threads.apply().describe())
    device = "cuda" if ngpu >= 1 else "cpu"
    set_all_random_seed(seed)
    model, train_args = ASRTask.build_model_from_file(asr_train_config, asr_model_file, device)
    model.to(dtype=getattr(torch, dtype)).eval()
    if getattr(model, "ctc", None) is None:
        raise ValueError("CTC decoding needs a model with a CTC head")
    token_list = model.token_list
    if token_type is None:
        token_type = train_args.token_type
    if bpemodel is None:
        bpemodel = train_args.bpemodel
    if token_type == "bpe" and bpemodel is None:
        tokenizer = None
    else:
        tokenizer = build_tokenizer(token_type=token_type, bpemodel=bpemodel)
    converter = TokenIDConverter(token_list=token_list)
    if kenlm_file is not None or lexicon is not None:
        kenlm = KenLMDecoder(token_list, model.blank_id, kenlm_file, lexicon, beam_size, lm_weight, word_score,
                             kenlm_beam_threshold, word_boundary_token)
        decode = kenlm
        logger.info("flashlight-text CTC decoding (beam %d, LM %s, lexicon %s)", beam_size, kenlm_file, lexicon)
    else:
        drop_ids = {model.sos, model.eos}

        def decode(log_probs, lengths):
            return [(ids, score, None) for ids, score in ctc_greedy(log_probs, lengths, model.blank_id, drop_ids)]

        logger.info("greedy CTC decoding (batch size %d, device %s)", batch_size, device)

    loader = ASRTask.build_streaming_iterator(
        data_path_and_name_and_type, dtype=dtype, batch_size=batch_size, key_file=key_file,
        num_workers=num_workers, preprocess_fn=ASRTask.build_preprocess_fn(train_args, False),
        collate_fn=ASRTask.build_collate_fn(train_args, False),
        allow_variable_data_keys=allow_variable_data_keys, inference=True)
    with DatadirWriter(output_dir) as writer:
        best_writer = writer["1best_recog"]
        for keys, batch in loader:
            cpu_threads.apply().tick()  # other processes may have started or stopped
            batch = to_device(batch, device)
            speech, speech_lengths = batch["speech"], batch["speech_lengths"]
            # Longest first: RNN encoders pack the batch and need descending lengths.
            order = torch.argsort(speech_lengths, descending=True, stable=True)
            speech, speech_lengths = speech[order], speech_lengths[order]
            keys = [keys[i] for i in order.tolist()]
            enc, enc_lens = model.encode(speech.to(getattr(torch, dtype)), speech_lengths)
            if isinstance(enc, tuple):  # intermediate CTC outputs
                enc = enc[0]
            log_probs = model.ctc.log_softmax(enc).float()
            for key, (token_int, score, words) in zip(keys, decode(log_probs, enc_lens)):
                token = converter.ids2tokens(token_int)
                best_writer["token"][key] = " ".join(token)
                best_writer["token_int"][key] = " ".join(map(str, token_int))
                best_writer["score"][key] = str(score)
                if words is not None:
                    best_writer["text"][key] = words
                elif tokenizer is not None:
                    best_writer["text"][key] = tokenizer.tokens2text(token)


def model_sample_rate(asr_train_config: Optional[str]) -> int:
    """The sample rate the model's frontend takes (``frontend_conf.fs`` of its config; 16 kHz by default)."""
    if asr_train_config is None or not Path(asr_train_config).is_file():
        return 16000
    import humanfriendly
    import yaml

    with open(asr_train_config, encoding="utf-8") as f:
        fs = ((yaml.safe_load(f) or {}).get("frontend_conf") or {}).get("fs", 16000)
    return int(humanfriendly.parse_size(fs)) if isinstance(fs, str) else int(fs)


def check_inputs(args) -> None:
    """Before decoding: the GPUs, the model files, and every sample of every audio file (a missing, empty
    or NaN/Inf file stops decoding with its name; it would otherwise crash it or decode to nothing)."""
    from aqc.cli import check_ngpu
    from aqc.espnet.preflight import preflight_audio

    check_ngpu(args.ngpu)
    for option in ("asr_train_config", "asr_model_file"):
        path = getattr(args, option)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"--{option} {path} does not exist")
    preflight_audio(args.data_path_and_name_and_type, model_sample_rate(args.asr_train_config),
                    read_samples=True, what="decoding")


def use_archive(args) -> None:
    """``--model_archive X.zip``: decode the packed model (extracted beside the archive, once)."""
    if args.model_archive is None:
        return
    from aqc.packing import unpack

    if args.asr_train_config is not None or args.asr_model_file is not None:
        raise ValueError("--model_archive replaces --asr_train_config and --asr_model_file: give one or the other")
    files = unpack(args.model_archive)
    if files["kind"] != "asr":
        raise ValueError(f"--model_archive {args.model_archive} packs a pre-trained ({files['kind']}) model, not a "
                         "fine-tuned recogniser: load it with aqc.api.load_model")
    args.asr_train_config, args.asr_model_file = str(files["config"]), str(files["model_file"])


def main(cmd: Optional[List[str]] = None) -> None:
    """A user error (missing model or audio file, bad option) prints ``ERROR: ...`` and exits with 2."""
    from aqc.cli import run_cli

    run_cli(_main, cmd)


def _main(cmd: Optional[List[str]] = None) -> None:
    from espnet.utils.cli_utils import get_commandline_args

    print(get_commandline_args(), file=sys.stderr)
    args = get_parser().parse_args(cmd)
    use_archive(args)
    check_inputs(args)
    kwargs = vars(args)
    cpu_threads.apply(kwargs.pop("num_threads", None))
    kwargs.pop("config", None)
    kwargs.pop("model_archive", None)
    method = kwargs.pop("ctc_decoder")
    aqc_kwargs = {k: kwargs.pop(k) for k in
                  ("kenlm_file", "lexicon", "word_score", "kenlm_beam_threshold", "word_boundary_token")}
    with_kenlm = aqc_kwargs["kenlm_file"] is not None or aqc_kwargs["lexicon"] is not None
    if method == "auto":
        method = "flashlight" if with_kenlm else "greedy" if is_greedy(kwargs) else "espnet"
    if method == "flashlight":
        if not with_kenlm:
            raise ValueError("--ctc_decoder flashlight: give --kenlm_file (and --lexicon for word-level decoding)")
        if kwargs["lm_train_config"] is not None or kwargs["ngram_file"] is not None:
            raise ValueError("--kenlm_file/--lexicon (flashlight-text) cannot be combined with ESPnet's "
                             "--lm_train_config or --ngram_file")
        batched_inference(**kwargs, **aqc_kwargs)
    elif method == "greedy":
        if with_kenlm or kwargs["lm_train_config"] is not None or kwargs["ngram_file"] is not None:
            raise ValueError("--ctc_decoder greedy uses no language model")
        batched_inference(**kwargs)
    else:
        if with_kenlm:
            raise ValueError("--kenlm_file/--lexicon need --ctc_decoder flashlight (or auto)")
        from espnet2.bin.asr_inference import inference

        inference(**kwargs)


if __name__ == "__main__":
    main()
