"""Drop-in replacement for the upstream ``saliency.core`` package (PyPI ``saliency`` 0.2.1).

Change ``import saliency.core as saliency`` to ``import salplug.core as saliency``: the module
layout, class names, signatures and defaults are upstream's, and every method runs salplug's
registered implementation through the ``callable`` backend. See docs/migration.md.
"""

from .base import *  # noqa: F401,F403
from .blur_ig import *  # noqa: F401,F403
from .grad_cam import *  # noqa: F401,F403
from .gradients import *  # noqa: F401,F403
from .guided_ig import *  # noqa: F401,F403
from .integrated_gradients import *  # noqa: F401,F403
from .occlusion import *  # noqa: F401,F403
from .visualization import *  # noqa: F401,F403
from .xrai import *  # noqa: F401,F403
