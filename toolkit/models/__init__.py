"""Builtin models, built from code and trained on data that ships with scikit-learn."""
