"""Drop-in replacement for the upstream ``saliency.tf1`` package (TensorFlow 1 graphs).

Change ``import saliency.tf1 as saliency`` to ``import salplug.tf1 as saliency``. The methods
wrap :mod:`salplug.core` around a call_model_function over the graph; ``GuidedBackprop`` runs on
salplug's ``tf1`` backend (an in-memory guided copy of the graph, no checkpoint files).
TensorFlow is imported when a method first needs it. See docs/migration.md.
"""

from .base import *  # noqa: F401,F403
from .blur_ig import *  # noqa: F401,F403
from .grad_cam import *  # noqa: F401,F403
from .gradients import *  # noqa: F401,F403
from .guided_backprop import *  # noqa: F401,F403
from .guided_ig import *  # noqa: F401,F403
from .integrated_gradients import *  # noqa: F401,F403
from .occlusion import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
from .visualization import *  # noqa: F401,F403
from .xrai import *  # noqa: F401,F403
