"""vitlib: Vision Transformers trained from scratch on CIFAR-100, the library behind the book."""

from .config import PRESETS, ViTConfig
from .model import ViT, count_parameters

__all__ = ["PRESETS", "ViT", "ViTConfig", "count_parameters"]
__version__ = "0.1.0"
