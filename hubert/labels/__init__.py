"""Pseudo-labels: stages features, kmeans and layers (MFCC and HuBERT-layer features,
k-means, label checks, label quality against phone alignments, the layer sweep)."""
