"""A plugin registering a fresh name, then one that salplug already has (without override)."""

import salplug


@salplug.hookimpl
def register_methods(register):
    register("dup_unique", "sp_duplicate:nothing", requires=("scores",))
    register("gradients", "sp_duplicate:nothing", requires=("input_gradients",))
