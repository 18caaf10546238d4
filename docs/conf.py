"""Sphinx configuration of the moo-opt documentation (``make docs``)."""

project = "moo-opt"
author = "moo-opt developers"
copyright = "2026, moo-opt developers"
release = "0.1.0"

from pathlib import Path

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 copied into _static/mathjax and used from there: the site needs no internet
    "sphinx-mathjax-offline",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    # benchmarks/RESULTS.md is included as it is (Markdown) in the "Benchmark results" page
    "myst_parser",
]
myst_heading_anchors = 3
# Links to PyTorch's API only from an inventory on disk: the build never fetches anything. Put
# PyTorch's objects.inv at docs/_inventories/torch.inv to enable them.
_TORCH_INVENTORY = Path(__file__).parent / "_inventories" / "torch.inv"
intersphinx_mapping = (
    {"torch": ("https://docs.pytorch.org/docs/stable/", str(_TORCH_INVENTORY))}
    if _TORCH_INVENTORY.exists()
    else {}
)
intersphinx_disabled_reftypes = ["*"] if not intersphinx_mapping else []
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
html_theme = "furo"
html_title = "moo-opt"
exclude_patterns = ["_build"]
