"""What writes and reads ``results/``: records, the run description, comparisons, grid, recipe study,
model-options study, baseline, speed, chapter costs and the tables built from them. Each runner is a command:
``python -m vitlib.lab.results.<module> --help``."""
