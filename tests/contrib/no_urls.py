"""A URL configuration without celery-ws' token view."""

urlpatterns: list[object] = []
