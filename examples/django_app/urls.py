from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("upload", views.upload),
    path("raw", views.raw),
    path("json", views.json_image),
]
