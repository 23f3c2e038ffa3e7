"""From a trained chain to use: ONNX export and model cards, registry serving, `pld predict`."""
