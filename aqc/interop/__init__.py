"""Interoperability: export to Hugging Face and s3prl, import fairseq data2vec / data2vec-aqc checkpoints.

Converters live here, apart from the model: :mod:`aqc.models` never knows other toolkits' names.

* :mod:`.hf` - ``transformers.Data2VecAudioModel`` folders (export, load back).
* :mod:`.s3prl` - s3prl ``data2vec`` upstream checkpoints (ESPnet ``frontend: s3prl``).
* :mod:`.fairseq` - fairseq checkpoints (import; the fairseq names s3prl also uses).
* :mod:`.checkpoint` - a restricted unpickler for reading them without fairseq or omegaconf.
* :mod:`.keymap` - the parameter-name maps.
"""
from .checkpoint import CheckpointReadError, read_checkpoint
from .fairseq import ImportReport, UnsupportedCheckpointError, import_fairseq_checkpoint
from .hf import HFExportError, build_hf_model, export_hf, load_hf_dir
from .s3prl import export_s3prl, s3prl_checkpoint

__all__ = [
    "CheckpointReadError",
    "HFExportError",
    "ImportReport",
    "UnsupportedCheckpointError",
    "build_hf_model",
    "export_hf",
    "export_s3prl",
    "import_fairseq_checkpoint",
    "load_hf_dir",
    "read_checkpoint",
    "s3prl_checkpoint",
]
