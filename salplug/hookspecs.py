"""Hook specifications: the one page a plugin author reads.

A plugin is a module (or object) with functions decorated by ``salplug.hookimpl``, named
after the hooks below, and exposed through an entry point in group ``salplug``::

    [project.entry-points.salplug]
    my_plugin = "my_package.salplug_plugin"

Each ``register_*`` hook receives a ``register`` callback; call it once per component::

    @salplug.hookimpl
    def register_methods(register):
        register("rise", "my_package.rise:Rise", requires=("scores",), aliases=("RISE",))

``target`` is a class (or any object) or a lazy ``"package.module:Name"`` string, imported only
when the component is first used, so discovery never imports torch or tensorflow. ``aliases``,
``requires`` and ``provides`` take a tuple of strings or one string. With ``override=True``
a name replaces the component of that name (its aliases follow), an alias is re-pointed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

hookspec = pluggy.HookspecMarker("salplug")
hookimpl = pluggy.HookimplMarker("salplug")

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable


@hookspec
def register_methods(register: Callable[..., None]) -> None:
    """Register saliency methods.

    Call ``register(name, target, *, requires=(), aliases=(), description="", override=False)``.
    ``target`` is a class following ``salplug.types.Method`` (or a ``"module:Class"`` string).
    ``requires`` lists the adapter capabilities the method uses (``"scores"``,
    ``"input_gradients"``, ``"layer_values_and_gradients"``, ``"guided_input_gradients"``);
    a backend lacking one is rejected before any model call.
    """


@hookspec
def register_backends(register: Callable[..., None]) -> None:
    """Register model backends.

    Call ``register(name, target, *, framework="", provides=(), extra=None, aliases=(),
    description="", override=False)``. ``target`` is a ``salplug.types.ModelAdapter`` class,
    constructed as ``target(model, **options)``. ``provides`` lists its capabilities;
    ``extra`` names the pip extra that installs its framework (used in the error shown when
    the framework is missing).
    """


@hookspec
def register_visualizers(register: Callable[..., None]) -> None:
    """Register visualizers.

    Call ``register(name, target, *, aliases=(), description="", override=False)``.
    ``target`` is a callable ``(values, image=None, **params) -> numpy array`` (H, W) or
    (H, W, 3) with values in [0, 1], or a class whose instances are such callables.
    """


@hookspec
def register_metrics(register: Callable[..., None]) -> None:
    """Register evaluation metrics.

    Call ``register(name, target, *, requires=(), aliases=(), description="", override=False)``.
    ``target`` is a class with ``evaluate(ctx, x, targets, attributions, **params)``, instantiated
    without arguments (or an object with that method, or a ``"module:Class"`` string); a plain
    function is refused.
    """


@hookspec(firstresult=True)
def detect_backend(model: Any) -> str | None:
    """Return the name of the backend that can run ``model``, or None.

    The first non-None answer wins. Built-in detectors are ``trylast`` so a plugin can claim
    a model first. An implementation must not import a framework that is not already in
    ``sys.modules`` (a torch model cannot exist unless torch was imported).
    """
