import numpy as np

import salplug


class DoubleGradients(salplug.Method):
    requires = frozenset({salplug.INPUT_GRADIENTS})

    def explain(self, ctx, x, targets):
        out = np.empty_like(x)
        for rows in ctx.chunks(len(x)):
            out[rows] = 2 * ctx.adapter.input_gradients(x[rows], targets.take(rows))
        return out


def flat(values, image=None):
    return np.full(np.asarray(values).shape[:2], 0.5)
