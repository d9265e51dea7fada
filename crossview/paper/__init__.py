"""The paper kit for MFRGN (Wang et al., ACM MM 2024): every row of Tables 1–5 and Fig. 7 as a runnable training
preset, the paper's printed numbers with the protocol of each row, ``crossview report`` (Markdown and CSV
tables of measured numbers beside the paper's) and the figures (t-SNE, Fig. 8; response maps, Fig. 9).

- :mod:`crossview.paper.tables`: ``PAPER_PRESETS`` (training configs), ``ROWS`` (paper numbers + protocol);
- :mod:`crossview.paper.report`: read run/eval folders, match them to rows, write the tables;
- :mod:`crossview.paper.figures`: t-SNE and response maps from a model and image tensors.
"""
