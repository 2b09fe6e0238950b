"""MIDI files in, WAV files out: the library side of ``msd-synthesize``.

``synthesize_files`` checks and tokenizes every input before it loads anything, so a bad file
among many fails in seconds; then it loads the vocoder and the trained model once and
synthesizes the files one after another with the same compiled functions, writing per file:

  <name>.wav      16-bit PCM at 16 kHz
  <name>.npy      the unscaled log-mel [frames, 128] (``save_mel``)
  <name>.png      a spectrogram picture (``plot``)

Each file is written under a temporary name and renamed once all of a MIDI file's outputs are
complete, so an error or an interrupt never leaves a half-written or partial set of outputs.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections.abc import Sequence

import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.audio import audio_io
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.inference.synthesis import (
    PreparedMidi,
    SynthesisConfig,
    SynthesisError,
    SynthesisResult,
    Synthesizer,
    prepare_midi,
)

logger = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """Where one MIDI file's results go."""

    midi: str
    wav: str

    @property
    def mel(self) -> str:
        return os.path.splitext(self.wav)[0] + ".npy"

    @property
    def png(self) -> str:
        return os.path.splitext(self.wav)[0] + ".png"

    @property
    def partial_wav(self) -> str:
        """The WAV that grows while ``--stream`` samples; replaced by ``wav`` at the end."""
        return os.path.splitext(self.wav)[0] + ".partial.wav"


@dataclasses.dataclass(frozen=True)
class FileReport:
    """What was written for one MIDI file, and how fast."""

    paths: OutputPaths
    written: tuple[str, ...]
    result: SynthesisResult


def collect_midi_files(inputs: Sequence[str]) -> list[str]:
    """The MIDI files named by ``inputs``: files as given, directories' *.mid/*.midi sorted.

    Directories are not searched recursively (two songs of the same name in different
    sub-directories would write the same output file).

    Raises:
      SynthesisError: no inputs, a path that does not exist, or a directory without MIDI files.
    """
    if not inputs:
        raise SynthesisError("no MIDI input given")
    files: list[str] = []
    for path in inputs:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(MIDI_SUFFIXES)
                           and os.path.isfile(os.path.join(path, name)))
            if not found:
                raise SynthesisError(
                    f"{path}: directory has no MIDI files ({', '.join(MIDI_SUFFIXES)})")
            files.extend(found)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise SynthesisError(f"{path}: no such MIDI file")
    return files


def plan_outputs(inputs: Sequence[str], midi_files: Sequence[str], out: str) -> list[OutputPaths]:
    """Output paths: ``out`` itself for one MIDI file given as a file and ``out`` ending in
    .wav; otherwise ``out`` is a directory and each file goes to ``out/<name>.wav``.

    Raises:
      SynthesisError: a .wav ``out`` for several files, an ``out`` that is an existing file
        when a directory is needed, or two inputs with the same name.
    """
    single = len(inputs) == 1 and not os.path.isdir(inputs[0])
    if single and out.lower().endswith(".wav") and not os.path.isdir(out):
        return [OutputPaths(midi_files[0], out)]
    if out.lower().endswith(".wav") and not os.path.isdir(out):
        raise SynthesisError(f"{out}: one .wav output for {len(midi_files)} MIDI files; give an "
                             "output directory instead")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SynthesisError(f"{out}: exists and is not a directory")
    plans, seen = [], {}
    for midi in midi_files:
        name = os.path.splitext(os.path.basename(midi))[0]
        if name in seen:
            raise SynthesisError(f"{midi} and {seen[name]} would both write {name}.wav in {out}")
        seen[name] = midi
        plans.append(OutputPaths(midi, os.path.join(out, name + ".wav")))
    return plans


def spectrogram_png(
    log_mel: np.ndarray,  # [frames, mels] unscaled log-mel
    *,
    title: str = "",
    features: FeatureConfig = DEFAULT_FEATURES,
) -> bytes:
    """A labelled spectrogram picture (time in seconds, mel bins, colour = log-mel) as PNG."""
    return spectrograms_png([(title, log_mel)], features=features)


