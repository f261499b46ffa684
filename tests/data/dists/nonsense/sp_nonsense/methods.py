"""Methods that call the model and then return something that is not one map per input."""

import numpy as np

import salplug


class NonsenseRows(salplug.Method):
    """One row too many."""

    requires = frozenset({salplug.SCORES})

    def explain(self, ctx, x, targets):
        ctx.adapter.scores(x, targets)
        return np.zeros((len(x) + 1, 2), np.float32)


class NonsenseScalar(salplug.Method):
    """A single number for the whole batch."""

    requires = frozenset({salplug.SCORES})

    def explain(self, ctx, x, targets):
        return float(ctx.adapter.scores(x, targets).sum())


class NonsenseText(salplug.Method):
    """One string per input: the right length, the wrong kind of thing."""

    requires = frozenset({salplug.SCORES})

    def explain(self, ctx, x, targets):
        return ["not a map"] * len(x)
