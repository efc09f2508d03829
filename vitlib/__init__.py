"""vitlib: Vision Transformers trained from scratch on CIFAR-100, the library behind the book.

The teaching core sits in this package, one module per idea, each naming the chapter that teaches
it; ``vitlib.support`` holds what training needs but the chapters do not teach, and ``vitlib.lab``
the book's experiments and helpers. The package root stays light (no Lightning import): training
lives in ``vitlib.module``, ``vitlib.data`` and ``vitlib.cli``.
"""

from .config import PRESETS, ViTConfig
from .model import ViT, count_parameters
from .support.pretrained import from_pretrained, save_pretrained

__all__ = ["PRESETS", "ViT", "ViTConfig", "count_parameters", "from_pretrained", "save_pretrained"]
__version__ = "0.1.0"