def spectrograms_png(
    panels: Sequence[tuple[str, np.ndarray]],  # (title, [frames, mels] unscaled log-mel)
    *,
    title: str = "",
    features: FeatureConfig = DEFAULT_FEATURES,
) -> bytes:
    """``spectrograms_figure`` as PNG."""
    return figure_png(spectrograms_figure(panels, title=title, features=features))


def figure_png(figure) -> bytes:
    """A matplotlib Figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def spectrograms_figure(
    panels: Sequence[tuple[str, np.ndarray]],  # (title, [frames, mels] unscaled log-mel)
    *,
    title: str = "",
    features: FeatureConfig = DEFAULT_FEATURES,
):
    """Labelled spectrograms stacked on one time axis (seconds), one titled panel each, with
    one colour scale (ln mel) and an overall ``title``: a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    frames = max(log_mel.shape[0] for _, log_mel in panels)
    figure = Figure(figsize=(max(6.0, min(24.0, frames / 80.0)), 0.4 + 2.8 * len(panels)),
                    dpi=100)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (panel_title, log_mel) in zip(axes, panels):
        image = ax.imshow(
            np.asarray(log_mel, np.float32).T, origin="lower", aspect="auto", cmap="magma",
            vmin=features.min_log_mel, vmax=features.max_log_mel,
            extent=(0.0, log_mel.shape[0] / features.frames_per_second, 0, log_mel.shape[1]))
        ax.set_ylabel("mel bin")
        if panel_title:
            ax.set_title(panel_title)
        figure.colorbar(image, ax=ax, label="ln mel")
    axes[-1].set_xlabel("time (s)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def write_outputs(result: SynthesisResult, paths: OutputPaths, *, save_mel: bool = False,
                  plot: bool = False) -> tuple[str, ...]:
    """Writes the WAV (and the .npy / .png) of one result; all or nothing.

    Every file is written to a temporary name first (``file_io.atomic_file_set``); the renames
    happen only once all are complete. On any error nothing of this result is left behind.

    Raises:
      SynthesisError: the audio is not finite (a diverged model).
      audio_io.AudioError: a file cannot be written (the message names it).
    """
    if not np.all(np.isfinite(result.audio)):
        raise SynthesisError(f"{paths.midi}: the model produced non-finite audio (NaN or inf); "
                             "nothing written")
    outputs = [paths.wav] + ([paths.mel] if save_mel else []) + ([paths.png] if plot else [])
    temps: dict[str, str] = {}
    try:
        with file_io.atomic_file_set() as temp_for:
            temps = {final: temp_for(final) for final in outputs}
            audio_io.write_wav(temps[paths.wav], result.audio, result.sample_rate)
            if save_mel:
                with open(temps[paths.mel], "wb") as f:
                    np.save(f, result.log_mel.astype(np.float32))
            if plot:
                title = f"{os.path.basename(paths.midi)}: {result.audio_seconds:.1f} s"
                with open(temps[paths.png], "wb") as f:
                    f.write(spectrogram_png(result.log_mel, title=title))
    except OSError as e:
        # Name the output the user asked for, not its temporary file.
        finals = {temp: final for final, temp in temps.items()}
        name = finals.get(e.filename) or paths.wav
        raise audio_io.AudioError(f"{name}: cannot write output ({e.strerror or e})") from e
    return tuple(outputs)


