"""Built-in metrics (and the random-map baseline method), registered lazily.

Nothing is imported here beyond the hook marker: each target is a ``"module:Class"`` string
loaded on first use.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..types import SCORES


@hookimpl
def register_metrics(register):
    register("pic", "salplug.metrics.pic_metric:PIC", requires=(SCORES,), aliases=("sic", "aic"),
             description="Performance Information Curves, SIC and AIC (Kapishnikov et al. 2019)")
    register("insertion", "salplug.metrics.insertion_deletion:Insertion", requires=(SCORES,),
             description="Insertion AUC: most salient pixels into a blurred image (Petsiuk et al. 2018)")
    register("deletion", "salplug.metrics.insertion_deletion:Deletion", requires=(SCORES,),
             description="Deletion AUC: most salient pixels replaced by black (Petsiuk et al. 2018)")
    register("model_randomization", "salplug.metrics.sanity:ModelRandomization", requires=(),
             aliases=("sanity", "randomization", "cascading_randomization"),
             description="Model-parameter randomisation sanity check (Adebayo et al. 2018), torch and tf2")


@hookimpl
def register_methods(register):
    register("random", "salplug.metrics.random_baseline:RandomBaseline", requires=(),
             aliases=("random_baseline",), description="Random saliency (the baseline of every evaluation)")
