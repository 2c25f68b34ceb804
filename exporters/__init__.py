"""Exporters: ONNX and TFLite lowering of BEBERT checkpoints."""
