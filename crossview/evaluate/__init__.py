"""Evaluation: streaming retrieval metrics (CVUSA/CVACT/VIGOR), University-1652 metrics, reports, figures."""

from crossview.evaluate.retrieval import evaluate_retrieval, metrics_from_ranks, positive_ranks, recall_curve, top_k
from crossview.evaluate.university import PROTOCOLS, evaluate_university

__all__ = ["PROTOCOLS", "evaluate_retrieval", "evaluate_university", "metrics_from_ranks", "positive_ranks",
           "recall_curve", "top_k"]
