"""Sharing trained weights: a folder with ``config.json`` and ``model.safetensors``.

``save_pretrained(model, "vit-cifar100/")`` writes the folder; ``from_pretrained`` reads it from a
local path or from a URL (``https://host/vit-cifar100/``: both files are fetched below it). The
weights are safetensors (tensors only, nothing executed on load) and the config is JSON, so a
shared model is safe to open whatever its source. Downloads go to a cache folder
(``$VITLIB_CACHE``, else ``~/.cache/vitlib``) and are reused offline; ``sha256`` pins the exact
weights file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..config import ViTConfig
from ..model import ViT
from .files import atomic_write

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "PretrainedError", "default_cache_dir", "from_pretrained", "save_pretrained", "sha256_of"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TIMEOUT_S = 30  # per request: an unreachable host fails in seconds instead of hanging


class PretrainedError(ValueError):
    """A pretrained model that cannot be loaded: missing, unreachable, corrupt or not matching."""


def default_cache_dir() -> Path:
    """``$VITLIB_CACHE``, else ``~/.cache/vitlib``."""
    return Path(os.environ.get("VITLIB_CACHE") or Path.home() / ".cache" / "vitlib").expanduser()


def save_pretrained(model: ViT, directory: str | Path) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors``, each atomically;
    returns ``directory``. Publish :func:`sha256_of` the weights file with it."""
    return save_weights(model, model.cfg.to_dict(), directory)


def save_weights(model: torch.nn.Module, config: dict[str, Any], directory: str | Path) -> Path:
    """Any network's weights as ``directory/model.safetensors`` and what rebuilds it as
    ``directory/config.json``, each written atomically; returns ``directory``."""
    directory = Path(directory)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_NAME) as f:
        f.write(save_safetensors(weights, metadata={"format": "pt", "library": "vitlib"}))
    with atomic_write(directory / CONFIG_NAME, "w") as f:
        json.dump(config, f, indent=2)
    return directory


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_url(path_or_url: str | Path) -> bool:
    return str(path_or_url).startswith(("http://", "https://"))


def _download(url: str, target: Path) -> None:
    """``url`` -> ``target``, atomically: an interrupted download leaves no partial file behind."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, atomic_write(target) as f:
        for block in iter(lambda: response.read(1 << 20), b""):
            f.write(block)
        if response.length:  # bytes announced but never sent: the connection was cut
            raise http.client.IncompleteRead(b"", response.length)


def _fetch(url: str, cache_dir: Path, sha256: str | None) -> Path:
    """The folder in the cache that holds the files of ``url``, downloading what is missing."""
    if url.endswith((f"/{CONFIG_NAME}", f"/{WEIGHTS_NAME}")):
        url = url.rsplit("/", 1)[0]  # the URL of one of the two files: use its folder
    base = url.rstrip("/") + "/"
    folder = cache_dir / hashlib.sha256(base.encode()).hexdigest()[:16]
    weights = folder / WEIGHTS_NAME
    if weights.is_file() and sha256 is not None and sha256_of(weights) != sha256.lower():
        weights.unlink()  # stale or damaged copy: fetch it again
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if (folder / name).is_file():
            continue
        try:
            _download(base + name, folder / name)
        # HTTPError is a URLError, a timeout an OSError, a connection cut mid-file an HTTPException.
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
            raise PretrainedError(
                f"could not download {base + name} ({reason}) and there is no cached copy "
                f"in {folder}. Connect to the internet and retry, or download {CONFIG_NAME} and {WEIGHTS_NAME} "
                f"into a folder yourself and pass its path; the cache folder is set by VITLIB_CACHE."
            ) from None
    return folder


def from_pretrained(path_or_url: str | Path, sha256: str | None = None, cache_dir: str | Path | None = None) -> ViT:
    """The :class:`~vitlib.ViT` saved by :func:`save_pretrained` in a local folder or under a URL.

    ``sha256`` (hex) is checked against ``model.safetensors`` when given; a URL's files are kept in
    ``cache_dir`` (default :func:`default_cache_dir`) and read from there on later calls, also
    offline. Every failure is one :class:`PretrainedError` (a ``ValueError``) saying what to do.
    """
    if _is_url(path_or_url):
        folder = _fetch(str(path_or_url), Path(cache_dir) if cache_dir else default_cache_dir(), sha256)
    else:
        folder = Path(path_or_url).expanduser()
        if folder.is_file() and folder.name in (CONFIG_NAME, WEIGHTS_NAME):
            folder = folder.parent
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
        if missing:
            raise PretrainedError(
                f"{folder} is not a folder written by save_pretrained (no {' or '.join(missing)} in it): pass that folder "
                f"(it holds {CONFIG_NAME} and {WEIGHTS_NAME}) or its http(s) URL"
            )
    weights_path = folder / WEIGHTS_NAME
    if sha256 is not None and (actual := sha256_of(weights_path)) != sha256.lower():
        if _is_url(path_or_url):
            weights_path.unlink()  # never keep a wrong file in the cache
        raise PretrainedError(
            f"{weights_path} has SHA-256 {actual}, not the expected {sha256}: the file is damaged or not the "
            f"published one; check the URL and the checksum, or delete the file and download it again."
        )
    try:
        config = ViTConfig.from_dict(json.loads((folder / CONFIG_NAME).read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise PretrainedError(f"{folder / CONFIG_NAME} is not a valid vitlib model config: {err}") from None
    try:
        weights = load_safetensors(weights_path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise PretrainedError(f"{weights_path} is not a readable safetensors file ({err}); download it again") from None
    model = ViT(config)
    expected = model.state_dict()
    wrong = sorted(set(expected) ^ set(weights)) + [
        name for name in expected if name in weights and weights[name].shape != expected[name].shape
    ]
    if wrong:
        raise PretrainedError(
            f"{weights_path} does not fit the model of {folder / CONFIG_NAME} "
            f"(differing parameters: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}); "
            f"the two files come from different models"
        )
    model.load_state_dict(weights)
    return model
