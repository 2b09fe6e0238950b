"""The embedding models themselves, each run inside an embedding worker process.

A backend is built once (it loads its model) and then maps prepared audio (16 kHz, finite,
padded to whole seconds by ``embedders.prepare_audio``) to ``[frames, dim]`` float32. Heavy
imports happen in the constructors, so importing this module is cheap and has no side effects.

* ``MusicnnBackend``: musicnn (Pons and Serra, 2019), whose TF1 checkpoints ship inside the
  musicnn wheel: the offline default, usable without any download.
* ``SavedModelBackend``: VGGish or TRILL from a local TF-Hub SavedModel directory (spec §8.1).
* ``LogMelBackend``: one-second averages of our own log-mel features; no neural network, no
  TensorFlow. A cheap sanity baseline, and what the tests use to exercise the worker machinery.
"""

from __future__ import annotations

import os

import numpy as np

from music_spectrogram_diffusion.features import DEFAULT_FEATURES

SAMPLE_RATE = DEFAULT_FEATURES.sample_rate

# musicnn's input representation (musicnn/configuration.py and extractor.batch_data): 16 kHz,
# 512-point FFT, hop 256, 96 mel bins, log10(10000 x + 1) of the mel power spectrogram;
# the models were trained on 3-s patches of 187 frames.
MUSICNN_FFT = 512
MUSICNN_HOP = 256
MUSICNN_MELS = 96
MUSICNN_PATCH_FRAMES = 187
MUSICNN_MODELS = ("MSD_musicnn", "MTT_musicnn")
MUSICNN_LAYERS = {"penultimate": 200, "mean_pool": 753, "max_pool": 753, "taggram": 50}
_MUSICNN_BATCH = 64


class MusicnnBackend:
    """musicnn activations, one frame per 3-s patch, patches every ``hop_seconds``.

    The default, MSD_musicnn's 200-d ``penultimate`` layer (the batch-normalised dense layer
    before the tag logits), plays the role VGGish's 128-d embedding plays in the paper: a
    compact, semantically trained summary of a few seconds of music. MSD (Million Song Dataset)
    rather than MTT because its 50 tags cover more genres and instruments. Patches overlap (hop
    1 s by default, like VGGish's 0.96-s frames) so that a 5-s segment gives several frames and
    the Frechet statistics see enough frames.
    """

    def __init__(self, model: str, layer: str, hop_seconds: float):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs tf-keras.
        import tensorflow as tf

        from music_spectrogram_diffusion import dependencies

        musicnn = dependencies.require("musicnn")
        from musicnn import models

        # musicnn's graph code is TF1; this switch is why it lives in its own process.
        tf.compat.v1.disable_eager_execution()
        self.layer = layer
        self.hop_frames = max(1, int(round(hop_seconds * SAMPLE_RATE / MUSICNN_HOP)))
        self.dim = MUSICNN_LAYERS[layer]
        self._graph = tf.Graph()
        with self._graph.as_default():
            with tf.name_scope("model"):
                self._input = tf.compat.v1.placeholder(
                    tf.float32, [None, MUSICNN_PATCH_FRAMES, MUSICNN_MELS]
                )
                self._is_training = tf.compat.v1.placeholder(tf.bool)
                outputs = models.define_model(self._input, self._is_training, model, 50)
            logits, mean_pool, max_pool, penultimate = (outputs[0], *outputs[6:9])
            self._output = {
                "taggram": tf.nn.sigmoid(logits),
                "mean_pool": mean_pool,
                "max_pool": max_pool,
                "penultimate": penultimate,
            }[layer]
            self._session = tf.compat.v1.Session(graph=self._graph)
            checkpoint = os.path.join(os.path.dirname(musicnn.__file__), model) + os.sep
            tf.compat.v1.train.Saver().restore(self._session, checkpoint)

    def _patches(self, audio: np.ndarray) -> np.ndarray:  # -> [patches, 187, 96]
        import librosa

        mel = librosa.feature.melspectrogram(
            y=audio, sr=SAMPLE_RATE, hop_length=MUSICNN_HOP, n_fft=MUSICNN_FFT, n_mels=MUSICNN_MELS
        ).T  # [frames, 96]
        # musicnn's extractor computes 10000 * mel in float16, which overflows to inf (and the
        # network then outputs NaN) wherever mel power exceeds 6.55: common in loud music. The
        # log compression is the same, in float32.
        mel = np.log10(10000.0 * mel.astype(np.float32) + 1.0)
        if mel.shape[0] < MUSICNN_PATCH_FRAMES:
            # 0 is the representation's silence: short clips get one zero-padded patch.
            mel = np.pad(mel, [(0, MUSICNN_PATCH_FRAMES - mel.shape[0]), (0, 0)])
        starts = range(0, mel.shape[0] - MUSICNN_PATCH_FRAMES + 1, self.hop_frames)
        return np.stack([mel[s:s + MUSICNN_PATCH_FRAMES] for s in starts])

    def embed(self, audio: np.ndarray) -> np.ndarray:  # [samples] -> [patches, dim]
        patches = self._patches(np.asarray(audio, np.float32))
        outputs = []
        for start in range(0, len(patches), _MUSICNN_BATCH):
            feed = {self._input: patches[start:start + _MUSICNN_BATCH], self._is_training: False}
            outputs.append(self._session.run(self._output, feed_dict=feed))
        return np.concatenate(outputs).reshape(len(patches), self.dim).astype(np.float32)


