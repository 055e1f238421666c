"""URLs of tests/support/policy_views.py."""

from django.urls import path

from . import policy_views as views

urlpatterns = [
    path("middleware/", views.middleware_order),
    path("decorator/", views.decorated_order),
    path("decorator-2xx/", views.decorated_order_2xx),
    path("rendered/", views.rendered_order),
    path("mixin/", views.MixinOrders.as_view()),
    path("mixin-2xx/", views.MixinOrders2xx.as_view()),
    path("required/", views.RequiredOrders.as_view()),
]
