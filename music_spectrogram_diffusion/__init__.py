"""Multi-instrument music synthesis with spectrogram diffusion, in JAX/Flax.

The sub-packages follow the pipeline: ``data`` (MIDI -> note tokens, audio windows,
datasets and seqio tasks), ``audio`` (log-mel front end, audio I/O, vocoders),
``models`` (T5 networks), ``diffusion`` (schedules, losses, samplers), ``training``,
``inference`` (whole-MIDI synthesis) and ``evaluation`` (metrics and runners).
Importing the package has no side effects: nothing is registered until asked for.
"""

__version__ = "0.1.0"
