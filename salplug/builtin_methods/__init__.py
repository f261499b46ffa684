"""Built-in saliency methods: one module per method, numpy math only.

Each module is a plugin (it implements ``register_methods``) and is listed in
``salplug.plugins.BUILTIN_PLUGINS``.
"""
