"""Weights: the sha256 manifest of published weights, reading checkpoints, adapting them to a model (filtering),
building a model with pretrained weights, and export / verify / push of Hub folders (``logoformer-hub``).
Imports no model code at package level: the model imports manifest, filtering and pretrained from here."""
