"""Reading audio files as 16 kHz mono float32, and writing 16-bit WAV files atomically.

Reading uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, AIFF, MP3 and more), averages the
channels to mono, and resamples with ``librosa.resample`` when the file's rate differs (spec
§2.1). The original passed the rates positionally, which librosa >= 0.10 rejects (§11.12); here
they are keyword arguments.

Every problem with a file raises ``AudioError`` with one message that names the file.
``write_wav`` writes to a temporary file in the destination directory and renames it into
place, so a failed write never leaves a partial file or clobbers an existing one.
"""

from __future__ import annotations

import os

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

PathLike = str | os.PathLike


class AudioError(ValueError):
    """An audio file that is missing, unreadable, empty, or cannot be written."""


def load_audio(
    path: PathLike,
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
) -> np.ndarray:  # [num_samples] float32 mono at sample_rate
    """Reads an audio file of any rate and channel count as mono float32 at ``sample_rate``.

    Channels are averaged (as ``librosa.to_mono``); the rate is converted with librosa's
    default high-quality resampler (soxr).

    Raises:
      AudioError: the file is missing, not a readable audio file, or holds no samples.
    """
    import soundfile

    path = os.fspath(path)
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"{path}: sample rate must be a positive integer, got {sample_rate!r}")
    if not os.path.exists(path):
        raise AudioError(f"{path}: audio file not found")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: audio file is empty (0 bytes)")
    try:
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports unknown formats and corrupt data variously.
        raise AudioError(f"{path}: not a readable audio file ({e})") from e
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file holds no samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: audio file holds NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float32)  # [num_samples]
    if file_rate != sample_rate:
        import librosa

        try:
            mono = librosa.resample(mono, orig_sr=file_rate, target_sr=sample_rate)
        except Exception as e:  # soxr rejects some rates and lengths with assorted types.
            raise AudioError(f"{path}: cannot resample from {file_rate} Hz to {sample_rate} Hz "
                             f"({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(
    path: PathLike,
    samples: np.ndarray,  # [num_samples] or [num_samples, channels], nominally in [-1, 1]
    sample_rate: int = DEFAULT_FEATURES.sample_rate,
) -> None:
    """Writes a 16-bit PCM WAV file atomically (``file_io.write_file_atomic``).

    Samples outside [-1, 1] are clipped (16-bit PCM cannot hold them). The destination
    directory must exist.

    Raises:
      AudioError: the samples are not 1-D/2-D finite numbers, the sample rate is not a
        positive integer, or the file cannot be written. Nothing is left at ``path`` (an
        existing file there is untouched) and no temporary file remains.
    """
    import soundfile

    path = os.fspath(path)
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise AudioError(
            f"{path}: expected samples of shape [num_samples] or [num_samples, channels], "
            f"got {samples.shape}"
        )
    if not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"{path}: samples must be floats in [-1, 1], got dtype {samples.dtype}")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: samples must be finite (got NaN or inf)")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"{path}: sample rate must be a positive integer, got {sample_rate!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise AudioError(f"{path}: directory {directory} does not exist")
    clipped = np.clip(samples.astype(np.float64), -1.0, 1.0)

    try:
        file_io.write_file_atomic(path, lambda f: soundfile.write(
            f, clipped, int(sample_rate), subtype="PCM_16", format="WAV"))
    except Exception as e:
        raise AudioError(f"{path}: could not write WAV file ({e})") from e
