"""Benchmarks: headwater alone (`registration.py`, `wordcount.py`, `reads.py`, `http.py`) and side by
side with the systems people would use instead (`suite.py`, run by `make bench`).

Run the comparison modules with `python -m bench.<name>` from the repository root: run as a
script, this folder would come first on the import path and `bench/http.py` would shadow the
standard library's `http` package, which psycopg, redis and httpx import.
"""
