"""edgeline build pipeline: datasets, shared-preprocessing features, training, ONNX conversion,
int8 quantization, the quality gate, and signed bundles."""
