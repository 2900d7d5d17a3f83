"""The distributed layers: Ray for the training grid, Dask for Gram assembly.

They schedule the plain functions of `tfconv.runner`; the numerical core never imports them.
"""
