"""conch in processes under eventlet monkey-patching, as Cinder, Manila and Tacker run it."""
