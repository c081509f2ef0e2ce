"""Drop-in replacements for the coordination APIs OpenStack services use today.

- :mod:`conch.compat.tooz`: the lock part of tooz's public API (``get_coordinator``,
  ``get_lock``, ``tooz.locking.Lock``, tooz's exceptions), on every conch backend.
- :mod:`conch.compat.tacker`: Tacker's ``tacker/common/coordination.py`` (also the shape of
  Cinder's and Manila's copies): ``Coordinator``, ``COORDINATOR`` and ``synchronized``.
"""
