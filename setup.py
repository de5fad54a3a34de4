"""aqc: data2vec-aqc self-supervised speech pre-training as an ESPnet plug-in."""
from setuptools import find_packages, setup

# Exact, known-good pins live in tools/requirements/*.txt (tools/install.sh installs those);
# these are the loose requirements of the package itself.
install_requires = [
    "torch>=2.1",
    "torchaudio>=2.1",
    "espnet>=202402",
    "fast-pytorch-kmeans>=0.2.2",
    "psutil",  # imported by fast-pytorch-kmeans without being declared
    "torchaudio-augmentations>=0.2.4",
    "julius",  # torchaudio-augmentations' filters
    "pedalboard>=0.9",  # Freeverb-style reverb without sox
    "sentencepiece",
    "kaldiio",
    "soundfile",
    "editdistance",  # WER/CER scoring
    "tqdm",
    "threadpoolctl",  # numpy's BLAS pool at one thread beside the model's (aqc.cpu_threads)
    "numpy",
    "PyYAML",
]

setup(
    name="aqc",
    version="0.1.0",
    description="data2vec-aqc self-supervised speech pre-training (ICASSP 2023) as an ESPnet plug-in",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["aqc", "aqc.*"]),
    install_requires=install_requires,
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3.6", "transformers>=4.40", "safetensors"],
        "dev": ["pytest>=7", "pytest-xdist>=3.6", "transformers>=4.40", "safetensors", "ruff"],
    },
)
