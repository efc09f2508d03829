"""What a trained model does on a test split, and what to see in it: its predictions, the
superclass confusion, and the sentences that read the prediction panels and a confusion matrix
(chapter 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from ...model import evaluating
from ...support.cifar import COARSE_LABELS, FINE_LABELS, FINE_TO_COARSE
from .chapter import device


def predict(model: torch.nn.Module, loader: Any, on: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities [N, K], labels [N])`` of ``model`` over a ``(images, labels)`` loader, on
    the CPU. Runs on the device ``on`` (default :func:`device`: the GPU when there is one), batch by
    batch, in eval mode under ``torch.inference_mode``; the model's mode and device are restored."""
    on = torch.device(on) if on is not None else device()
    home = next(model.parameters()).device
    probs, labels = [], []
    try:
        with evaluating(model.to(on), inference=True):
            for images, targets in loader:
                probs.append(model(images.to(on, non_blocking=True)).float().softmax(dim=-1).cpu())
                labels.append(targets.cpu())
    finally:
        model.to(home)
    return torch.cat(probs), torch.cat(labels)


def superclass_confusion(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[20, 20]`` counts: true CIFAR-100 superclass (rows) against the superclass of the predicted
    fine class (columns)."""
    to_coarse = torch.tensor(FINE_TO_COARSE)
    return multiclass_confusion_matrix(to_coarse[probs.argmax(dim=1)], to_coarse[labels], len(COARSE_LABELS))


def read_predictions(guesses: Sequence[int], truths: Sequence[int]) -> str:
    """What the prediction panels show, as a sentence: how many of the test images the model
    names right at its first guess, and for each wrong one what it took it for and whether the
    guess is in the true class's superclass."""
    wrong = [(int(g), int(t)) for g, t in zip(guesses, truths) if int(g) != int(t)]
    said = f"{len(truths) - len(wrong)} of the {len(truths)} test images are named right at the first guess"

    def mistake(guess: int, truth: int) -> str:
        true_group, guessed_group = (COARSE_LABELS[FINE_TO_COARSE[c]] for c in (truth, guess))
        where = f"the same superclass, {true_group}" if true_group == guessed_group else f"another superclass, {true_group} against {guessed_group}"
        return f"a `{FINE_LABELS[truth]}` is taken for a `{FINE_LABELS[guess]}` ({where})"

    return said + "".join(f"; {mistake(g, t)}" for g, t in wrong) + "."


def read_confusion(confusion: torch.Tensor, labels: Sequence[str], most: int = 3) -> str:
    """What to see in a confusion matrix (counts, true class in rows), as a sentence: the classes
    recognised best and worst (share of their row on the diagonal), and the ``most`` largest
    off-diagonal cells (share of the true class's images)."""
    counts = confusion.double()
    recall = counts.diagonal() / counts.sum(dim=1).clamp_min(1)
    order = recall.argsort(descending=True).tolist()
    share = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    share.fill_diagonal_(-1)
    cells = share.flatten().argsort(descending=True)[:most].tolist()
    n = len(labels)
    said = lambda i: f"{labels[i]} ({recall[i]:.0%})"  # noqa: E731
    mixed = "; ".join(f"{labels[c // n]} taken for {labels[c % n]} ({share[c // n, c % n]:.0%})" for c in cells)
    return (f"Best recognised: {said(order[0])} and {said(order[1])}; worst: {said(order[-1])} and {said(order[-2])} "
            f"(share of each row on the diagonal). The largest confusions: {mixed} (share of the true class's images).")
