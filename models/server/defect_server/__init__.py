"""ONNX YOLOv8 defect detection behind the Seldon Core Python wrapper."""
