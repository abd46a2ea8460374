"""The video pipeline: decoding, the face pipeline over a video's windows (:mod:`logoformer_timm.faces` does the
faces), per-window prediction on a video file (``logoformer-predict``), and ONNX / torch.export of a model."""
