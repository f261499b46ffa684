"""A plugin that loads fine, but whose methods return nonsense (lazily imported)."""

import salplug


@salplug.hookimpl
def register_methods(register):
    for name in ("nonsense_rows", "nonsense_scalar", "nonsense_text"):
        register(name, f"sp_nonsense.methods:{name.title().replace('_', '')}", requires=("scores",))
