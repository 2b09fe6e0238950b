#!/usr/bin/env python
"""The measured example of README "Train on your own recordings": fine-tune on a folder.

Builds the embedded dataset, writes its held-out pieces (never seen by the base model) as a
folder of .mid + .wav pairs with a splits.csv (by default through a low-pass "recording chain",
so that the folder sounds unlike the base model's data, as your own recordings would), prepares
it with ``msd-prepare-dataset folder``, trains a tiny base model on the embedded train split as
the main job does, fine-tunes it on the folder with gin/finetune/diffusion_context.gin, and
measures on the folder's test pieces, before (the fine-tuning run's checkpoint_0 = the base
model) and after:

* loss: the model's x0 L1 loss (eval mode) on fixed windows of the folder's test split;
* mel L1: ``msd-evaluate`` of whole test songs (first --max_seconds s, DPM-Solver++ 20 steps).

A control run continues the base model for as many steps on its own data (the embedded train
split, same fine-tuning schedule), to tell training longer from training on the folder.

    PYTHONPATH=. .venv/bin/python scripts/finetune_example.py --work /tmp/msd_finetune \\
        [--effect lowpass|none --num_pieces 40 --base_steps 200 --finetune_steps 100]

Every step is a package command, run through its ``main`` with the flags printed as a shell
command; re-running resumes each (finished datasets, checkpoints and evaluation rows are kept).
Prints and writes ``WORK/finetune_example.json``. About 6 min on a busy 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ("gin/models/diffusion_context/tiny.gin",)
MAIN_JOB = ("gin/main/train_cpu.gin", "gin/main/diffusion_cpu.gin")
FOLDER_TEST = "synthesis_with_context_folder_notes_ties_melgan_vb1_test"
FOLDER_FULL_TEST = "synthesis_with_context_full_folder_notes_ties_melgan_vb1_test"


def _shell(arg: str) -> str:
    """--gin.X='v' as a shell word people type: --gin.X="'v'"."""
    name, _, value = arg.partition("=")
    return f'{name}="{value}"' if "'" in value and '"' not in value else shlex.quote(arg)


COMMANDS: list[str] = []  # the commands run, as shell lines, for the JSON


def _run(command: str, main, argv: list[str]) -> None:
    COMMANDS.append(f"{command} {' '.join(_shell(a) for a in argv)}")
    print(f"\n$ {COMMANDS[-1]}", flush=True)
    start = time.perf_counter()
    code = main(argv)
    if code:
        raise SystemExit(f"{command} exited with status {code}")
    print(f"({command}: {time.perf_counter() - start:.0f} s)", flush=True)


def _train(argv: list[str], model_dir: str, steps: int) -> None:
    from music_spectrogram_diffusion.cli import train
    from music_spectrogram_diffusion.training import checkpoints

    if os.path.isdir(model_dir) and steps in checkpoints.list_checkpoints(model_dir):
        # msd-train on a run already at TRAIN_STEPS stops with StopIteration (its loader is
        # asked for a first batch that does not exist); nothing is left to do anyway.
        print(f"\n{model_dir} already holds checkpoint_{steps}: not training again")
        return
    _run("msd-train", train.main, argv)


def _gin_flags(files, **macros) -> list[str]:
    return [f"--gin_file={f}" for f in files] + [f"--gin.{k}={v!r}" if isinstance(v, str)
                                                 else f"--gin.{k}={v}" for k, v in macros.items()]


def held_out_splits(embedded_dir: str) -> dict[str, str]:
    """Embedded validation pieces -> folder train; embedded test pieces -> one folder
    validation piece, the rest folder test. None of them is in the base model's train split."""
    from music_spectrogram_diffusion.data import embedded_dataset

    manifest = embedded_dataset.load_manifest(embedded_dir)
    splits = {p.id: "train" for p in manifest.split("validation")}
    test = [p.id for p in manifest.split("test")]
    splits.update({piece_id: "validation" if i == 0 else "test" for i, piece_id in enumerate(test)})
    return splits


def apply_recording_effect(recordings: str, effect: str) -> None:
    """Makes the folder's audio unlike the base model's data, as another studio or microphone
    would: 'lowpass' = a 4th-order Butterworth low-pass at 1.5 kHz and 6 dB quieter (a muffled
    recording); 'none' keeps the rendered audio. Rewrites the folder's WAV files in place."""
    import glob

    import numpy as np
    import scipy.signal
    import soundfile

    from music_spectrogram_diffusion.audio.audio_io import write_wav

    if effect == "none":
        return
    sos = scipy.signal.butter(4, 1500, btype="lowpass", fs=16000, output="sos")
    for path in sorted(glob.glob(os.path.join(recordings, "*", "*.wav"))):
        samples, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000, path
        write_wav(path, (0.5 * scipy.signal.sosfilt(sos, samples)).astype(np.float32), rate)


