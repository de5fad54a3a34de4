"""data2vec-aqc model components and factories (torchaudio wav2vec2 style)."""
from .config import Data2VecAQCConfig
from .model import CollapseError, Data2VecAQC

__all__ = ["Data2VecAQC", "Data2VecAQCConfig", "CollapseError", "data2vec_aqc_base", "data2vec_aqc_tiny",
           "TINY_OVERRIDES"]


def data2vec_aqc_base(**overrides) -> Data2VecAQC:
    """The paper's Base model: 7-layer 512-channel CNN, 12 x 768 post-LN transformer (93.8 M parameters
    in the student). Keyword arguments override :class:`Data2VecAQCConfig` fields."""
    return Data2VecAQC(Data2VecAQCConfig(**overrides))


# Same code paths as Base, small enough for CPU tests and the default low-resource recipes.
TINY_OVERRIDES = dict(
    conv_layers=[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64, 2, 2)] * 2,
    embed_dim=64,
    ffn_dim=256,
    num_layers=4,
    num_heads=4,
    pos_conv_kernel=19,
    pos_conv_groups=4,
    pos_conv_depth=2,
    top_k_layers=2,
    latent_vars=64,
    latent_groups=2,
    codebook_dim=64,
    num_negatives=20,
    layerdrop=0.0,
    collapse_check_after=-1,
)


def data2vec_aqc_tiny(**overrides) -> Data2VecAQC:
    """A tiny model (about 0.3 M parameters) with every Base code path; overrides as for Base."""
    return Data2VecAQC(Data2VecAQCConfig(**{**TINY_OVERRIDES, **overrides}))
