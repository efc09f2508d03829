"""``python -m vitlib.lab.results.speed``: how much of the machine a training config leaves to the model.

:func:`fit_speed` runs short fits of whole training configs (``--fit``) and sets each one's
training images/s against its bare step (e.g. to see what RandAugment and CutMix / MixUp cost);
:func:`compare_bare_steps` compares the bare steps of model variants (``--model``). The timing
itself is :class:`vitlib.support.callbacks.ThroughputMonitor`'s.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ...config import ViTConfig
from ...model import ViT, count_parameters
from ...support.callbacks import bare_step_images_per_s
from ...support.files import write_json_atomic
from ...support.provenance import git_commit, this_machine
from ...support.run_folder import final_metrics, history, version_folder


def compare_bare_steps(models: dict[str, dict[str, Any]], batch_size: int = 128, steps: int = 10) -> list[dict[str, Any]]:
    """Bare-step images/s of several ``vit``-preset variants (``{name: ViTConfig overrides}``),
    measured one after the other in this process on random images; each row also gives its speed
    relative to the first."""
    rows = []
    # The first measurement of a process runs slow (thread pool, allocator): warm up, discard it.
    warm = ViT(ViTConfig.from_preset("vit", **next(iter(models.values()))))
    bare_step_images_per_s(warm, torch.randn(batch_size, 3, 32, 32), torch.randint(0, 100, (batch_size,)), steps=steps)
    for name, overrides in models.items():
        model = ViT(ViTConfig.from_preset("vit", **overrides))
        images = torch.randn(batch_size, 3, model.cfg.image_size, model.cfg.image_size)
        labels = torch.randint(0, model.cfg.num_classes, (batch_size,))
        rate = bare_step_images_per_s(model, images, labels, steps=steps)
        rows.append({"name": name, "overrides": overrides, "parameters": count_parameters(model), "images_per_s": rate})
    for row in rows:
        row["relative_to_first"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def fit_speed(configs: dict[str, str], data_dir: str | None = None, batches: int = 150, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Training images/s of real ``vitlib fit`` runs against the bare step of the same model in
    the same process: for each ``{name: config file}`` a fit of two epochs of ``batches`` batches
    (the first one warms up; its second epoch is the one reported), one after the other, each in
    its own process, as ``python -m vitlib fit`` runs. ``extra`` arguments go to every fit.

    The ratio is the share of the machine the model gets with that config's data loop: what the
    augmentation, the mixing and the logging cost on top of the training step itself."""
    from .launch import RunSpec  # the CLI: only this tool needs it

    rows = []
    for name, config in configs.items():
        with tempfile.TemporaryDirectory() as root:
            options = (("trainer.max_epochs", 2), ("trainer.limit_train_batches", batches), ("trainer.limit_val_batches", 1),
                       ("trainer.enable_progress_bar", False), ("trainer.enable_model_summary", False))  # fmt: skip
            folder = (("data.data_dir", data_dir),) if data_dir else ()  # checked and downloaded as the config says
            done = RunSpec(config, options + folder, root=root, extra=tuple(extra)).run_child(capture=True)
            if done.returncode:
                raise RuntimeError(f"the fit of {name} ({config}) failed:\n{done.stderr[-2000:]}")
            run = version_folder(root, 0)
            metrics = final_metrics(run)
            train_rate = history(run)["time/train_images_per_s"][-1][1]
        bare = metrics["throughput"]["bare_step_images_per_s"]
        data = metrics["config"]["data"]
        rows.append({
            "name": name, "config": config, "augment": data.get("augment"), "mix": data.get("mix"),
            "pipeline": data.get("pipeline"), "batch_size": data.get("batch_size"),
            "train_images_per_s": train_rate, "bare_step_images_per_s": bare, "train_vs_bare": train_rate / bare,
        })  # fmt: skip
    return rows


def _provenance(argv: Sequence[str] | None) -> dict[str, Any]:
    return {
        "command": "python -m vitlib.lab.results.speed " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "commit": git_commit(Path.cwd()),
        "hardware": this_machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vitlib.lab.results.speed",
        description="Bare training-step images/s of model variants, one after the other in one process (--model); "
        "or the training images/s of short fits of whole configs against their bare step (--fit). "
        "Options it does not know go to every fit (e.g. --data.verify_md5 false).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", action="append", metavar="NAME=JSON",
                      help='a variant, e.g. \'w96={"stem": "conv", "dim": 96, "heads": 3}\' (repeat; the first is the baseline)')  # fmt: skip
    what.add_argument("--fit", action="append", metavar="NAME=CONFIG", help="a config to fit, e.g. full=configs/cpu_long.yaml (repeat)")
    parser.add_argument("--batch-size", type=int, default=128, help="--model: the batch of the bare step")
    parser.add_argument("--steps", type=int, default=10, help="--model: timed steps per variant")
    parser.add_argument("--batches", type=int, default=150, help="--fit: batches per epoch of each fit (two epochs)")
    parser.add_argument("--data-dir", help="--fit: CIFAR-100 in torchvision's layout")
    parser.add_argument("--out", help="write the rows with provenance to this JSON file")
    args, extra = parser.parse_known_args(argv)
    if args.model and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.fit:
            configs = dict(item.split("=", 1) for item in args.fit)
            missing = [c for c in configs.values() if not Path(c).is_file()]
            if missing:
                raise ValueError(f"no such config file: {', '.join(missing)}")
            rows = fit_speed(configs, args.data_dir, args.batches, extra)
        else:
            models = {name: json.loads(spec) for name, spec in (item.split("=", 1) for item in args.model)}
            rows = compare_bare_steps(models, args.batch_size, args.steps)
    except (ValueError, TypeError, RuntimeError) as err:  # a malformed option, an invalid config, a failed fit
        parser.exit(2, f"vitlib.lab.results.speed: error: {err}\n")
    for row in rows:
        if args.fit:
            print(f"{row['name']}: {row['train_images_per_s']:.0f} images/s training, {row['bare_step_images_per_s']:.0f} "
                  f"bare step ({row['train_vs_bare']:.0%})")  # fmt: skip
        else:
            print(f"{row['name']}: {row['parameters']:,} parameters, {row['images_per_s']:.0f} images/s "
                  f"({row['relative_to_first']:.2f}x the first)")  # fmt: skip
    if args.out:
        extent = {"kind": "fit", "batches": args.batches} if args.fit else {"batch_size": args.batch_size}
        write_json_atomic(Path(args.out), {**_provenance(argv), **extent, "rows": rows})
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
