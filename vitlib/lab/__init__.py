"""The book's experiments and helpers, in two packages by who calls them.

- :mod:`vitlib.lab.book`: what the chapters call (their setup, the recorded runs they read,
  figures, the reader's own run, reading predictions).
- :mod:`vitlib.lab.results`: what writes and reads ``results/`` (the record format, the run
  description, the comparisons and their runners, the baseline, speed, the chapters' costs, the
  tables).

``lab.book`` imports ``lab.results``, never the other way round. Nothing in :mod:`vitlib` or
:mod:`vitlib.support` imports this package: a change here never changes how a model trains.
"""
