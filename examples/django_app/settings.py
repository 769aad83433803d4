"""The smallest settings that serve examples.django_app over ASGI (no database, no sessions)."""

SECRET_KEY = "guard-example-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "examples.django_app.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []  # no CsrfViewMiddleware: the example's views are an API
USE_TZ = True
