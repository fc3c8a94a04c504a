"""Using a model: the one forward path, the Predictor, explanations, the input check and
ONNX export.
"""
