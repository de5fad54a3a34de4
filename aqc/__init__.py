"""aqc: data2vec-aqc self-supervised speech learning (Lodagala, Ghosh, Umesh, ICASSP 2023)."""

__version__ = "0.1.0"
