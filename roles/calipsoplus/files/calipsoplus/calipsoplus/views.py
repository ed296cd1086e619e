"""The stand-in's one page: what the backend would answer about itself,
proving Django, its database and the Guacamole option file are wired up."""
import configparser
import os

from django.conf import settings
from django.contrib.auth.models import User
from django.http import JsonResponse


def status(request):
    guac = configparser.ConfigParser()
    guac.read(os.path.join(settings.CONFIG_DIR, "guacamole.cnf"))
    return JsonResponse({
        "service": "calipsoplus-backend",
        "stand_in": True,
        "users": User.objects.count(),
        "guacamole_database": guac.get("client", "database", fallback=None),
        "quotas": settings.QUOTAS,
    })
