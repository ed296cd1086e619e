"""Settings of the CalipsoPlus stand-in project (see the role's README.md).

Secrets and host-specific values come from local_settings.py, which the role
templates; the database connection is read from the MySQL option file
config/database/default.cnf, as the CalipsoPlus guide sets it up.
"""
import os

from .local_settings import ALLOWED_HOSTS, CONFIG_DIR, QUOTAS, SECRET_KEY  # noqa: F401

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG = False
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "calipsoplus.urls"
WSGI_APPLICATION = "calipsoplus.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "OPTIONS": {"read_default_file": os.path.join(CONFIG_DIR, "default.cnf")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
