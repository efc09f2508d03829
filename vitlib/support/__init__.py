"""What makes training exact, safe and fast, and is not what the chapters teach.

The CIFAR-100 files (download, verify, synthetic stand-ins), the batched twin of the augmentations
(on any device), Lightning callbacks, the run folder's layout, checkpoint and weight files, seeding
that survives a resume, the finite-loss check, the hardware's fast path and training to a time
budget. The teaching core imports these;
none of them imports :mod:`vitlib.lab`.
"""
