"""Checkpoint files: written atomically, read without running code from them, and checked against
the model they are loaded into.

``AtomicCheckpointIO`` is the Trainer plugin the CLI installs: every checkpoint Lightning writes
(``last.ckpt``, the best one) goes through :func:`save_checkpoint`, every one it reads through
:func:`load_checkpoint`. :class:`EveryEpochCheckpoint` writes ``last.ckpt`` at every epoch's end,
the point a stopped fit resumes from. :func:`check_compatible` turns "size mismatch for model.blocks.0..." into
the list of config fields that differ.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint

from ..config import ViTConfig
from .files import atomic_write
from .run_folder import LAST_CKPT

__all__ = ["CONFIG_KEY", "AtomicCheckpointIO", "CheckpointError", "EveryEpochCheckpoint", "check_compatible", "load_checkpoint", "save_checkpoint"]

CONFIG_KEY = "vit_config"  # where ViTModule stores its ViTConfig in a checkpoint
# Fields that change no parameter: a checkpoint loads into a model that differs only in these.
RUNTIME_FIELDS = ("dropout", "drop_path")
EXAMPLE = "(e.g. runs/vitlib/version_0/checkpoints/last.ckpt)"  # where the CLI writes them
USE_OURS = f"Pass a checkpoint written by vitlib or Lightning {EXAMPLE}"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, unsafe, or made for another model."""


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill during the save
    leaves the previous file in place, never a truncated one."""
    with atomic_write(path) as f:
        torch.save(checkpoint, f)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one clear error per way it can fail.

    ``weights_only`` admits tensors and plain values only; a file that needs any other Python
    object is refused, because unpickling it could run code chosen by whoever made the file.
    torch's own messages are not passed on: they advise re-running with ``weights_only=False``,
    the one thing never to do with a file of unknown origin.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file; check the path {EXAMPLE}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .ckpt file inside it")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch names the object it refused; other unpickling errors mean a damaged or foreign file.
        blocked = re.search(r"GLOBAL (\S+)|[Uu]nsupported global: (?:GLOBAL )?(\S+)", str(err))
        if blocked is None:
            raise _unreadable(path) from None
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain values ({next(filter(None, blocked.groups()))}), "
            f"so it was not loaded: unpickling them could run code chosen by whoever made the file. {USE_OURS}."
        ) from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({err.strerror or err}); check its permissions") from None
    except (RuntimeError, EOFError, KeyError, ValueError):
        raise _unreadable(path) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint (a dict with the model's state_dict). {USE_OURS}."
        )
    return checkpoint


def network_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained network's own state dict from a LightningModule checkpoint: the module holds
    it as ``model``, so its keys lose their ``model.`` prefix (metrics and the rest stay out)."""
    prefix = "model."
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def _unreadable(path: Path) -> CheckpointError:
    """Say what the file is instead, judged from its first bytes."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        what = "the file is empty"
    elif head.startswith(b"PK\x03\x04"):  # a zip archive: torch.save's format since PyTorch 1.6
        what = "it is a zip archive, but a truncated or damaged one, or one that torch.save did not write"
    elif head.startswith(b"\x80"):  # a pickle: torch.save's format before PyTorch 1.6
        what = "it is a pickle, but a truncated or damaged one, or one that torch.save did not write"
    elif b"\0" not in head and head.decode("utf-8", "replace").count("\ufffd") <= 1:  # 1: a cut multi-byte character
        what = "it is a text file"
    else:
        what = "it is neither a zip archive nor a pickle, the two formats torch.save writes"
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint: {what}. {USE_OURS}; if a last.ckpt is damaged, "
        f"the best-on-val-*.ckpt beside it."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic local saves and weights-only loads.

    Lightning's own save writes into the system temp folder and moves the file afterwards, which is
    a copy (not atomic) when the checkpoint folder is on another file system. Remote paths
    (``s3://``...) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False or not isinstance(get_filesystem(path), LocalFileSystem):
            # False: asked for explicitly (Trainer.fit(..., weights_only=False)).
            return super().load_checkpoint(path, map_location, weights_only=weights_only is not False)
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")


class EveryEpochCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` written at the end of every epoch, whatever its validation score.

    Lightning's own ``save_last`` writes ``last.ckpt`` only when a monitored checkpoint is saved,
    so a fit whose score did not improve over its last epochs (every falling half of a cyclical
    schedule) would resume from epochs behind where it stopped. This one keeps no other file.
    """

    def __init__(self) -> None:
        super().__init__(filename=LAST_CKPT.removesuffix(self.FILE_EXTENSION), monitor=None, save_top_k=1, every_n_epochs=1, enable_version_counter=False)


def _saved_config(checkpoint: dict[str, Any]) -> ViTConfig | None:
    """The architecture a checkpoint was made for: stored as such, else rebuilt from the
    hyperparameters (checkpoints of vitlib before CONFIG_KEY), else unknown."""
    hparams = checkpoint.get("hyper_parameters") or {}
    stored = checkpoint.get(CONFIG_KEY)
    if stored is None and "preset" not in hparams:
        return None
    try:
        if stored is not None:
            return ViTConfig.from_dict(stored)
        return ViTConfig.from_preset(hparams["preset"], **dict(hparams.get("overrides") or {}))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"the checkpoint's model config is not valid in this version of vitlib: {err}") from None


def check_compatible(checkpoint: dict[str, Any], config: ViTConfig, state_dict: dict[str, torch.Tensor], source: str = "the checkpoint") -> None:
    """Raise :class:`CheckpointError` listing what differs when ``checkpoint`` was made for a
    model other than ``config`` / ``state_dict``: the config fields (``field: checkpoint value vs
    requested value``), else the parameter names and shapes (e.g. a checkpoint of another library)."""
    problems: list[str] = []
    saved = _saved_config(checkpoint)
    if saved is not None:
        problems = [
            f"{f.name}: checkpoint {getattr(saved, f.name)!r} vs requested {getattr(config, f.name)!r}"
            for f in dataclasses.fields(ViTConfig)
            if f.name not in RUNTIME_FIELDS and getattr(saved, f.name) != getattr(config, f.name)
        ]
    saved_weights = checkpoint.get("state_dict")
    if not problems and isinstance(saved_weights, dict):
        missing = sorted(set(state_dict) - set(saved_weights))
        unexpected = sorted(set(saved_weights) - set(state_dict))
        shapes = [
            f"{name}: checkpoint {list(saved_weights[name].shape)} vs requested {list(tensor.shape)}"
            for name, tensor in state_dict.items()
            if name in saved_weights and tuple(saved_weights[name].shape) != tuple(tensor.shape)
        ]
        problems = shapes[:5] + [f"{len(shapes) - 5} more of other shapes"] * (len(shapes) > 5)
        problems += [f"missing from the checkpoint: {_few(missing)}"] * bool(missing)
        problems += [f"not in the model: {_few(unexpected)}"] * bool(unexpected)
    if problems:
        raise CheckpointError(
            f"{source} was made for another model: " + "; ".join(problems)
            + ". Load it with the model config it was trained with, or start a new run without --ckpt_path."
        )


def _few(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
