"""What a model tabtrack logs needs when it is loaded: tabtrack's input step, the label wrapper, the PyTorch MLP
and the adapters for models trained elsewhere.

A logged model ships this package (and nothing else of tabtrack) in its `code/` folder, so it loads where
tabtrack is not installed. It imports neither MLflow nor the rest of tabtrack: only numpy, pandas and
scikit-learn (torch, XGBoost and LightGBM where a model uses them).
"""
