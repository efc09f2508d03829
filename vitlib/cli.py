"""``python -m vitlib fit|validate|test|predict``: Lightning's CLI over ViTModule and the CIFAR-100 data. Taught in chapter 6.

Every run writes into ``runs/vitlib/version_N/`` (``DIR/vitlib/version_N/`` with
``--trainer.default_root_dir DIR``): TensorBoard events, ``metrics.csv``, the ``config.yaml`` it ran
with, ``checkpoints/`` (``last.ckpt`` and the best-on-validation one) and, after ``fit`` and
``test``, ``metrics.json`` with the final loss, top-1 and top-5, and what ran (precision, compiled or
eager). The precision is the machine's (:func:`vitlib.support.hardware.decide_precision`): no config
names one, and bf16 asked for on a GPU below compute capability 8.0 runs in ``16-mixed``, with one
line saying why.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import TorchCheckpointIO

from .data import CIFAR100DataModule
from .module import ViTModule
from .support.callbacks import FlushLogsEachEpoch, MetricsWriter, ThroughputMonitor, TopKPrinter
from .support import hardware
from .support.checkpoints import AtomicCheckpointIO, CheckpointError, EveryEpochCheckpoint, load_checkpoint
from .support.cifar import ARCHIVE, DatasetNotFoundError, default_data_dir, ensure_cifar100, quick_mode
from .support.loss_check import NonFiniteLossError
from .support.pretrained import CONFIG_NAME, WEIGHTS_NAME, PretrainedError, from_pretrained
from .support.run_folder import LOGGER_NAME

QUICK_MAX_EPOCHS = 2


RUNS_DIR = "runs"  # the loggers' save_dir unless --trainer.default_root_dir says otherwise


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing litlogger / litmodels" lines, printed by every
    Trainer; Lightning has no switch for them, and other info lines (devices, stop reason) stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_NO_ADVERTISEMENT = _NoAdvertisement()


class InputError(ValueError):
    """Paths given to a command that cannot work: all of them, found before any work starts."""


class ViTCLI(LightningCLI):
    """Lightning's CLI over ``model_class`` (default :class:`ViTModule`) and the CIFAR-100 data."""

    def __init__(self, *args: Any, model_class: type[L.LightningModule] = ViTModule, **kwargs: Any) -> None:
        logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NO_ADVERTISEMENT)  # added once
        super().__init__(
            model_class,
            CIFAR100DataModule,
            *args,
            save_config_kwargs={"overwrite": True},
            # ThroughputMonitor first: its fit-end timing must be taken before MetricsWriter writes it.
            trainer_defaults={
                "callbacks": [ThroughputMonitor(), MetricsWriter(), FlushLogsEachEpoch(), TopKPrinter(), LearningRateMonitor("step"),
                              EveryEpochCheckpoint()]
            },
            auto_configure_optimizers=False,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The validation set is the CIFAR-100 test set (as the reference project, reshalfahsi/image-classification-vit, fixes it), so the
        # "best" checkpoint is selected on test data: its name says so, and metrics.json always
        # reports the last epoch, not the best one.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": False,  # last.ckpt: EveryEpochCheckpoint, at every epoch's end
                "checkpoint.monitor": "val/top1",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-on-val-epoch{epoch:03d}-top1{val/top1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "trainer.logger": [
                    {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": RUNS_DIR, "name": LOGGER_NAME}},
                    {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": RUNS_DIR, "name": LOGGER_NAME}},
                ],
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Lightning reads the hyperparameters of --ckpt_path next, with a bare torch.load, and
        # rebuilds the model from them: checking the file here first makes a damaged or unsafe
        # checkpoint one clear error instead of a traceback. The other paths are checked with it,
        # so that a missing checkpoint is not found only after the dataset was downloaded.
        subcommand = self.config.get("subcommand")
        if subcommand:
            problems = _input_problems(subcommand, self.config[subcommand])
            if len(problems) == 1:
                raise InputError(problems[0])
            if problems:
                raise InputError(f"{len(problems)} problems, nothing was run:\n" + "\n".join(f"  - {p}" for p in problems))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        if quick_mode() and config["data.quick"] is None:
            # Quick mode: synthetic CIFAR-layout data and a couple of epochs, seconds on a CPU. A run
            # that names its data (--data.quick true or false) keeps its own epochs.
            config["data.quick"] = True
            epochs = config["trainer.max_epochs"]
            config["trainer.max_epochs"] = QUICK_MAX_EPOCHS if epochs in (None, -1) else min(epochs, QUICK_MAX_EPOCHS)
        root_dir = config["trainer.default_root_dir"]
        if root_dir:
            # Lightning puts its own default logger under default_root_dir; vitlib's loggers follow
            # it too, unless their save_dir was set (then that one wins, as in Lightning).
            loggers = config["trainer.logger"]  # a list of class_path/init_args, one of them, or a bool
            for logger in loggers if isinstance(loggers, list) else [loggers]:
                init_args = getattr(logger, "init_args", None)
                if init_args is not None and init_args.get("save_dir") == RUNS_DIR:
                    init_args["save_dir"] = str(root_dir)
        if self.subcommand == "predict":
            # The bar shares stdout with the printed predictions; a prediction is not a run, so it
            # writes no run folder (no logger; the checkpoint callback saves nothing without fitting).
            config["trainer.enable_progress_bar"] = False
            config["trainer.logger"] = False
        ckpt_path = config.get("ckpt_path")
        self.published = pretrained_folder(ckpt_path) if ckpt_path and self.subcommand != "fit" else None
        if self.published is not None:
            # Published weights carry the architecture in config.json: the model is built from it,
            # and Lightning gets no checkpoint to restore (they are not one).
            architecture = json.loads((self.published / CONFIG_NAME).read_text())
            config["model.preset"], config["model.overrides"] = "vit", architecture
            config["ckpt_path"] = None
        # One decision for every run (vitlib.support.hardware): no precision named -> the machine's;
        # bf16 asked for on a GPU without native bf16 -> 16-mixed, a half precision on a CPU -> 32-true,
        # each with one line. config.yaml keeps the precision the run really used.
        capabilities = hardware.run_capabilities(config["trainer.accelerator"])
        config["trainer.precision"], why = hardware.decide_precision(config["trainer.precision"], capabilities)
        if why:
            print(why, file=sys.stderr)

    def _load_published(self) -> None:
        if getattr(self, "published", None) is not None:
            self.model.model.load_state_dict(from_pretrained(self.published).state_dict())

    before_validate = before_test = before_predict = _load_published

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints are written atomically (a kill during a save keeps the previous last.ckpt)
        # and read with weights_only=True; a CheckpointIO configured by the user is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if self.subcommand == "predict":  # no run folder: not even the config.yaml of one
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
        # TensorBoard picks the next free version_N; the CSV logger writes into the same folder.
        tensorboard = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and tensorboard:
                logger._version = tensorboard[0].version
        return trainer


def pretrained_folder(ckpt_path: str | os.PathLike[str]) -> Path | None:
    """The ``save_pretrained`` folder that ``ckpt_path`` names (the folder itself, or the
    ``model.safetensors`` inside it), else ``None``: published weights, which ``validate``,
    ``test`` and ``predict`` take as well as a Lightning checkpoint."""
    path = Path(ckpt_path)
    if path.is_dir() and (path / WEIGHTS_NAME).is_file():
        return path
    if path.suffix == ".safetensors":
        return path.parent
    return None


def _input_problems(subcommand: str, config: Any) -> list[str]:
    """What is wrong with the paths a command was given: the checkpoint, the dataset when it is
    not to be downloaded, the images to predict. Empty when the command can start."""
    problems = []
    ckpt_path = config.get("ckpt_path")
    # "last" / "best" / "hpc", "registry:NAME" and remote files are Lightning's to resolve.
    lightning_resolves = str(ckpt_path).split(":")[0].lower() in ("last", "best", "hpc", "registry")
    published = pretrained_folder(ckpt_path) if ckpt_path else None
    if published is not None:
        if subcommand == "fit":
            problems.append(
                f"{ckpt_path} holds published weights (safetensors), which have no optimizer or schedule state to resume "
                "a fit from: resume from a Lightning checkpoint (.../checkpoints/last.ckpt), or use the weights with "
                "validate, test or predict"
            )
        else:
            try:
                from_pretrained(published)
            except PretrainedError as err:
                problems.append(str(err))
    elif ckpt_path and not lightning_resolves and isinstance(get_filesystem(ckpt_path), LocalFileSystem):
        try:
            load_checkpoint(ckpt_path)
        except CheckpointError as err:
            problems.append(str(err))
    quick = config["data.quick"] if config["data.quick"] is not None else quick_mode()
    root = Path(config["data.data_dir"]).expanduser() if config["data.data_dir"] else default_data_dir()
    if subcommand != "predict" and not quick and not (root / ARCHIVE).is_file():
        try:
            ensure_cifar100(root, download=False)  # without the archive it extracts nothing: only checks
        except DatasetNotFoundError as err:
            if not config["data.download"]:
                problems.append(str(err))
            elif problems:
                # Not a problem yet, but the next try would start with a download that may fail.
                problems.append(f"CIFAR-100 is not in {root.absolute()} either: the run would first download it "
                                f"(about 170 MB); offline, put {ARCHIVE} there")
    files = (config["data.predict_files"] or []) if subcommand == "predict" else []
    missing = [f for f in files if not Path(f).is_file()]
    # A missing image alone does not stop a prediction (it gets its own error line), unless none is left.
    if missing and (problems or len(missing) == len(files)):
        problems.append(f"no such image file: {', '.join(map(str, missing))}")
    return problems


def _files_as_predict_argument(argv: list[str]) -> list[str]:
    """``predict --ckpt_path C a.png b.jpg`` -> ``predict --ckpt_path C --data.predict_files [a.png, b.jpg]``."""
    if not argv or argv[0] != "predict":
        return argv
    options, files, i = [argv[0]], [], 1
    while i < len(argv):
        token = argv[i]
        if token.startswith("-"):
            options.append(token)
            if "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                options.append(argv[i + 1])
                i += 1
        else:
            files.append(token)
        i += 1
    if files:
        options += ["--data.predict_files", json.dumps(files)]
    return options


# The configs that ship with the package (configs/ in a checkout links here).
CONFIG_DIR = Path(__file__).parent / "configs"


def packaged_configs() -> list[str]:
    """The names ``--config`` takes for the configs that ship with the package (``cpu``, ...)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def recipe_config(name: str = "cpu_long") -> dict[str, Any] | None:
    """The training configuration ``<name>.yaml`` that ships with the package (``configs/`` in a
    checkout) as a dict; ``None`` when there is none of that name."""
    path = CONFIG_DIR / f"{name}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _named_configs(argv: list[str]) -> list[str]:
    """``--config cpu`` -> ``--config <package>/configs/cpu.yaml``: a value that is no file and has
    no folder or suffix names a packaged config; an unknown name is an error that lists them."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--config" and i + 1 < len(out):
            at, value = i + 1, out[i + 1]
        elif token.startswith("--config="):
            at, value = i, token.removeprefix("--config=")
        else:
            continue
        if Path(value).exists() or Path(value).suffix or "/" in value or value.lstrip().startswith(("{", "[")):
            continue
        if value not in packaged_configs():
            raise InputError(f"--config {value}: no such file, nor a packaged config; name one of "
                             f"{', '.join(packaged_configs())}, or give the path of a YAML file")
        path = str(CONFIG_DIR / f"{value}.yaml")
        out[at] = path if at == i + 1 else f"--config={path}"
    return out


def _cli_args(argv: list[str]) -> list[str]:
    return _files_as_predict_argument(_named_configs(argv))


def main(argv: list[str] | None = None, model_class: type[L.LightningModule] = ViTModule) -> None:
    for noise in (".*does not have many workers.*", ".*Experiment logs directory .* exists and is not empty.*"):
        warnings.filterwarnings("ignore", message=noise)
    try:
        if argv is None:
            # Rewritten in place: Lightning's DDP launcher re-runs sys.argv in the other processes.
            sys.argv[1:] = _cli_args(sys.argv[1:])
            ViTCLI(model_class=model_class)
        else:
            ViTCLI(args=_cli_args(list(argv)), model_class=model_class)
    except (DatasetNotFoundError, ValueError, NonFiniteLossError) as error:
        # Bad input (a config value, a missing dataset, an unusable checkpoint) or a diverged run:
        # the message says what to do; no traceback.
        if os.environ.get("VITLIB_DEBUG"):
            raise
        print(f"vitlib: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
