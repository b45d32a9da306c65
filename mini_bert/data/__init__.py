"""Corpora and datasets: the readers of every dataset file (readers.py) and the pretraining corpora by name,
with weighted mixtures (corpora.py)."""
