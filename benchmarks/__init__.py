"""Side-by-side benchmarks of salplug against upstream ``saliency``, Captum and raw torch loops."""
