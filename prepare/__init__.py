"""Datasets on disk: preparation of VisA and MTD into the per-class layout main.py reads,
and the synthetic demo class."""
