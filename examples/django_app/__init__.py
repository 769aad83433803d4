"""A minimal Django project served over ASGI, guarded by guard (see asgi.py)."""
