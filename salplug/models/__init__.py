"""Small demo models used by salplug's examples, docs and tests.

Nothing here is imported eagerly: each submodule pulls in its own framework
(for example :mod:`salplug.models.efficientnet_lite0` needs ``torch`` and the
``salplug[demo]`` extra), so importing this package stays cheap and
framework-free.
"""
