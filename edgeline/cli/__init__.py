"""The ``edgeline`` command line: a thin layer over the libraries."""
