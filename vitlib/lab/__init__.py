"""The book's experiments and helpers: records, tables, figures, the comparisons and their runners.

Nothing in :mod:`vitlib` or :mod:`vitlib.support` imports this package: a change here never
changes how a model trains.
"""
