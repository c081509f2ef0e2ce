"""The behavioural contract every backend must pass; a backend is done when it does.

Every test takes the ``url`` fixture (tests/conftest.py), so a server module in
tests/servers/ enrolls its backend in the whole suite. Run one backend with
``python -m pytest tests/contract -k <name>``.

What the suite reads from a backend, besides its behaviour:

* ``coordinator.capabilities``: ``fencing`` turns on the token-order checks,
  ``notify`` the tight hand-off bound, ``session_bound`` the short bound for a
  killed holder's locks (see :mod:`tests.contract.waiting`);
* for a backend without ``session_bound``, the URL option ``ttl`` (seconds): a
  killed holder's locks must be free within that plus a margin;
* the scheme ``memory``, whose locks live in one process: the killed-holder test
  is skipped and the safety workload runs on threads instead of processes.
"""
