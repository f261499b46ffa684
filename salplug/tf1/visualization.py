"""``saliency.tf1.visualization``: the same functions as ``salplug.core.visualization``."""

from ..core.visualization import VisualizeImageDiverging, VisualizeImageGrayscale

__all__ = ["VisualizeImageGrayscale", "VisualizeImageDiverging"]
