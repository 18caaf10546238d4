"""moo-opt: gradient balancers for multi-objective training."""

__version__ = "0.1.0"
