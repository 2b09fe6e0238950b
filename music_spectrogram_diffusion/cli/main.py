"""msd-main: the README's main job, the paper's ablation at CPU size (jobs/main_job.py).

    msd-main [--quick] [--budget_minutes 30] [--data_dir DIR] [--out results]

Builds the embedded dataset, trains the autoregressive model, diffusion without and with
context and a vocoder with the real trainers and gin files, evaluates every checkpoint (step 0
included) against the baselines on the test split, prints the comparison table and writes it
with plots and example WAVs under --out. About 30 minutes on an idle 2-core CPU by default;
``--quick`` is a short smoke run (8 pieces, 30 steps per model, untrained-looking output).
Re-running resumes every stage. Exits 2 with one message on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time

from music_spectrogram_diffusion.cli import flags


PROG = "msd-main"


def _parser() -> argparse.ArgumentParser:
    parser = flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run")
    parser.add_argument("--budget_minutes", "--budget-minutes", type=float, default=30.0,
                        help="approximate wall time on an idle 2-core CPU (ignored by --quick)")
    parser.add_argument("--data_dir", "--data-dir",
                        help="embedded dataset directory (built if missing; "
                        "default data/embedded, or data/embedded_quick with --quick)")
    parser.add_argument("--out", help="results directory (default results, or results/quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_workers", "--num-workers", type=int, default=2,
                        help="dataset build processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    from music_spectrogram_diffusion.audio.vocoders.checkpoints import VocoderCheckpointError
    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.data.rendering import RenderError
    from music_spectrogram_diffusion.dependencies import MissingDependencyError
    from music_spectrogram_diffusion.evaluation import runner
    from music_spectrogram_diffusion.jobs import main_job
    from music_spectrogram_diffusion.evaluation.embedders import EmbedderError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes
    suffix = "_quick" if args.quick else ""
    data_dir = args.data_dir or os.path.join("data", "embedded" + suffix)
    out_dir = args.out or os.path.join("results", "quick" if args.quick else "")
    start = time.perf_counter()
    try:
        config = main_job.MainJobConfig.for_budget(args.budget_minutes, quick=args.quick)
    except ValueError as e:
        return flags.fail(PROG, e, {"budget_minutes": "--budget_minutes"})
    config = dataclasses.replace(config, seed=args.seed)
    try:
        result = main_job.run_main_job(data_dir=data_dir, out_dir=out_dir, config=config,
                                       num_workers=args.num_workers)
    except (DatasetError, RenderError, runner.EvaluationError, VocoderCheckpointError,
            EmbedderError, MissingDependencyError) as e:
        return flags.fail(PROG, e)
    with open(result.report_paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    print("\n".join(main_job.mel_l1_check(result.rows)))
    print(f"Wrote {', '.join(result.report_paths.values())}, examples/ and tensorboard/ in "
          f"{result.out_dir}; done in {(time.perf_counter() - start) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
