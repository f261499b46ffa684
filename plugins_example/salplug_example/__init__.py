"""salplug-example: a third-party salplug plugin.

Importing this package imports nothing else: salplug finds the plugin through the entry
point ``salplug_example = "salplug_example.plugin"`` and imports the method and visualizer
modules only when they are first used.
"""

__version__ = "0.1.0"