def window_loss(checkpoint: str, data_dir: str, *, batches: int, batch_size: int) -> float:
    """Mean eval-mode loss over fixed windows (and noise) of the folder's test split."""
    import jax
    import numpy as np

    from music_spectrogram_diffusion.data.sources import registry
    from music_spectrogram_diffusion.inference.loading import load_trained_model

    loaded = load_trained_model(checkpoint)
    source = registry.get_batch_source(FOLDER_TEST, data_dir=data_dir, dataset="folder",
                                       split="eval")
    loss_fn = jax.jit(lambda params, batch, key: loaded.model.loss_fn(params, batch, key,
                                                                      train=False)[0])
    losses = [float(loss_fn(loaded.params, source.get_batch(i, batch_size, seed=0),
                            jax.random.fold_in(jax.random.PRNGKey(0), i)))
              for i in range(batches)]
    return float(np.mean(losses))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="folder for every output (resumable)")
    parser.add_argument("--num_pieces", type=int, default=40)
    parser.add_argument("--max_piece_seconds", type=float, default=20.0)
    parser.add_argument("--base_steps", type=int, default=200)
    parser.add_argument("--finetune_steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_seconds", type=float, default=10.0,
                        help="mel L1 on each test song's first seconds")
    parser.add_argument("--loss_batches", type=int, default=8)
    parser.add_argument("--effect", choices=("none", "lowpass"), default="lowpass",
                        help="what makes the folder's audio differ from the base model's data")
    args = parser.parse_args(argv)
    os.chdir(REPO)  # gin/... paths and the printed commands are relative to the checkout

    from music_spectrogram_diffusion.cli import evaluate, make_dataset, prepare_dataset
    from music_spectrogram_diffusion.data.sources import folder

    work = os.path.abspath(args.work)
    embedded, recordings = f"{work}/embedded", f"{work}/recordings"
    prepared, base, tuned = f"{work}/folder", f"{work}/base", f"{work}/finetuned"
    control = f"{work}/control"
    start = time.perf_counter()
    _run("msd-make-dataset", make_dataset.main,
         ["--out", embedded, "--num_pieces", str(args.num_pieces),
          "--max_piece_seconds", str(args.max_piece_seconds), "--quiet"])
    from music_spectrogram_diffusion.data import embedded_dataset

    splits = held_out_splits(embedded)
    names = [f"{split}/{piece_id}" for piece_id, split in splits.items()]
    done = os.path.join(recordings, f".written_{args.effect}")
    if not os.path.exists(done):  # written once: a rewrite would undo the recording effect
        names = folder.write_folder(embedded_dataset.load_manifest(embedded), recordings, splits)
        apply_recording_effect(recordings, args.effect)
        with open(done, "w", encoding="utf-8") as f:
            f.write("written\n")
    print(f"\nwrote {len(names)} held-out pieces as .mid + .wav pairs under {recordings} "
          f"(recording effect: {args.effect})")
    _run("msd-prepare-dataset", prepare_dataset.main,
         ["folder", "--source", recordings, "--out", prepared, "--quiet"])
    common = dict(BATCH_SIZE=args.batch_size, EVAL_STEPS=2)
    _train(_gin_flags(
        MODEL + ("gin/tasks/context_embedded.gin",) + MAIN_JOB, MODEL_DIR=base,
        DATA_DIR=embedded, TRAIN_STEPS=args.base_steps, CHECKPOINT_PERIOD=args.base_steps,
        **common), base, args.base_steps)
    _train(_gin_flags(
        MODEL + MAIN_JOB + ("gin/finetune/diffusion_context.gin",), MODEL_DIR=tuned,
        DATA_DIR=prepared, INITIAL_CHECKPOINT_PATH=base, TRAIN_STEPS=args.finetune_steps,
        CHECKPOINT_PERIOD=args.finetune_steps, EVAL_PERIOD=args.finetune_steps, **common),
        tuned, args.finetune_steps)
    # Control: the same schedule from the same base on its own data (the embedded train split),
    # so the table separates "trained longer" from "trained on the folder".
    _train(_gin_flags(
        MODEL + MAIN_JOB + ("gin/finetune/diffusion_context.gin",
                            "gin/tasks/context_embedded.gin"), MODEL_DIR=control,
        DATA_DIR=embedded, INITIAL_CHECKPOINT_PATH=base, TRAIN_STEPS=args.finetune_steps,
        CHECKPOINT_PERIOD=args.finetune_steps, EVAL_PERIOD=args.finetune_steps, **common),
        control, args.finetune_steps)
    steps = (0, args.finetune_steps)
    _run("msd-evaluate", evaluate.main,
         ["--model_dir", f"finetuned={tuned}", "--model_dir", f"control={control}",
          "--checkpoints", ",".join(map(str, steps)),
          "--task", FOLDER_FULL_TEST, "--data_dir", prepared, "--embedders", "logmel",
          "--no_transcription", "--max_seconds", str(args.max_seconds),
          "--out", f"{work}/eval"])
    with open(f"{work}/eval/results.json", encoding="utf-8") as f:
        rows = {(row["label"].split(" @ ")[0], row["step"]): row for row in json.load(f)["rows"]
                if row.get("kind") == "model"}
    result = {"commands": COMMANDS, "args": vars(args),
              "folder_pieces": {s: sum(1 for n in names if n.startswith(s + "/"))
                                for s in ("train", "validation", "test")}}
    for label, run, model_dir, step in (
            ("before", "finetuned", tuned, 0), ("after", "finetuned", tuned, args.finetune_steps),
            ("control_after", "control", control, args.finetune_steps)):
        checkpoint = f"{model_dir}/checkpoint_{step}"
        result[label] = {
            "checkpoint": checkpoint,
            "test_window_loss": window_loss(checkpoint, prepared, batches=args.loss_batches,
                                            batch_size=args.batch_size),
            "test_mel_l1": rows[run, step]["metrics"]["mel_l1"]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    with open(f"{work}/finetune_example.json", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
