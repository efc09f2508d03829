"""What makes training exact, safe and fast, and is not what the chapters teach.

The CIFAR-100 files (download, verify, synthetic stand-ins), the GPU twin of the augmentations,
Lightning callbacks, checkpoint and weight files, seeding that survives a resume, the finite-loss
check, the hardware's fast path and training to a time budget. The teaching core imports these;
none of them imports :mod:`vitlib.lab`.
"""