def stream_outputs(synthesizer: Synthesizer, prepared: PreparedMidi, paths: OutputPaths, *,
                   save_mel: bool = False, plot: bool = False, show_progress: bool = False
                   ) -> tuple[SynthesisResult, tuple[str, ...]]:
    """Synthesizes one file, appending each segment's audio to ``paths.partial_wav`` as soon
    as it is sampled and vocoded (the header is updated after every chunk, so the file plays
    while it grows), then writes the final outputs with ``write_outputs`` and removes the
    partial file. The final WAV is the one ``synthesize_prepared`` gives for the same seed.
    On any error or interrupt the partial file is removed and nothing else is written.
    """
    import soundfile

    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prepared.segments), unit="segment", desc=prepared.name, leave=True)
    partial = paths.partial_wav
    result = None
    try:
        try:
            sink = soundfile.SoundFile(partial, "w", samplerate=synthesizer.features.sample_rate,
                                       channels=1, subtype="PCM_16", format="WAV")
        except (OSError, RuntimeError) as e:
            raise audio_io.AudioError(f"{partial}: cannot write streamed output ({e})") from e
        with sink:
            for chunk in synthesizer.stream_prepared(prepared):
                if not np.all(np.isfinite(chunk.audio)):
                    raise SynthesisError(f"{paths.midi}: the model produced non-finite audio "
                                         f"(NaN or inf) in segment {chunk.segment_index}; "
                                         "nothing written")
                sink.write(np.clip(chunk.audio.astype(np.float64), -1.0, 1.0))
                sink.flush()
                if bar is not None:
                    bar.set_postfix(rtf=f"{chunk.real_time_factor:.3g}",
                                    audio=f"{chunk.end_sample / chunk.sample_rate:.1f}s")
                    bar.update(1)
                result = chunk.result
        assert result is not None
        written = write_outputs(result, paths, save_mel=save_mel, plot=plot)
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(partial):
            os.remove(partial)
    return result, written


def synthesize_files(
    checkpoint: str,
    inputs: Sequence[str],
    out: str,
    *,
    config: SynthesisConfig = SynthesisConfig(),
    vocoder: str = "griffin-lim",
    save_mel: bool = False,
    plot: bool = False,
    show_progress: bool = True,
    stream: bool = False,
    features: FeatureConfig = DEFAULT_FEATURES,
) -> list[FileReport]:
    """Synthesizes MIDI files with a trained model (``msd-synthesize``).

    Args:
      checkpoint: a training MODEL_DIR or MODEL_DIR/checkpoint_<step>.
      inputs: MIDI files and/or directories of MIDI files.
      out: a .wav path (one MIDI file) or an output directory (created if needed).
      config: sampler, seed, release tail and limits.
      vocoder: 'griffin-lim' or a trained vocoder directory (see ``load_vocoder``).
      save_mel, plot: also write <name>.npy / <name>.png beside each WAV.
      show_progress: a tqdm bar per file, one step per 5.12 s segment, with the real-time
        factor.
      stream: write each segment's audio to <name>.partial.wav as soon as it is sampled
        (``stream_outputs``); the final files are the same as without streaming.

    Raises:
      CheckpointLoadError, VocoderCheckpointError, SynthesisError, MidiError,
      NoteSequenceError, AudioError: one message naming the file; nothing is written for
      files that were not synthesized completely.
    """
    from music_spectrogram_diffusion.audio.vocoders.base import load_vocoder
    from music_spectrogram_diffusion.inference.loading import load_trained_model, load_vocabulary

    midi_files = collect_midi_files(inputs)
    plans = plan_outputs(inputs, midi_files, out)
    # Read and tokenize everything (with the run's vocabulary, e.g. 127 velocity bins) before
    # loading the model: a bad file fails in seconds.
    vocab = load_vocabulary(checkpoint)
    prepared = [prepare_midi(plan.midi, config=config, vocab=vocab, features=features)
                for plan in plans]
    vocoder_object = load_vocoder(vocoder, features=features)
    loaded = load_trained_model(checkpoint)
    synthesizer = Synthesizer(loaded.model, loaded.params, vocoder_object, config=config,
                              vocab=loaded.vocab, features=features)
    reports = []
    for plan, item in zip(plans, prepared):
        if stream:
            result, written = stream_outputs(synthesizer, item, plan, save_mel=save_mel,
                                             plot=plot, show_progress=show_progress)
        else:
            result = synthesizer.synthesize_prepared(item, show_progress=show_progress)
            written = write_outputs(result, plan, save_mel=save_mel, plot=plot)
        logger.info("%s -> %s: %.1f s of audio, real-time factor %.3g (model %.1f s, vocoder "
                    "%.1f s)", plan.midi, plan.wav, result.audio_seconds, result.real_time_factor,
                    result.spectrogram_seconds, result.vocoder_seconds)
        reports.append(FileReport(plan, written, result))
    return reports
