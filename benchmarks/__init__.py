"""Benchmarks that need a checkout of the repository (they are not installed with ``vitlib``):
``python -m benchmarks.bench`` (training throughput against timm and vit-pytorch) and
``python -m benchmarks.gpu_run`` (benchmark, recipe to a deadline, record and test in one
time-limited command; ``benchmarks.gpu_bundle`` packs what it needs on a machine without internet
access)."""
