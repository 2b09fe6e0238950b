"""Installs music_spectrogram_diffusion.

Version bounds here say what is known to work; requirements/constraints.txt pins the exact set
that scripts/setup_env.sh installs. Wheels whose metadata pins impossible versions (basic-pitch,
musicnn, tinysoundfont's optional PyAudio) are listed in music_spectrogram_diffusion/dependencies.py
and installed with --no-deps after this package:

    pip install ".[eval]"
    pip install --no-deps $(python -m music_spectrogram_diffusion.dependencies)

The gin/ folder is shipped inside the package (music_spectrogram_diffusion/gin/ once installed),
so --gin_file=gin/... works from any directory (gin_config.gin_root()).
"""

import glob
import os


import setuptools

_CORE = [
    "jax>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12,<0.13",
    "gin-config>=0.5,<0.6",
    "seqio>=0.0.20",
    "tensorflow>=2.21,<2.22",
    "tensorflow-text>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "note-seq>=0.0.5",
    "librosa>=0.11,<0.12",
    "pretty_midi>=0.2.11",
    "mido>=1.3",
    "soundfile>=0.13",
    "numpy>=2.0",
    "protobuf>=5",  # note_seq's NoteSequence; google.protobuf in the TFRecord reader
    "scipy>=1.13",
    "tqdm>=4.66",
    "music21>=10.0",
    "matplotlib>=3.8",
    "pyyaml>=6",  # Slakh2100 metadata.yaml
    "tensorboard>=2.21",
    "grain>=0.2.18,<0.3",  # the input pipeline (worker processes, checkpointable iterators)
    "array_record>=0.8",
    "tensorstore>=0.1.60",  # t5x checkpoints (msd-import-weights)
    "msgpack>=1.0",
    "safetensors>=0.4",  # diffusers weights (msd-import-weights / msd-export-weights)
    "ml_dtypes>=0.5",  # bfloat16 arrays of t5x checkpoints
    "absl-py>=2.1",  # Grain's worker processes read absl flags
    "psutil>=5.9",  # peak memory in the input-pipeline benchmark
]

_EXTRAS = {
    # Evaluation: transcription F1 (basic-pitch, installed --no-deps by the set-up script) and
    # the musicnn embedder (also --no-deps; needs TF_USE_LEGACY_KERAS=1 and tf-keras).
    "eval": [
        "mir_eval>=0.8",
        "resampy>=0.4",
        "onnxruntime>=1.20",
        "tf-keras>=2.21,<2.22",
        "tensorflow-probability>=0.25",
    ],
    "test": [
        "pytest>=8",
        "pytest-xdist>=3",
        "nbformat>=5",
        "nbclient>=0.10",
        "ipykernel>=6",
        "onnx>=1.16",  # builds the small ONNX graphs the MelGAN vocoder tests run
    ],
    # Only to read diffusers' pickled .bin weights (msd-import-weights; safetensors needs no torch)
    # and for the optional comparison with the PyTorch port. Pulls a large wheel: not in [test].
    "torch": ["torch>=2.4"],
}

_GIN_FILES = sorted(os.path.relpath(path, "gin")
                    for path in glob.glob(os.path.join("gin", "**", "*.gin"), recursive=True))

setuptools.setup(
    name="music-spectrogram-diffusion",
    version="0.1.0",
    description="Multi-instrument music synthesis with spectrogram diffusion (JAX/Flax).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[*setuptools.find_packages(include=["music_spectrogram_diffusion",
                                                 "music_spectrogram_diffusion.*"]),
              "music_spectrogram_diffusion.gin"],
    # gin/ (at the top of the checkout) becomes the package data folder music_spectrogram_diffusion/gin.
    package_dir={"music_spectrogram_diffusion.gin": "gin"},
    package_data={"music_spectrogram_diffusion.gin": _GIN_FILES},
    install_requires=_CORE,
    extras_require=_EXTRAS,
    entry_points={
        "console_scripts": [
            "msd-main=music_spectrogram_diffusion.cli.main:main",
            "msd-tokenize=music_spectrogram_diffusion.cli.tokenize:main",
            "msd-make-dataset=music_spectrogram_diffusion.cli.make_dataset:main",
            "msd-train=music_spectrogram_diffusion.cli.train:main",
            "msd-train-vocoder=music_spectrogram_diffusion.cli.train_vocoder:main",
            "msd-synthesize=music_spectrogram_diffusion.cli.synthesize:main",
            "msd-evaluate=music_spectrogram_diffusion.cli.evaluate:main",
            "msd-prepare-dataset=music_spectrogram_diffusion.cli.prepare_dataset:main",
            "msd-build-store=music_spectrogram_diffusion.cli.build_store:main",
            "msd-import-weights=music_spectrogram_diffusion.cli.import_weights:main",
            "msd-export-weights=music_spectrogram_diffusion.cli.export_weights:main",
        ],
    },
)
