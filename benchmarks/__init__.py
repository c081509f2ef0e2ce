"""Benchmarks: conch against the peer lock libraries, one server at a time.

Run ``python -m benchmarks.run file`` (see ``benchmarks/README.md``). Not part
of the test suite: timings belong in recorded results, not in assertions.
"""
