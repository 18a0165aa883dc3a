"""Benchmarks: headwater alone (`registration.py`, `wordcount.py`, `reads.py`, `http_api.py`) and side by
side with the systems people would use instead (`suite.py`, run by `make bench`).

Run the comparison modules with `python -m bench.<name>` from the repository root.
"""
