"""A plugin whose hook registers one method and then raises: the method must be rolled back."""

import salplug


@salplug.hookimpl
def register_methods(register):
    register("half_registered", "sp_raising_hook:nothing", requires=("scores",))
    raise RuntimeError("hook exploded on purpose")


@salplug.hookimpl
def register_visualizers(register):
    register("raising_hook_vis", "sp_raising_hook:nothing")
