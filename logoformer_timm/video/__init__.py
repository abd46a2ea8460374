"""The video pipeline: decoding, face detection and cropping, per-window prediction on a video file
(``logoformer-predict``), and ONNX / torch.export of a model."""
