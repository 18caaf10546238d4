"""Sphinx configuration of the moo-opt documentation (``make docs``)."""

project = "moo-opt"
author = "moo-opt developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
html_theme = "furo"
html_title = "moo-opt"
exclude_patterns = ["_build"]
