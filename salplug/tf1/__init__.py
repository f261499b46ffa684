"""Drop-in replacement for the upstream ``saliency.tf1`` package (TensorFlow 1 graphs).

Change ``import saliency.tf1 as saliency`` to ``import salplug.tf1 as saliency``. Each method
runs its :mod:`salplug.core` counterpart (``core_instance``) on a call_model_function that maps
upstream's keys onto salplug's ``tf1`` backend (``TF1Adapter.run_fetches``): the backend builds
the gradient ops once per graph, runs one ``session.run`` per call, and works on a finalized
graph through an in-memory copy. ``GuidedBackprop`` uses the backend's guided copy (no
checkpoint files). A copy is fed the variables' current values, read from the session, on
every call. TensorFlow is imported when a method is first built. See docs/migration.md.
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
