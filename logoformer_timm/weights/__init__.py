"""Weights: the sha256 manifest of published weights, reading checkpoints, and export / verify / push of Hub
folders (``logoformer-hub``). Imports no model code at package level: the model imports the manifest from here."""
