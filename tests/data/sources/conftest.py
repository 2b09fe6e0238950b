"""Shared check for the dataset readers' tests: prepared pieces -> task examples -> batches."""

import numpy as np
import pytest

from music_spectrogram_diffusion.data import note_sequences, tasks
from music_spectrogram_diffusion.data.sources import registry
from music_spectrogram_diffusion.features import DEFAULT_FEATURES


def _check_end_to_end(manifest, expected):
    """Reads every prepared piece through a full-song task and checks that its note tokens
    decode to the expected programs and drums and that its real frames hold sound; then checks
    that the train tasks (with and without context) yield model batches of the documented
    shapes, deterministically."""
    dataset = manifest.dataset
    registry.register_dataset_specs()
    spec = registry.DATASET_SPECS[dataset]
    assert {p.id for p in manifest.pieces} == {k for k, e in expected.items() if not e.error}
    for split in spec.splits:
        if not manifest.split(split):
            continue
        task = tasks.TaskSpec(f"full_{dataset}_{split}", spec, "full", False, {"eval": split})
        source = tasks.ExampleSource(task, "eval", manifest.data_dir)
        by_piece = {}
        for i in range(source.num_examples):
            example = source.example(0, i)
            by_piece.setdefault(example["piece_id"], []).append(example)
        assert set(by_piece) == {p.id for p in manifest.split(split)}
        for piece_id, segments in by_piece.items():
            assert expected[piece_id].split == split
            frames = DEFAULT_FEATURES.segment_frames
            decoded = note_sequences.decode_tokens_to_note_sequence(
                [(k * frames / DEFAULT_FEATURES.frames_per_second, s["note_tokens"])
                 for k, s in enumerate(segments)])
            assert decoded.num_invalid_events == 0
            notes = decoded.note_sequence.notes
            programs = tuple(sorted({n.program for n in notes if not n.is_drum}))
            assert programs == expected[piece_id].programs, piece_id
            assert any(n.is_drum for n in notes) == expected[piece_id].has_drums, piece_id
            real = segments[0]["target_frames"][segments[0]["target_mask"] > 0]
            assert real.shape[0] > 0
            assert real.max() > DEFAULT_FEATURES.min_log_mel + 5.0  # audible, not silence
    for with_context in (False, True):
        prefix = registry.PREFIXES[with_context]
        batch_source = registry.get_batch_source(
            tasks.task_name(prefix, dataset, "train", tasks.DEFAULT_VOCABULARY),
            data_dir=manifest.data_dir, dataset=dataset, split="train")
        batch = batch_source.get_batch(0, 2, seed=0)
        assert batch["note_tokens"].shape == (2, 2048) and batch["note_tokens"].dtype == np.int32
        assert batch["target_frames"].shape == (2, 256, 128)
        assert batch["context_mask"].shape == (2, 256)
        assert np.all(batch["note_tokens"][:, 0] > 0)  # every window holds tokens (tie or EOS)
        again = batch_source.get_batch(0, 2, seed=0)
        np.testing.assert_array_equal(batch["target_frames"], again["target_frames"])


@pytest.fixture(scope="session")
def check_end_to_end():
    return _check_end_to_end
