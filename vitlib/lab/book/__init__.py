"""What the chapters call: their setup, the recorded runs they read, what a model does on the test
split, figures and the reader's own run."""
