"""``wensu-annotate``: cell types for a new .h5ad from a fine-tuned cell classifier.

:func:`~wensu.annotate.run.annotate` is the whole command; :func:`~wensu.annotate.predict.
predict_cells` gives probabilities and embeddings for cells already in memory.
"""

from wensu.annotate.predict import Predictions, predict_cells
from wensu.annotate.run import AnnotateError, annotate

__all__ = ["AnnotateError", "Predictions", "annotate", "predict_cells"]
