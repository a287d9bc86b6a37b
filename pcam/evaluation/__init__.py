"""Scoring a model: metrics with intervals, the figures, and ``pcam evaluate``.

- :mod:`pcam.evaluation.predictions`: the checked labels and probabilities they all start from;
- :mod:`pcam.evaluation.metrics`: accuracy, precision, recall, F1, ROC AUC, NLL and the
  confusion matrix, with bootstrap intervals (scikit-learn);
- :mod:`pcam.evaluation.calibration`: expected calibration errors, Brier score, reliability bins;
- :mod:`pcam.evaluation.plots`: ROC curve, confusion matrix, per-class scores, reliability
  diagram, training curves;
- :mod:`pcam.evaluation.evaluate`: a saved model on a split, to ``metrics.json`` and the plots.
"""
