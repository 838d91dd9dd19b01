"""Multi-run paper tables: the QMDD ablation, the DeFakeQ comparison, the classical baselines. Each study calls
pipelines and the measuring floor (eval/) and writes JSON + Markdown tables (../shared/DESIGN.md §1)."""
