"""Export of SAM checkpoints to samrt engine directories. The only package that imports torch."""
