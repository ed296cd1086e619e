from django.urls import path

from . import views

urlpatterns = [path("calipsoplus-services/", views.status)]