class SavedModelBackend:
    """A TF-Hub SavedModel loaded from a local directory (no downloads).

    ``kind='vggish'`` calls ``model(waveform [N])`` -> ``[frames, 128]`` (google/vggish/1: one
    0.96-s frame per 0.96 s). ``kind='trill'`` calls ``model(samples=waveform [N],
    sample_rate=16000)['embedding']`` (nonsemantic-speech-benchmark/trill/3), as the original.
    A leading batch axis of size 1 in the output is dropped.
    """

    def __init__(self, path: str, kind: str):
        import tensorflow as tf

        self._tf = tf
        self.kind = kind
        self._model = tf.saved_model.load(path)
        # A one-second probe checks the signature now, not on the first real song.
        self.dim = self.embed(np.zeros(SAMPLE_RATE, np.float32)).shape[-1]

    def embed(self, audio: np.ndarray) -> np.ndarray:  # [samples] -> [frames, dim]
        waveform = self._tf.constant(np.asarray(audio, np.float32))
        if self.kind == "trill":
            output = self._model(samples=waveform, sample_rate=SAMPLE_RATE)["embedding"]
        else:
            output = self._model(waveform)
        output = np.asarray(output, np.float32)
        if output.ndim == 3 and output.shape[0] == 1:
            output = output[0]
        if output.ndim != 2:
            raise ValueError(f"{self.kind} model returned shape {output.shape}, not [frames, dim]")
        return output


class LogMelBackend:
    """Mean log-mel (our 128-bin features, spec §2.2) over each ``frame_seconds`` of audio."""

    def __init__(self, frame_seconds: float = 1.0):
        frames = int(round(frame_seconds * DEFAULT_FEATURES.frames_per_second))
        self.frames_per_embedding = max(1, frames)
        self.dim = DEFAULT_FEATURES.num_mels

    def embed(self, audio: np.ndarray) -> np.ndarray:  # [samples] -> [frames, 128]
        from music_spectrogram_diffusion.audio import spectrograms

        log_mel = spectrograms.compute_log_mel_numpy(np.asarray(audio, np.float32))
        num = max(1, log_mel.shape[0] // self.frames_per_embedding)
        usable = log_mel[: num * self.frames_per_embedding]
        if usable.shape[0] < self.frames_per_embedding:  # shorter than one frame: one average
            return log_mel.mean(axis=0, keepdims=True).astype(np.float32)
        return usable.reshape(num, self.frames_per_embedding, -1).mean(axis=1).astype(np.float32)
